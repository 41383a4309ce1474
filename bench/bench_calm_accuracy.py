#!/usr/bin/env python3
"""
Accuracy of the default policy's answers in calm, on more frames than a side-by-side phase.

The side-by-side bench answers 300 frames per phase (50 and 25 for the 10 Hz and 5 Hz
streams), so its accuracy cells move by a point or more from run to run. This bench submits
the first --frames Fashion-MNIST test frames one at a time (each waits for its answer, then
--gap-ms) to an InferenceServer tenant per bound, with the default policy, and compares the
accuracy of the answers with the final exit's on the same frames.

Usage: bench/bench_calm_accuracy.py [--frames 3000] [--bounds-ms 33 100 200] [--gap-ms 2]
"""

import argparse
import collections
import threading
import time

from delen_ros.engine import (exit_accuracy, exit_logits, fashion_mnist, load_checkpoint,
                              normalize_images)
from delen_ros.engine.profiling import load_profile
from delen_ros.runtime import InferenceServer
import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=3000)
    parser.add_argument('--bounds-ms', type=float, nargs='+', default=[33.0, 100.0, 200.0])
    parser.add_argument('--gap-ms', type=float, default=2.0)
    args = parser.parse_args(argv)
    images, labels = fashion_mnist.load('test')
    images, labels = images[:args.frames], labels[:args.frames]
    model = load_checkpoint()
    server = InferenceServer(model, load_profile(), threads=1)
    final_accuracy = exit_accuracy(
        exit_logits(model.network, normalize_images(images, server.spec)), labels)[-1]
    answered = threading.Event()
    answers = {}

    def on_result(result):
        answers[result.token] = result
        answered.set()

    tenants = {f'latency_{bound:g}ms': bound for bound in args.bounds_ms}
    for tenant, bound in tenants.items():
        server.add_tenant(tenant, goal=f'latency:{bound:g}', on_result=on_result)
    server.start()
    print(f'# Calm accuracy of the default policy, first {args.frames} test frames, '
          f'{time.strftime("%Y-%m-%d %H:%M", time.gmtime())} UTC\n')
    print(f'Final exit on these frames: {100 * final_accuracy:.2f} %\n')
    print('| tenant | answered | accuracy % | answers per exit (0, 1, 2, ...) |')
    print('|---|---|---|---|')
    try:
        for tenant in tenants:
            answers.clear()
            for index, image in enumerate(images):
                answered.clear()
                server.submit(tenant, image, encoding='mono8', label=int(labels[index]),
                              token=index)
                answered.wait(5.0)
                time.sleep(args.gap_ms * 1e-3)
            right = [answers[i].class_id == labels[i] for i in answers]
            exits = collections.Counter(answer.exit_index for answer in answers.values())
            spread = ', '.join(str(exits[i]) for i in range(max(exits) + 1)) if exits else ''
            print(f'| {tenant} | {len(answers)} | {100 * np.mean(right):.2f} | {spread} |')
    finally:
        server.stop(timeout=30)


if __name__ == '__main__':
    main()
