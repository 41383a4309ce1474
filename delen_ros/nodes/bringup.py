"""
Compose the serving stack in one process, for machines without ``ros2 launch``.

Starts the same nodes as launch/serve.launch.py from the same parameter file: the server and
the governor, plus, with ``--demo``, one camera per ``delen_camera_*`` section and the scripted
power trace. ``--demo`` runs for ``--duration`` seconds with a real CPU competitor (one busy
process per core) during the middle third (``--contention``), then prints a per-tenant table,
the same before, during and after the contention, and writes a plot of latency against bound
and of the exits and threads chosen.
"""

import argparse
import math
import os
from pathlib import Path
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

from ament_index_python.packages import get_package_share_directory
from delen_ros.engine import CheckpointError
from delen_ros.engine.profiling import ProfileError
from delen_ros.evaluation.load import CpuLoad
from delen_ros.msg import InferenceResult, TenantStatus
from delen_ros.nodes.camera_node import CameraNode
from delen_ros.nodes.config_file import CAMERA_PREFIX, node_sections
from delen_ros.nodes.dds_profile import use_default_profiles
from delen_ros.nodes.demo_report import (format_phase_table, format_table, Phase,
                                         plot_timeline, ResultPoint, StatusRow)
from delen_ros.nodes.governor_node import GovernorNode
from delen_ros.nodes.power_trace_node import PowerTraceNode
from delen_ros.nodes.server_node import ServerNode
from delen_ros.nodes.spin import add_executor_argument, make_executor
import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

__all__ = ['DemoRecorder', 'main']


def _share(*parts: str) -> Path:
    return Path(get_package_share_directory('delen_ros'), *parts)


