#!/usr/bin/env python3
"""
The network as served against the network as trained: batch norms folded, then channels-last.

Runs each exit of the shipped model (stages up to it, then its head) with the trained
network, the folded one and the served one (folded, weights channels-last:
``serving_network``), interleaved so that drift of a shared machine falls on all alike: back
to back, and after a camera's idle gap (caches gone cold), at batch 1 and 8, one thread. Also
checks that the served logits match on the Fashion-MNIST test set (largest difference,
arg-max agreement).

    source tools/env.sh
    python bench/bench_folding.py
"""

import argparse
import datetime
import os
import statistics
import time

from delen_ros.engine import (exit_logits, fashion_mnist, fold_batch_norms, load_checkpoint,
                              normalize_images, serving_network)
import torch


def _time(network, exit_index, x):
    start = time.perf_counter()
    network.run_to(network.begin(x), exit_index)
    return (time.perf_counter() - start) * 1e6


def measure(networks, x, gap_s, rounds):
    """Median µs per (exit, name) of each named network, the order turning every round."""
    samples = {}
    named = list(networks.items())
    last = named[0][1].num_exits - 1
    for _ in range(20):
        for _, network in named:
            _time(network, last, x)
    for round_index in range(rounds):
        shift = round_index % len(named)
        order = named[shift:] + named[:shift]
        for exit_index in range(last + 1):
            for name, network in order:
                if gap_s:
                    time.sleep(gap_s)
                samples.setdefault((exit_index, name), []).append(_time(network, exit_index, x))
    return {key: statistics.median(values) for key, values in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=400, help='rounds back to back')
    parser.add_argument('--gap-ms', type=float, default=33.0)
    parser.add_argument('--gap-rounds', type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_checkpoint()
    plain = model.network
    folded, pairs = fold_batch_norms(plain)
    served, _ = serving_network(plain)
    images, labels = fashion_mnist.load('test')
    inputs = normalize_images(images, model.config.input_spec)
    plain_logits, served_logits = exit_logits(plain, inputs), exit_logits(served, inputs)
    print(f'# The network as served, {os.cpu_count()} CPUs, '
          f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average '
          f'{os.getloadavg()[0]:.2f}; {pairs} conv-norm pairs folded, weights channels-last')
    for index, (a, b) in enumerate(zip(plain_logits, served_logits)):
        agree = float((a.argmax(1) == b.argmax(1)).float().mean())
        print(f'exit {index}: largest logit difference {float((a - b).abs().max()):.2e}, '
              f'same class on {100 * agree:.2f} % of {len(labels)} test images')
    print('\nmicroseconds, p50, trained / folded / served (folded and channels-last); the '
          'change of each against the one before:\n')
    runs = [('batch 1, back to back', 1, 0.0, args.rounds),
            (f'batch 1, after {args.gap_ms:g} ms idle', 1, args.gap_ms / 1e3, args.gap_rounds),
            ('batch 8, back to back', 8, 0.0, max(1, args.rounds // 4))]
    header = '| run | ' + ' | '.join(f'exit {k}' for k in range(plain.num_exits)) + ' |'
    print(header)
    print('|---' * (plain.num_exits + 1) + '|')
    networks = {'trained': plain, 'folded': folded, 'served': served}
    with torch.inference_mode():
        for label, batch, gap_s, rounds in runs:
            medians = measure(networks, inputs[:batch], gap_s, rounds)
            cells = []
            for k in range(plain.num_exits):
                a, b, c = (medians[(k, name)] for name in networks)
                cells.append(f'{a:.0f} / {b:.0f} / {c:.0f} ({100 * (b / a - 1):+.0f} %, '
                             f'{100 * (c / b - 1):+.0f} %)')
            print(f'| {label} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
