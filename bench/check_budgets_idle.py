#!/usr/bin/env python3
"""
Check that without battery or temperature the server's budgets stay its configuration.

Starts the installed ``bringup`` (server and governor; no cameras, no power trace) with a
parameter file (default: the installed config/three_tenants.yaml). Once every tenant reports,
for ``--duration`` seconds it checks every TenantStatus (effective bounds equal to the base
bounds, no adjustment reason), the governor's /diagnostics (no adjustment) and, once a second,
the tenants' budget parameters (the values of the file). Prints a summary line per tenant;
exit status 1 on any difference.

Usage: bench/check_budgets_idle.py [--duration 60] [--config FILE]
Run it where rclpy is importable (``source tools/env.sh``), in a ROS_DOMAIN_ID of your own.
"""

import argparse
import math
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from delen_ros.msg import TenantStatus
from delen_ros.nodes.config_file import node_sections
from delen_ros.nodes.parameters import tenant_defaults
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import GetParameters
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

BUDGETS = ('latency_ms', 'min_accuracy', 'energy_mj')
# TenantStatus fields: (effective, base).
BOUNDS = (('latency_bound_ms', 'base_latency_bound_ms'), ('min_accuracy', 'base_min_accuracy'),
          ('energy_bound_mj', 'base_energy_bound_mj'))
START_TIMEOUT_S = 120.0


class Watcher:
    """Reads TenantStatus and parameters, and counts what differs from the configuration."""

    def __init__(self, node, tenants, expected):
        self.node = node
        self.expected = expected
        self.lock = threading.Lock()
        self.statuses = dict.fromkeys(tenants, 0)
        self.reads = 0
        self.problems = []
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for tenant, topic in tenants.items():
            node.create_subscription(TenantStatus, topic, self._status_callback, reliable)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback, 10)
        self.client = node.create_client(GetParameters, '/delen_server/get_parameters')
        self.checking = False
        self.governor_reports = 0  # the governor runs, and says it adjusts nothing

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name != 'delen_governor' or not self.checking:
                continue
            values = {kv.key: kv.value for kv in status.values}
            with self.lock:
                self.governor_reports += 1
                if values.get('adjustment', 'no adjustment') != 'no adjustment':
                    self.problems.append(f'governor: {values["adjustment"]}')

    def _status_callback(self, msg):
        with self.lock:
            if msg.tenant not in self.statuses:
                return
            if not self.checking:  # starting up: only note that the tenant reports
                self.statuses[msg.tenant] = 1
                return
            self.statuses[msg.tenant] += 1
            for effective, base in BOUNDS:
                if not math.isclose(getattr(msg, effective), getattr(msg, base), rel_tol=1e-6):
                    self.problems.append(f'{msg.tenant}: {effective} {getattr(msg, effective)} '
                                         f'!= {base} {getattr(msg, base)}')
            if msg.adjustment_reason:
                self.problems.append(f'{msg.tenant}: adjusted: {msg.adjustment_reason}')

    def all_reported(self):
        with self.lock:
            return all(self.statuses.values())

    def read_parameters(self):
        names = sorted(self.expected)
        future = self.client.call_async(GetParameters.Request(names=names))
        deadline = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            self.problems.append('get_parameters did not answer in 10 s')
            return
        self.reads += 1
        for name, value in zip(names, future.result().values):
            if not math.isclose(value.double_value, self.expected[name], abs_tol=1e-9):
                self.problems.append(f'{name} is {value.double_value}, configured '
                                     f'{self.expected[name]}')


def configured(config):
    """Return {tenant: status topic} and {parameter: configured value} of the file."""
    server = node_sections(config)['delen_server']
    tenants, expected = {}, {}
    for tenant in server['tenants']:
        values = {**tenant_defaults(tenant),
                  **{key.partition('.')[2]: value for key, value in server.items()
                     if key.startswith(f'{tenant}.')}}
        tenants[tenant] = '/' + values['status_topic'].lstrip('/')
        expected.update({f'{tenant}.{field}': float(values[field]) for field in BUDGETS})
    return tenants, expected


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--duration', type=float, default=60.0, help='seconds to watch')
    parser.add_argument('--config', type=Path, default=Path(
        get_package_share_directory('delen_ros'), 'config', 'three_tenants.yaml'))
    args = parser.parse_args()
    tenants, expected = configured(args.config)
    bringup = Path(get_package_prefix('delen_ros'), 'lib', 'delen_ros', 'bringup')
    process = subprocess.Popen([str(bringup), '--config', str(args.config)])
    rclpy.init()
    node = rclpy.create_node('check_budgets_idle')
    watcher = Watcher(node, tenants, expected)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        started = time.monotonic()
        while not watcher.all_reported():
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                print(f'bringup did not start (exit code {process.poll()})', file=sys.stderr)
                return 1
            time.sleep(0.1)
        with watcher.lock:
            watcher.checking = True
            watcher.statuses = dict.fromkeys(tenants, 0)
        print(f'bringup up after {time.monotonic() - started:.1f} s; watching '
              f'{args.duration:g} s', flush=True)
        end = time.monotonic() + args.duration
        while time.monotonic() < end and process.poll() is None:
            watcher.read_parameters()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        # Join the spinning thread before exit: a daemon thread still inside rcl when the
        # interpreter finalizes aborts the process ('terminate called without an active
        # exception'), as it did once in CI on 2026-12-05.
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    for tenant, count in watcher.statuses.items():
        print(f'{tenant}: {count} TenantStatus checked')
    print(f'{watcher.reads} parameter reads of {len(expected)} budgets; '
          f'{watcher.governor_reports} governor diagnostics')
    problems = watcher.problems + [f'{t}: no TenantStatus' for t, n in watcher.statuses.items()
                                   if not n]
    if not watcher.governor_reports:
        problems.append('no diagnostics from delen_governor: is it running?')
    if code != 0:
        problems.append(f'bringup exited with {code}')
    for problem in problems[:20]:
        print(f'DIFFERENCE: {problem}')
    print('budgets equal the configuration' if not problems
          else f'{len(problems)} differences')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
