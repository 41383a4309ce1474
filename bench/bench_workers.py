#!/usr/bin/env python3
"""
One serving thread against two: eight tenants streaming into one InferenceServer (no ROS).

Eight tenants, each at one rate with a 50 ms bound and the `budget` policy (deepest exit that
fits, batches of frames already waiting), stream Fashion-MNIST frames from one thread into
the runtime (stamps at submission). For each rate, calm and then under contention (one
busy-looping process per core), the server runs with `workers` 1 and 2, alternated, and the
bench prints one markdown row per run: frames sent, answered %, within-deadline %, mean exit,
accuracy, and the jobs the second worker ran. Without ROS the streams cost the machine little:
this measures the runtime's capacity, not the transport.

    python bench/bench_workers.py --rates 30 60 90 --seconds 8 --pairs 2
"""

import argparse
import os
import subprocess
import sys
import time

from delen_ros.engine import fashion_mnist
from delen_ros.runtime import Goal, InferenceServer

TENANTS = 8
BOUND_MS = 50.0


def run(images, labels, *, workers: int, rate_hz: float, seconds: float) -> dict:
    finals = []  # every answer is final: no tenant is progressive
    server = InferenceServer.from_checkpoint(workers=workers, on_result=finals.append)
    names = [f't{number}' for number in range(TENANTS)]
    for name in names:
        server.add_tenant(name, goal=Goal.latency(BOUND_MS), policy='budget')
    with server:
        for number in range(50):  # warm up torch and the cost model
            server.submit(names[0], images[number])
            server.wait_idle(5.0)
        finals.clear()
        start = time.perf_counter()
        sent = 0
        period = 1.0 / rate_hz
        while time.perf_counter() - start < seconds:
            wait = start + (sent // TENANTS) * period - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            for name in names:  # cameras triggered together
                index = sent % len(images)
                server.submit(name, images[index], label=int(labels[index]))
                sent += 1
        server.wait_idle(10.0)
    in_time = sum(result.deadline_met for result in finals)
    correct = sum(result.correct is True for result in finals)
    return {'sent': sent, 'answered': len(finals), 'in_time': in_time,
            'exit': sum(result.exit_index for result in finals) / max(1, len(finals)),
            'accuracy': correct / max(1, len(finals)), 'helper_jobs': server.helper_jobs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rates', type=float, nargs='+', default=[30.0, 60.0, 90.0],
                        help='frames a second of each of the eight tenants')
    parser.add_argument('--seconds', type=float, default=8.0, help='length of each run')
    parser.add_argument('--pairs', type=int, default=2, help='runs of each worker count')
    parser.add_argument('--phases', nargs='+', default=['calm', 'contention'])
    args = parser.parse_args(argv)
    images, labels = fashion_mnist.load('test')
    print(f'# {TENANTS} tenants, {BOUND_MS:g} ms bound, policy budget, {args.seconds:g} s runs, '
          f'{os.cpu_count()} CPUs, load before {os.getloadavg()[0]:.2f}, '
          f'{time.strftime("%Y-%m-%d %H:%M")}\n')
    print('| rate | phase | workers | sent | answered % | in time % | mean exit | accuracy % '
          "| second worker's jobs |")
    print('|---|---|---|---|---|---|---|---|---|')
    for phase in args.phases:
        hogs = []
        if phase == 'contention':
            hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
                    for _ in range(os.cpu_count() or 1)]
        try:
            for rate in args.rates:
                for _ in range(args.pairs):
                    for workers in (1, 2):
                        found = run(images, labels, workers=workers, rate_hz=rate,
                                    seconds=args.seconds)
                        sent = found['sent']
                        print(f'| {TENANTS} x {rate:g} Hz | {phase} | {workers} | {sent} | '
                              f'{100 * found["answered"] / sent:.1f} | '
                              f'{100 * found["in_time"] / sent:.1f} | {found["exit"]:.2f} | '
                              f'{100 * found["accuracy"]:.1f} | {found["helper_jobs"]} |',
                              flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()


if __name__ == '__main__':
    main()
