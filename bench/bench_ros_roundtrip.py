#!/usr/bin/env python3
"""
Benchmark the serving path over ROS 2 against the bare rclpy floor.

Both sides are real processes over Fast DDS on loopback, driven ping-pong from this process
(publish a Fashion-MNIST frame, wait for the answer, pause, repeat), with the sensor-data QoS
the camera node uses:

1. floor: a do-nothing echo node in its own process (Image in, the same Image out), as in
   ../shared/MEASURED.md;
2. serving: the installed `server` executable, one tenant, once per executor (--executors)
   and policy (--policies). Per frame: the round trip seen here, the server's own compute_ms
   (the network alone), and their difference, the overhead the serving path adds around the model
   (subscription, decode, queue, scheduling, result message, two DDS hops).

Each answering process gets --warmup-s seconds of unmeasured ping-pong after its first answer.

Usage: bench/bench_ros_roundtrip.py [--frames N] [--gap-ms G] [--warmup-s S]
       [--executors single multi] [--policies static:exit_index=0 ...]
Run it where rclpy is importable: `source tools/env.sh` first.
"""

import argparse
import itertools
import math
import os
from pathlib import Path
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from ament_index_python.packages import get_package_prefix
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult
import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

ECHO_IN = '/bench/echo_in'
ECHO_OUT = '/bench/echo_out'
TENANT = 'bench'
TENANT_TOPIC = '/bench/image'
START_TIMEOUT_S = 60.0


def sensor_qos(deadline_ms=1000.0):
    """Return the QoS the camera node offers: best effort, keep last 2, a deadline (or none)."""
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                     reliability=ReliabilityPolicy.BEST_EFFORT)
    if deadline_ms:
        qos.deadline = Duration(nanoseconds=int(deadline_ms * 1e6))
    return qos


def run_echo():
    """Run the floor: republish every image as it is."""
    rclpy.init()
    node = rclpy.create_node('bench_echo')
    publisher = node.create_publisher(Image, ECHO_OUT, sensor_qos())
    node.create_subscription(Image, ECHO_IN, publisher.publish, sensor_qos())
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


class PingPong:
    """Publishes one frame at a time and times its answer."""

    def __init__(self, node, image_topic, answer_type, answer_topic, answer_qos):
        self.node = node
        self.publisher = node.create_publisher(Image, image_topic, sensor_qos())
        self.subscription = node.create_subscription(answer_type, answer_topic,
                                                     self._answer_callback, answer_qos)
        self.answered = threading.Event()
        self.answer = None
        self.expected = ''

    def _answer_callback(self, msg):
        if msg.header.frame_id == self.expected and not self.answered.is_set():
            self.answer = msg
            self.answered.set()

    def close(self):
        self.node.destroy_publisher(self.publisher)
        self.node.destroy_subscription(self.subscription)

    def round_trip(self, frame, index, timeout):
        """Seconds from publish to answer, and the answer; (None, None) when none came."""
        msg = Image()
        self.expected = f'bench_{index}'
        fill_image(msg, frame, encoding='mono8', frame_id=self.expected,
                   stamp=self.node.get_clock().now().to_msg())
        self.answered.clear()
        start = time.perf_counter()
        self.publisher.publish(msg)
        if not self.answered.wait(timeout):
            return None, None
        return time.perf_counter() - start, self.answer


def warm_up(ping, frames, seconds, deadline_s):
    """
    Publish until the other side answers, then keep going for ``seconds``.

    With rclpy 9.1's MultiThreadedExecutor answers come late (hundreds of ms) for the first
    ~13 s after start-up: measure the steady state (docs/serving_path.md).
    """
    end = time.monotonic() + deadline_s
    index = 0
    while time.monotonic() < end:
        elapsed, _ = ping.round_trip(frames[index % len(frames)], -1 - index, timeout=0.5)
        index += 1
        if elapsed is not None:
            break
    else:
        return False
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ping.round_trip(frames[index % len(frames)], -1 - index, timeout=0.5)
        index += 1
    return True


def measure(ping, frames, count, gap_s):
    """Ping-pong count frames; lists of round trips (ms) and answers; lost frames."""
    trips, answers, lost = [], [], 0
    for index in range(count):
        elapsed, answer = ping.round_trip(frames[index % len(frames)], index, timeout=2.0)
        if elapsed is None:
            lost += 1
        else:
            trips.append(elapsed * 1e3)
            answers.append(answer)
        time.sleep(gap_s)
    return trips, answers, lost


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def row(name, values):
    if not values:
        return f'| {name} | no answer | | |'
    return (f'| {name} | {statistics.median(values):.2f} | {percentile(values, 99):.2f} | '
            f'{min(values):.2f} |')


