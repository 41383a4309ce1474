#!/usr/bin/env python3
"""
A slow accuracy tenant next to a 10 ms tenant, in one InferenceServer (no ROS).

Streams Fashion-MNIST frames at fixed rates from one thread into the runtime (stamps at
submission) and prints, per tenant: answers, within-deadline %, p50/p99 latency (including
the estimated delivery), mean exit; and the server's preemptions and batches. Run it alone,
then with the slow tenant, to see what the slow one costs the urgent one.

    python bench/bench_edf.py --seconds 5
    python bench/bench_edf.py --seconds 5 --no-slow
"""

import argparse
import time

from delen_ros.engine import fashion_mnist
from delen_ros.runtime import Goal, InferenceServer
import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--urgent-hz', type=float, default=50.0)
    parser.add_argument('--slow-hz', type=float, default=20.0)
    parser.add_argument('--no-slow', action='store_true')
    parser.add_argument('--max-batch', type=int, default=8)
    args = parser.parse_args(argv)
    images, labels = fashion_mnist.load('test')
    server = InferenceServer.from_checkpoint(threads=1, max_batch=args.max_batch)
    streams = [('urgent', Goal.latency(10.0), 'budget', args.urgent_hz)]
    if not args.no_slow:
        streams.append(('slow', Goal.accuracy(0.93), 'budget', args.slow_hz))
    for name, goal, policy, _ in streams:
        server.add_tenant(name, goal=goal, policy=policy)
    server.start()
    for number in range(50):  # warm up torch and the cost model
        server.submit('urgent', images[number])
        server.wait_idle(5.0)
    server.results()
    start = time.perf_counter()
    due = [start] * len(streams)
    count = 0
    while time.perf_counter() - start < args.seconds:
        number = min(range(len(due)), key=due.__getitem__)
        wait = due[number] - time.perf_counter()
        if wait > 0:
            time.sleep(min(wait, 0.001))
            continue
        name = streams[number][0]
        server.submit(name, images[count % 10000], label=int(labels[count % 10000]))
        count += 1
        due[number] += 1.0 / streams[number][3]
    server.wait_idle(10.0)
    answers = [r for r in server.results() if r.is_final]
    print('| tenant | answers | within deadline % | p50 ms | p99 ms | mean exit | accuracy % |')
    print('|---|---|---|---|---|---|---|')
    for name, goal, _, rate in streams:
        mine = [r for r in answers if r.tenant == name]
        latency = np.array([r.latency_ms for r in mine])
        stats = server.stats(name)
        print(f'| {name} ({rate:g} Hz, {goal}) | {len(mine)} of {stats.received} | '
              f'{100 * np.mean([r.deadline_met for r in mine]):.1f} | '
              f'{np.percentile(latency, 50):.2f} | {np.percentile(latency, 99):.2f} | '
              f'{np.mean([r.exit_index for r in mine]):.2f} | {100 * stats.accuracy:.1f} |')
    print(f'\npreemptions {server.preemptions}, batches {server.batches} '
          f'({server.batched_frames} frames)')
    server.stop()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
