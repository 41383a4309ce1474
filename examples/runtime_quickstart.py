#!/usr/bin/env python3
"""
Serve the shipped multi-exit model to three tenants with the ROS-free runtime.

Each tenant states its own goal; frames are real Fashion-MNIST test images with their labels.
Run from the repository root: ``python3 examples/runtime_quickstart.py`` (after
``source tools/env.sh``).
"""

import time

from delen_ros.engine import fashion_mnist
from delen_ros.runtime import Goal, InferenceServer


def main():
    """Serve 200 frames per tenant and print the last answers and the statistics."""
    images, labels = fashion_mnist.load('test')
    with InferenceServer.from_checkpoint() as server:
        # Obstacle detection: answer within 8 ms of the frame's stamp, best accuracy within.
        server.add_tenant('obstacle', goal=Goal.latency(8.0), queue_size=2)
        # Inspection: 92 % accuracy on average, as cheaply as possible.
        server.add_tenant('inspect', goal=Goal.accuracy(0.92))
        # Logging on battery: at most 20 mJ per frame, every exit's answer as it comes.
        server.add_tenant('logger', goal='energy:20', policy='budget', progressive=True,
                          on_result=lambda r: r.is_final or print(
                              f'  logger early answer: {r.label} at exit {r.exit_index}'))
        for index in range(200):
            stamp = time.time()  # a camera driver would pass the image's header stamp
            for tenant in ('obstacle', 'inspect', 'logger'):
                server.submit(tenant, images[index], stamp_s=stamp, frame_id=f'{index}',
                              label=int(labels[index]))
            server.wait_idle(timeout=10.0)
            if index == 100:  # goals change at run time, effective from the next frame
                server.set_goal('obstacle', Goal.latency(4.0))
        for result in server.results()[-3:]:
            print(f'{result.tenant}: {result.label} (conf {result.confidence:.2f}) at exit '
                  f'{result.exit_index}/{result.num_exits - 1}, {result.latency_ms:.2f} ms, '
                  f'{result.energy_mj:.1f} mJ ({result.energy_source}), goal {result.goal}')
    for name, stats in server.stats().items():
        print(f'{name}: served {stats.served}/{stats.received}, dropped {stats.dropped}, '
              f'mean exit {stats.mean_exit:.2f}, p99 {stats.latency_p99_ms:.2f} ms, '
              f'deadline met {100 * stats.deadline_met_ratio:.0f} %, '
              f'{stats.energy_mean_mj:.1f} mJ/frame, accuracy {100 * stats.accuracy:.1f} %')


if __name__ == '__main__':
    main()