def start_process(command, log):
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_process(process):
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_executable():
    return Path(get_package_prefix('delen_ros'), 'lib', 'delen_ros', 'server')


def measure_against(ping, command, log_path, frames, args):
    """Start the answering process, wait for its first answer, measure, stop it."""
    with open(log_path, 'w') as log:
        process = start_process(command, log)
        try:
            if not warm_up(ping, frames, args.warmup_s, START_TIMEOUT_S):
                raise SystemExit(f'{command[0]} never answered; log: {log_path}')
            return measure(ping, frames, args.frames, args.gap_ms / 1e3)
        finally:
            stop_process(process)
            ping.close()


def bench_floor(node, frames, args, folder):
    ping = PingPong(node, ECHO_IN, Image, ECHO_OUT, sensor_qos())
    return measure_against(ping, [sys.executable, __file__, '--echo'], folder / 'echo.log',
                           frames, args)


def bench_server(node, frames, args, log_path, policy, executor):
    params = log_path.with_suffix('.yaml')
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [{TENANT}]
    threads: {args.threads}
    {TENANT}.input_topic: {TENANT_TOPIC}
    {TENANT}.latency_ms: 1000.0
    {TENANT}.policy: '{policy}'
    {TENANT}.queue_size: 1
""")
    ping = PingPong(node, TENANT_TOPIC, InferenceResult, f'/delen/{TENANT}/result', 10)
    command = [str(server_executable()), '--executor', executor,
               '--ros-args', '--params-file', str(params)]
    return measure_against(ping, command, log_path, frames, args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=1000, help='frames measured per row')
    parser.add_argument('--warmup-s', type=float, default=10.0,
                        help='seconds of ping-pong after the first answer, not measured')
    parser.add_argument('--gap-ms', type=float, default=5.0, help='pause between frames')
    parser.add_argument('--threads', type=int, default=1, help='server intra-op threads')
    parser.add_argument('--policies', nargs='+',
                        default=['static:exit_index=0', 'static:exit_index=3', 'budget'])
    parser.add_argument('--executors', nargs='+', default=['single', 'multi'],
                        choices=['single', 'multi'], help="the server's --executor values")
    parser.add_argument('--echo', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        return run_echo()

    frames, _ = fashion_mnist.load('test')
    frames = frames[:256]
    rclpy.init()
    node = rclpy.create_node('bench_ros_roundtrip')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(f'# ROS 2 round trip, {platform.node()}, {os.cpu_count()} CPUs, '
          f'{time.strftime("%Y-%m-%d %H:%M")}, load {os.getloadavg()[0]:.2f}')
    print(f'28x28 mono8 frames, ping-pong, {args.frames} frames per row after '
          f'{args.warmup_s:g} s of warm-up, {args.gap_ms:g} ms between frames, '
          f'server threads {args.threads}\n')
    print('| path | median ms | p99 ms | min ms |')
    print('| --- | --- | --- | --- |')
    with tempfile.TemporaryDirectory(prefix='bench_ros_') as folder:
        folder = Path(folder)
        trips, _, lost = bench_floor(node, frames, args, folder)
        print(row('bare echo round trip (floor)', trips) + (f' lost {lost}' if lost else ''))
        floor = statistics.median(trips) if trips else math.nan
        configurations = itertools.product(args.executors, args.policies)
        for number, (kind, policy) in enumerate(configurations):
            log_path = folder / f'server_{number}.log'
            trips, answers, lost = bench_server(node, frames, args, log_path, policy, kind)
            compute = [a.compute_ms for a in answers]
            overhead = [t - c for t, c in zip(trips, compute)]
            exits = statistics.mean(a.exit_index for a in answers) if answers else math.nan
            note = f' lost {lost}' if lost else ''
            label = f'server, {kind} executor, `{policy}`'
            print(row(f'{label}: round trip (mean exit {exits:.2f})', trips) + note)
            print(row(f'{label}: compute_ms', compute))
            print(row(f'{label}: round trip - compute', overhead))
            if overhead:
                print(f'| overhead vs floor, median | '
                      f'{statistics.median(overhead) - floor:+.2f} | | |')
    executor.shutdown(timeout_sec=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
