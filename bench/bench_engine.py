#!/usr/bin/env python3
"""
Benchmark: cost of stage-resumable execution vs one plain forward pass, and per-exit latency.

Runs are interleaved (plain, resumable, plain, ...) so drift hits both sides alike.
Usage: bench/bench_engine.py [--runs N] [--threads T ...]
"""

import argparse
import statistics
import time

from delen_ros.engine import from_torchvision, load_checkpoint
from delen_ros.engine.profiling import format_profile_table, load_profile
import torch
from torchvision import models


def _median_ms(samples):
    return 1e3 * statistics.median(samples)


def compare(network, x, runs):
    """Median ms of the plain forward, the resumable path, and the resumable path with heads."""
    def plain():
        return network.forward_final(x)

    def resumable():
        state = network.begin(x)
        while not state.done:
            logits = network.step(state, evaluate_head=False)
        return logits

    def every_exit():
        state = network.begin(x)
        while not state.done:
            logits = network.step(state)
        return logits

    samples = {plain: [], resumable: [], every_exit: []}
    with torch.inference_mode():
        for run in range(runs + 20):
            for fn, values in samples.items():
                start = time.perf_counter()
                fn()
                if run >= 20:
                    values.append(time.perf_counter() - start)
    return [_median_ms(samples[fn]) for fn in (plain, resumable, every_exit)]


def main():
    """Print the overhead table and the shipped model's per-exit profile."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--runs', type=int, default=1000)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    args = parser.parse_args()
    shipped = load_checkpoint().network
    resnet18 = from_torchvision(models.resnet18(weights=None), num_classes=1000).eval()
    cases = [('shipped fmnist compact_resnet 1x28x28', shipped, torch.randn(1, 1, 28, 28),
              args.runs),
             ('torchvision resnet18 3x224x224', resnet18, torch.randn(1, 3, 224, 224),
              max(args.runs // 10, 50))]
    print('| network | threads | plain ms | resumable ms | ratio | with every exit head ms |')
    print('|---|---|---|---|---|---|')
    for name, network, x, runs in cases:
        for threads in args.threads:
            torch.set_num_threads(threads)
            plain, resumable, every_exit = compare(network, x, runs)
            print(f'| {name} | {threads} | {plain:.3f} | {resumable:.3f} | '
                  f'{resumable / plain:.3f} | {every_exit:.3f} |')
    print()
    print('Shipped model profile (models/*.profile.json, written by delen_profile):')
    print(format_profile_table(load_profile()))


if __name__ == '__main__':
    main()
