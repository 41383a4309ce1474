"""Camera-size images reach the server from another process; DDS losses are counted."""

import os
from pathlib import Path
import subprocess
import sys
import threading

from delen_ros.msg import TenantStatus
from delen_ros.nodes.dds_profile import default_profiles_file, PROFILE_VARIABLES
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Probe, start_node, stop_node, TIMEOUT_S, wait_for
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

pytestmark = pytest.mark.ros

TENANT = 'large'
FRAMES = 45
# The bench's camera, in its own process: rgb8 frames, best effort (sensor data) or reliable.
CAMERA = Path(__file__).resolve().parents[1] / 'bench' / 'bench_large_images.py'


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp('large')
    params = folder / 'params.yaml'
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [{TENANT}]
    status_period_s: 0.2
    {TENANT}.input_deadline_ms: 0.0
    {TENANT}.latency_ms: 500.0
    {TENANT}.queue_size: 4
""")
    process = start_node('server', '--params-file', str(params), log_path=folder / 'server.log')
    yield process
    assert stop_node(process) == 0, (folder / 'server.log').read_text()


class Watcher:
    """The server's TenantStatus and diagnostics for the tenant."""

    def __init__(self):
        self.probe = Probe('large_image_watcher')
        self.status = None
        self.reliability = None
        self.lock = threading.Lock()
        self.probe.node.create_subscription(TenantStatus, f'/delen/{TENANT}/status',
                                            self._status_callback, 10)
        self.probe.node.create_subscription(DiagnosticArray, '/diagnostics',
                                            self._diagnostics_callback, 10)
        self.set_client = self.probe.node.create_client(SetParameters,
                                                        '/delen_server/set_parameters')

    def _status_callback(self, msg):
        with self.lock:
            self.status = msg

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name == f'delen_server: tenant {TENANT}':
                values = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.reliability = values.get('input_reliability')

    def counts(self):
        with self.lock:
            status = self.status
        if status is None:
            return 0, 0, 0
        return status.frames_received, status.frames_lost, status.frames_missed

    def set_queue_size(self, size):
        request = SetParameters.Request(parameters=[Parameter(
            name=f'{TENANT}.queue_size',
            value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=size))])
        assert self.probe.call(self.set_client, request).results[0].successful


@pytest.fixture(scope='module')
def watcher(server):
    watcher = Watcher()
    # Start-up (imports, model) can take a minute on a busy 2-core machine.
    assert wait_for(lambda: watcher.status is not None, 3 * TIMEOUT_S), 'no TenantStatus'
    yield watcher
    watcher.probe.close()


def _stream(watcher, *, profile, reliability='best_effort', width=640, height=480, rate=30.0):
    """Send FRAMES frames from a camera process; return (arrived, lost, missed) frames."""
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(default_profiles_file())
    before = watcher.counts()
    command = [sys.executable, str(CAMERA), '--camera', f'{width}x{height}@{rate:g}',
               '--seconds', str(FRAMES / rate), '--topic', f'/{TENANT}/image']
    camera = subprocess.Popen(command + (['--reliable'] if reliability == 'reliable' else []),
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert camera.stdout.readline().strip() == 'matched'
        assert wait_for(lambda: watcher.reliability == reliability, TIMEOUT_S), (
            f'the server did not follow a {reliability} publisher')
        camera.stdin.write('go\n')
        camera.stdin.flush()
        assert camera.wait(timeout=TIMEOUT_S) == 0
    finally:
        if camera.poll() is None:
            camera.kill()
            camera.wait()

    def delta():
        return tuple(now - then for now, then in zip(watcher.counts(), before))

    def settled():
        arrived, _, missed = delta()
        return arrived + missed >= FRAMES
    wait_for(settled, 5.0)
    return delta()


def test_camera_size_frames_arrive_with_the_shipped_profile(watcher):
    arrived, lost, missed = _stream(watcher, profile=True)
    # With the profile DDS loses nothing; without it 80-97 % of these frames are lost
    # (docs/large_images.md). A few may still be overwritten in the subscription's history
    # when a busy machine starves the server (41 of 45 arrived once in CI, none lost): the
    # bench (bench/bench_large_images.py) measures the >= 99 % target at full length.
    assert lost == 0, f'{lost} frames lost in transport with the profile'
    assert arrived >= 0.8 * FRAMES, f'{arrived} of {FRAMES} frames arrived ({missed} missed)'
    assert arrived + missed <= FRAMES, f'{arrived} arrived and {missed} missed of {FRAMES}'


def test_without_the_profile_frames_are_lost_and_counted(watcher):
    arrived, lost, missed = _stream(watcher, profile=False)
    assert arrived < FRAMES, 'Fast DDS defaults delivered every frame: is this test still needed?'
    assert lost > 0, f'{FRAMES - arrived} frames missing but no message-lost event counted'
    # Sequence gaps count the frames between two that arrived (not those before the first
    # or after the last arrival), and never one twice.
    assert arrived + missed <= FRAMES, f'{arrived} arrived and {missed} missed of {FRAMES}'


def test_a_reliable_publisher_gets_a_reliable_subscription(watcher):
    # Without the profile a best-effort reader loses most frames; matching the publisher's
    # reliability recovers them (DDS resends lost fragments).
    watcher.set_queue_size(8)
    arrived, lost, missed = _stream(watcher, profile=False, reliability='reliable', rate=10.0)
    assert arrived >= 0.95 * FRAMES and lost == 0, (arrived, lost, missed)
