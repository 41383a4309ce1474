#!/usr/bin/env python3
"""
The serving path's per-frame work, back to back and after the idle gap of a camera stream.

A server at camera rate sleeps between frames; while it sleeps, whatever else runs on the
machine (other processes, the hypervisor's other guests) takes the caches, so the next frame's
code and data come from memory again. This bench runs the per-frame steps of the serving path
outside the middleware, in this process, on the shipped model and a Fashion-MNIST frame:

- decode: ``decode_image`` of a sensor_msgs/Image (28x28 mono8);
- to_input: ``InferenceServer.to_input`` (model input transform, tensor);
- exit 0: stage 0 and head 0 of the network, batch 1, one thread;
- publish: an InferenceResult on a real rclpy publisher (serialization and the DDS write).

Each round sleeps ``gap`` first (0: back to back), then times every step. Per gap it prints
the p50 and p90 of each step and of their sum, in microseconds, as a markdown table.

Usage: bench/bench_cold_path.py [--frames 200] [--gaps-ms 0 1 5 33]
Run it where rclpy is importable: `source tools/env.sh` (or `./delen shell`) first.
"""

import argparse
import os
import platform
import time

from delen_ros.engine import fashion_mnist, load_checkpoint
from delen_ros.engine.profiling import load_profile
from delen_ros.imaging import decode_image, fill_image
from delen_ros.msg import InferenceResult
from delen_ros.runtime import InferenceServer
import numpy as np
import rclpy
from sensor_msgs.msg import Image
import torch

STEPS = ('decode', 'to_input', 'exit 0', 'publish')


def time_rounds(server, messages, publisher, *, frames, gap_s):
    """Per step, the microseconds of each round (each round after sleeping ``gap_s``)."""
    network = server.executor.network
    result = InferenceResult(tenant='bench', label='x', goal='latency', policy='bench')
    times = {step: [] for step in STEPS + ('sum',)}
    for index in range(frames):
        if gap_s > 0:
            time.sleep(gap_s)
        msg = messages[index % len(messages)]
        marks = [time.perf_counter()]
        decoded = decode_image(msg)
        marks.append(time.perf_counter())
        x = server.to_input(decoded.pixels, decoded.encoding)
        marks.append(time.perf_counter())
        with torch.inference_mode():
            logits = network.heads[0](network.stages[0](x))
        marks.append(time.perf_counter())
        result.header = msg.header
        result.class_id = int(logits.argmax())
        publisher.publish(result)
        marks.append(time.perf_counter())
        for step, start, end in zip(STEPS, marks, marks[1:]):
            times[step].append((end - start) * 1e6)
        times['sum'].append((marks[-1] - marks[0]) * 1e6)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200, help='rounds per gap')
    parser.add_argument('--gaps-ms', type=float, nargs='+', default=[0.0, 1.0, 5.0, 33.0])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    server = InferenceServer(load_checkpoint(), load_profile(), threads=1)
    images, _ = fashion_mnist.load('test')
    messages = []
    for index in range(64):
        msg = Image()
        fill_image(msg, images[index], encoding='mono8', frame_id=f'frame{index}')
        msg.header.stamp.sec = index
        messages.append(msg)
    rclpy.init()
    node = rclpy.create_node('bench_cold_path')
    publisher = node.create_publisher(InferenceResult, 'bench_cold_path/result', 10)
    try:
        time_rounds(server, messages, publisher, frames=50, gap_s=0.0)  # load everything once
        print(f'# Serving-path steps after an idle gap, {platform.node()}, '
              f'{os.cpu_count()} CPUs, {time.strftime("%Y-%m-%d %H:%M", time.gmtime())} UTC, '
              f'load average {os.getloadavg()[0]:.2f}')
        print(f'{args.frames} rounds per gap; microseconds, p50 / p90\n')
        print('| gap before the frame | ' + ' | '.join(STEPS) + ' | all four |')
        print('|---' * (len(STEPS) + 2) + '|')
        for gap_ms in args.gaps_ms:
            times = time_rounds(server, messages, publisher, frames=args.frames,
                                gap_s=gap_ms * 1e-3)
            cells = [f'{np.percentile(times[step], 50):.0f} / '
                     f'{np.percentile(times[step], 90):.0f}' for step in STEPS + ('sum',)]
            label = 'none (back to back)' if gap_ms == 0 else f'{gap_ms:g} ms'
            print(f'| {label} | ' + ' | '.join(cells) + ' |')
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == '__main__':
    main()
