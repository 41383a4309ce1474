#!/usr/bin/env python3
"""
Benchmark: the network's time per intra-op thread count, calm and beside CPU-bound processes.

Why the server offers a plan only the cores nobody else wants (delen_ros/runtime/run_queue.py):
a job with more threads than free cores waits at every operator's barrier for a thread the OS
gave to another process. Each run times ``forward_final`` of the shipped model on one frame,
a camera-like gap between frames, first calm, then beside one CPU-bound process per core; the
run queue's count of other runnable tasks is read before each frame, as a plan reads it.

Usage: bench/bench_threads_under_load.py [--frames N] [--gap-ms MS] [--threads T ...]
"""

import argparse
import os
import statistics
import sys
import time

from delen_ros.engine import fashion_mnist, load_checkpoint
from delen_ros.evaluation.load import CpuLoad
from delen_ros.imaging import ModelInputTransform
from delen_ros.runtime.run_queue import RunQueue
import torch


def time_frames(network, frames, threads, gap_s, run_queue):
    """Milliseconds per forward pass, and the other runnable tasks seen before each."""
    torch.set_num_threads(threads)
    times, others = [], []
    with torch.inference_mode():
        for frame in frames:
            others.append(run_queue.others(0))
            started = time.perf_counter()
            network.forward_final(frame)
            times.append((time.perf_counter() - started) * 1e3)
            time.sleep(gap_s)
    return sorted(times), others


def row(phase, threads, times, others):
    p = statistics.quantiles(times, n=100, method='inclusive')
    return (f'| {phase} | {threads} | {statistics.median(times):.1f} | {p[89]:.1f} | '
            f'{p[98]:.1f} | {times[-1]:.1f} | {min(others)}-{max(others)} |')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200, help='frames per thread count')
    parser.add_argument('--gap-ms', type=float, default=10.0, help='sleep between frames')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    args = parser.parse_args(argv)
    loaded = load_checkpoint()
    network = loaded.network.eval()
    images, _ = fashion_mnist.load('test')
    transform = ModelInputTransform.from_spec(loaded.config.input_spec)
    frames = [transform(images[i % len(images)], 'mono8') for i in range(args.frames)]
    run_queue = RunQueue()
    cores = len(os.sched_getaffinity(0))
    print(f'# {args.frames} frames per thread count, {args.gap_ms:g} ms apart, {cores} cores; '
          f'contention: {cores} CPU-bound processes\n')
    print('| phase | threads | p50 ms | p90 ms | p99 ms | max ms | other runnable tasks |')
    print('|---|---|---|---|---|---|---|')
    for threads in args.threads:
        print(row('calm', threads, *time_frames(network, frames, threads, args.gap_ms / 1e3,
                                                run_queue)), flush=True)
    with CpuLoad(workers=cores, max_seconds=600.0):
        if not run_queue.wait_for_others(cores):
            print('the CPU-bound processes never showed as runnable', file=sys.stderr)
        for threads in args.threads:
            print(row('contention', threads, *time_frames(network, frames, threads,
                                                          args.gap_ms / 1e3, run_queue)),
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
