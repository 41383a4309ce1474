#!/usr/bin/env python3
"""
What a fresh server's first frames pay without a warm-up, and what the warm-up costs (no ROS).

Every measurement runs in a new process, so that "first" is the process's first call:

- kernels: the shipped model's whole network (every stage and head) at each batch size and
  thread count, its first call against its second, without a warm-up and after
  ``ServedModel.warm_up``;
- serving: eight tenants (the ``budget`` policy, 50 ms) get a frame each at once (triggered
  cameras), at 30 Hz, from the moment the server has started; the first ``--bursts`` bursts,
  with the server's ``warm_up`` on and off, alternated.

    python bench/bench_warm_up.py --pairs 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from delen_ros.engine import fashion_mnist
from delen_ros.runtime import apply_threads, available_cores, Goal, InferenceServer
import numpy as np
import torch

TENANTS = 8
BOUND_MS = 50.0
PERIOD_S = 1 / 30


def kernels(warm: bool, max_batch: int) -> dict:
    """Time the whole network's first and second call per thread count and batch size."""
    server = InferenceServer.from_checkpoint(max_batch=max_batch, warm_up=False)
    served = server.served_model()
    network, spec = served.model.network, served.spec
    counts = sorted({t for t in served.cost.thread_counts if t <= available_cores()})
    warm_ms = None
    if warm:
        started = time.perf_counter()
        served.warm_up(batch_sizes=range(1, max_batch + 1), thread_counts=counts)
        warm_ms = (time.perf_counter() - started) * 1e3
    rows = []
    with torch.inference_mode():
        for threads in counts:
            apply_threads(threads)
            for size in range(1, max_batch + 1):
                x = torch.rand(size, spec.channels, spec.height, spec.width)
                times = []
                for _ in range(2):
                    started = time.perf_counter()
                    network(x)
                    times.append((time.perf_counter() - started) * 1e3)
                rows.append((threads, size, *times))
    return {'warm_ms': warm_ms, 'rows': rows}


def serving(warm: bool, bursts: int) -> dict:
    """Stream triggered bursts into a fresh server from its start; time the answers."""
    images, _ = fashion_mnist.load('test')
    answers = []
    server = InferenceServer.from_checkpoint(on_result=answers.append, warm_up=warm,
                                             workers=min(2, available_cores()))
    names = [f't{number}' for number in range(TENANTS)]
    for name in names:
        server.add_tenant(name, goal=Goal.latency(BOUND_MS), policy='budget')
    started = time.perf_counter()
    server.start()
    start_ms = (time.perf_counter() - started) * 1e3
    due = time.perf_counter()
    for burst in range(bursts):
        for number, name in enumerate(names):
            server.submit(name, images[(burst * TENANTS + number) % len(images)])
        due += PERIOD_S
        time.sleep(max(0.0, due - time.perf_counter()))
    server.wait_idle(5.0)
    server.stop(timeout=5.0)
    return {'start_ms': start_ms, 'sent': bursts * TENANTS, 'batches': server.batches,
            'compute_ms': [a.compute_ms for a in answers],
            'latency_ms': [a.latency_ms for a in answers],
            'met': sum(a.deadline_met for a in answers),
            'exits': [a.exit_index for a in answers]}


def child(args) -> None:
    result = (kernels(args.warm, args.max_batch) if args.part == 'kernels'
              else serving(args.warm, args.bursts))
    print(json.dumps(result))


def run_child(part: str, warm: bool, args) -> dict:
    command = [sys.executable, __file__, '--child', part, '--bursts', str(args.bursts),
               '--max-batch', str(args.max_batch)] + (['--warm'] if warm else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pairs', type=int, default=3, help='alternated runs of each')
    parser.add_argument('--bursts', type=int, default=30, help='bursts served from the start')
    parser.add_argument('--max-batch', type=int, default=8)
    parser.add_argument('--child', choices=('kernels', 'serving'), help=argparse.SUPPRESS)
    parser.add_argument('--warm', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.part = args.child
        return child(args)
    load = os.getloadavg()[0]
    print(f'# Warm-up, {os.cpu_count()} CPUs, load average {load:.2f}, '
          f'{time.strftime("%Y-%m-%d %H:%M", time.gmtime())} UTC')
    print(f'command: {" ".join(sys.argv)}\n')
    cold, warm = run_child('kernels', False, args), run_child('kernels', True, args)
    print('The whole network (every stage and head), the first call of a fresh process at each '
          'thread count and batch size against the second, ms:\n')
    print('| threads | batch | first, no warm-up | second | first, after warm_up | second |')
    print('|---|---|---|---|---|---|')
    for (threads, size, first, second), (_, _, warm_first, warm_second) in zip(
            cold['rows'], warm['rows']):
        print(f'| {threads} | {size} | {first:.2f} | {second:.2f} | {warm_first:.2f} | '
              f'{warm_second:.2f} |')
    extra = [row[2] - row[3] for row in cold['rows']]
    print(f'\nFirst minus second without warm-up: {sum(extra):.1f} ms over the '
          f'{len(extra)} shapes; the warm-up took {warm["warm_ms"]:.0f} ms.\n')
    print(f'Eight tenants, a frame each at once at 30 Hz, 50 ms, `budget`, the first '
          f'{args.bursts} bursts from the start of a fresh server:\n')
    print('| warm_up | run | start ms | batches | in time % | compute p50 | compute max | '
          'latency p99 | latency max | mean exit |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for pair in range(args.pairs):
        for on in (False, True):
            r = run_child('serving', on, args)
            print(f'| {"on" if on else "off"} | {pair + 1} | {r["start_ms"]:.0f} | '
                  f'{r["batches"]} | {100 * r["met"] / r["sent"]:.1f} | '
                  f'{statistics.median(r["compute_ms"]):.2f} | {max(r["compute_ms"]):.2f} | '
                  f'{np.percentile(r["latency_ms"], 99):.2f} | {max(r["latency_ms"]):.2f} | '
                  f'{statistics.fmean(r["exits"]):.2f} |', flush=True)


if __name__ == '__main__':
    main()