class DemoRecorder(Node):
    """Subscribe to every tenant's results and status, as a robot application would."""

    def __init__(self, tenants: Dict[str, Dict[str, str]], **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_demo_recorder'), **kwargs)
        self._start_ns = self.get_clock().now().nanoseconds
        self.lock = threading.Lock()
        self.points: Dict[str, List[ResultPoint]] = {name: [] for name in tenants}
        self.status: Dict[str, TenantStatus] = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for name, topics in tenants.items():
            self.create_subscription(InferenceResult, topics['output_topic'],
                                     self._result_callback, reliable)
            self.create_subscription(TenantStatus, topics['status_topic'],
                                     self._status_callback, reliable)

    def restart_clock(self) -> None:
        """Count result times from now (the demo's phases start now)."""
        self._start_ns = self.get_clock().now().nanoseconds

    def _result_callback(self, msg: InferenceResult) -> None:
        if not msg.is_final or msg.tenant not in self.points:
            return
        t_s = (self.get_clock().now().nanoseconds - self._start_ns) * 1e-9
        with self.lock:
            self.points[msg.tenant].append(ResultPoint(
                t_s=t_s, latency_ms=msg.latency_ms, deadline_ms=msg.deadline_ms,
                exit_index=msg.exit_index, threads=msg.num_threads, energy_mj=msg.energy_mj,
                deadline_met=msg.deadline_met, model=msg.model, num_exits=msg.num_exits))

    def _status_callback(self, msg: TenantStatus) -> None:
        with self.lock:
            self.status[msg.tenant] = msg

    def rows(self) -> List[StatusRow]:
        """Last status of each tenant as table rows."""
        with self.lock:
            return [StatusRow(
                tenant=s.tenant, goal=s.goal, frames_received=s.frames_received,
                frames_served=s.frames_served, frames_dropped=s.frames_dropped,
                frames_rejected=s.frames_rejected, deadline_met_ratio=s.deadline_met_ratio,
                accuracy=s.accuracy, labelled_frames=s.labelled_frames, mean_exit=s.mean_exit,
                energy_mean_mj=s.energy_mean_mj, energy_measured=s.energy_measured,
                latency_bound_ms=(s.base_latency_bound_ms, s.latency_bound_ms),
                min_accuracy=(s.base_min_accuracy, s.min_accuracy),
                energy_bound_mj=(s.base_energy_bound_mj, s.energy_bound_mj))
                for _, s in sorted(self.status.items())]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bringup', description='Run the delen_ros serving stack in one process.')
    parser.add_argument('--config', type=Path,
                        help='parameter file (default: config/three_tenants.yaml with --demo, '
                             'else config/serve.yaml)')
    parser.add_argument('--demo', action='store_true',
                        help='also start the cameras and the scripted power trace, then report')
    parser.add_argument('--duration', type=float, default=60.0,
                        help='seconds to run with --demo (default 60)')
    parser.add_argument('--contention', type=float, nargs=2, metavar=('START', 'END'),
                        help='seconds of the demo during which one busy process per core '
                             'competes for the CPU (default: the middle third; 0 0: none)')
    parser.add_argument('--output-dir', type=Path, default=Path('out'),
                        help='where --demo writes its plot (default ./out)')
    add_executor_argument(parser)
    return parser


def _tenant_topics(server: ServerNode) -> Dict[str, Dict[str, str]]:
    topics = {}
    for name in server.get_parameter('tenants').value:
        topics[name] = {field: server.get_parameter(f'{name}.{field}').value
                        for field in ('output_topic', 'status_topic')}
    return topics


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the bringup executable."""
    argv = list(sys.argv if argv is None else argv)
    args = _parser().parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    config = args.config or _share('config', 'three_tenants.yaml' if args.demo
                                   else 'serve.yaml')
    if not Path(config).is_file():
        print(f'bringup: {config}: parameter file not found', file=sys.stderr)
        return 2
    ros_args = argv[argv.index('--ros-args') + 1:] if '--ros-args' in argv else []
    use_default_profiles()  # camera-size images (config/fastdds.xml)
    rclpy.init(args=['bringup', '--ros-args', '--params-file', str(config), *ros_args])
    nodes: List[Node] = []
    try:
        server = ServerNode()
    except (CheckpointError, ProfileError, ValueError) as error:
        print(f'bringup: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    nodes += [server, GovernorNode()]
    recorder = None
    if args.demo:
        for name in node_sections(config):
            if name.startswith(CAMERA_PREFIX):
                nodes.append(CameraNode(node_name=name))
        nodes.append(PowerTraceNode())
        recorder = DemoRecorder(_tenant_topics(server))
        nodes.append(recorder)
    executor = make_executor(args.executor, num_threads=max(4, len(nodes)))
    for node in nodes:
        executor.add_node(node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    spinner = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    spinner.start()
    phases = _phases(args) if args.demo else []
    contention = next((p for p in phases if p.contention), None)
    load = CpuLoad(max_seconds=args.duration + 30.0)
    started = time.monotonic()
    if recorder is not None:
        recorder.restart_clock()
    try:
        while not stop.is_set():
            now = time.monotonic() - started
            if args.demo and now >= args.duration:
                break
            if contention is not None:
                if contention.start_s <= now < contention.end_s:
                    load.start()
                elif now >= contention.end_s:
                    load.stop()
            stop.wait(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        load.stop()
    elapsed_s = time.monotonic() - started
    # Report once the executor has stopped: its callbacks no longer add points meanwhile.
    executor.shutdown(timeout_sec=5.0)
    if recorder is not None:
        _report(recorder, args.output_dir, elapsed_s, phases, load.workers)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()
    spinner.join(timeout=5.0)
    return 0


def _spin(executor: Executor, stop: threading.Event) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()


def _phases(args: argparse.Namespace) -> List[Phase]:
    start, end = args.contention or (args.duration / 3, 2 * args.duration / 3)
    if not 0.0 <= start < end:
        return [Phase('all', 0.0, math.inf)]
    return [Phase('before', 0.0, start), Phase('contention', start, end, contention=True),
            Phase('after', end, math.inf)]


def _report(recorder: DemoRecorder, output_dir: Path, elapsed_s: float,
            phases: List[Phase], workers: int) -> None:
    rows = recorder.rows()
    print(f'\ndelen_ros demo: {elapsed_s:.0f} s, {len(rows)} tenants '
          f'(energy figures are estimated unless marked measured)\n')
    print(format_table(rows))
    contention = next((p for p in phases if p.contention), None)
    if contention is not None:
        print(f'\nBefore, during and after the CPU contention ({workers} busy processes, '
              f'{contention.start_s:.0f}-{contention.end_s:.0f} s):\n')
        print(format_phase_table(recorder.points, phases))
    with recorder.lock:
        points = {name: list(series) for name, series in recorder.points.items()}
    path = plot_timeline(points, Path(output_dir) / 'demo.png', phases=phases)
    print(f'\nplot: {os.path.abspath(path)}')
