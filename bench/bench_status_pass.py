#!/usr/bin/env python3
"""
How long the server's status reports hold the GIL: one at a time, or all at once.

A report made on another thread than the serving worker takes the GIL from a frame, so the
longest report call is how long a frame could wait behind it. Runs the installed
``ServerNode`` in this process with ``--tenants`` tenants (no frames: every report still has
all its fields) and makes its reports directly: one at a time, spread over ``--period`` s as
the worker's idle moments make them, and every report back to back once a period, as the
executor's single pass did before.

    python bench/bench_status_pass.py --tenants 1 8 13 --periods 10
"""

import argparse
import statistics
import time

from delen_ros.nodes.server_node import ServerNode
import rclpy
from rclpy.parameter import Parameter


def measure(tenants: int, periods: int, period_s: float) -> dict:
    """Time ``periods`` periods of status callbacks with ``tenants`` tenants (ms)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    names = [f't{index}' for index in range(tenants)]
    overrides = [Parameter('tenants', value=names), Parameter('status_period_s', value=10.0)]
    overrides += [Parameter(f'{name}.latency_ms', value=50.0) for name in names]
    node = ServerNode(context=context, parameter_overrides=overrides)
    node.core.runtime.set_idle_task(None)  # this bench makes the reports itself
    ticks = tenants + 1
    one_at_a_time, at_once = [], []

    def callback():
        with node.core._report_lock:
            node.core._report_step()

    try:
        for _ in range(ticks):  # warm-up period
            callback()
        for _ in range(periods):
            for _ in range(ticks):
                time.sleep(period_s / ticks)
                start = time.perf_counter()
                callback()
                one_at_a_time.append((time.perf_counter() - start) * 1e3)
            time.sleep(period_s)
            start = time.perf_counter()
            for _ in range(ticks):
                callback()
            at_once.append((time.perf_counter() - start) * 1e3)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return {'tenants': tenants, 'ticks': ticks, 'tick_p50': statistics.median(one_at_a_time),
            'tick_max': max(one_at_a_time), 'pass_p50': statistics.median(at_once),
            'pass_max': max(at_once)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--tenants', type=int, nargs='+', default=[1, 8, 13])
    parser.add_argument('--periods', type=int, default=10)
    parser.add_argument('--period', type=float, default=1.0, help='status period (s)')
    args = parser.parse_args()
    print('| tenants | reports a period | one at a time: p50 ms | one at a time: longest ms '
          '| all at once: p50 ms | all at once: longest ms |')
    print('|---|---|---|---|---|---|')
    for tenants in args.tenants:
        row = measure(tenants, args.periods, args.period)
        print(f"| {row['tenants']} | {row['ticks']} | {row['tick_p50']:.2f} | "
              f"{row['tick_max']:.2f} | {row['pass_p50']:.2f} | {row['pass_max']:.2f} |")


if __name__ == '__main__':
    main()
