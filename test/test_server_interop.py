"""The server in an existing ROS graph: any publisher QoS, relative names, odd stamps, late."""

import signal
import time

from builtin_interfaces.msg import Time
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from stream_harness import Stream

pytestmark = pytest.mark.ros

FRAMES = 200
OFFERED_DEADLINE_MS = 300.0
FALLBACK_MS = 150.0
PUBLISHERS = {
    'plain': QoSProfile(depth=10),  # what `ros2 topic pub` and a default rclpy publisher offer
    'sensor': qos_profile_sensor_data,
    'deadline': QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                           deadline=Duration(nanoseconds=int(OFFERED_DEADLINE_MS * 1e6))),
}


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    folder = tmp_path_factory.mktemp('interop')
    params = folder / 'params.yaml'
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [plain, sensor, deadline, hopeless, stamps]
    status_period_s: 0.2
    fallback_latency_ms: {FALLBACK_MS}
    plain.queue_size: 100
    sensor.queue_size: 100
    deadline.queue_size: 100
    hopeless.latency_ms: 0.5
    hopeless.queue_size: 50
""")
    log = folder / 'server.log'
    process = start_node('server', '--params-file', str(params), log_path=log)
    probe = Probe('interop_test_client')
    streams = {name: Stream(probe.node, f'/{name}/image', qos, f'/delen/{name}/result',
                            f'/delen/{name}/status', tag=name)
               for name, qos in PUBLISHERS.items()}
    streams['hopeless'] = Stream(probe.node, '/hopeless/image', QoSProfile(depth=10),
                                 '/delen/hopeless/result', '/delen/hopeless/status',
                                 tag='hopeless')
    streams['stamps'] = Stream(probe.node, '/stamps/image', QoSProfile(depth=10),
                               '/delen/stamps/result', '/delen/stamps/status', tag='stamps')
    yield probe, streams, log
    probe.close()
    code = stop_node(process)
    assert code == 0, f'server exited with {code}:\n{log.read_text()}'


def _stream_frames(streams, count, rate_hz=20.0):
    """Publish count frames on every stream, interleaved, at about rate_hz each."""
    period = 1.0 / rate_hz
    start = time.monotonic()
    for index in range(count):
        for stream in streams:
            stream.publish()
        delay = start + (index + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing a publisher, not waiting for the server


def test_every_kind_of_publisher_is_answered_with_its_headers(graph):
    # Deep queues: this is about which publishers connect, not about keeping up on a shared CPU.
    probe, streams, _ = graph
    kinds = [streams[name] for name in PUBLISHERS]
    for stream in kinds:
        assert stream.connected(), f'{stream.tag}: the server never subscribed'
    # The server reads offered deadlines from the graph; wait until it uses this one.
    assert streams['deadline'].answer_until(lambda r: r.deadline_ms == OFFERED_DEADLINE_MS), \
        'the offered deadline never became the bound'
    for stream in kinds:
        stream.sent.clear()
    _stream_frames(kinds, FRAMES)
    wait_for(lambda: all(len(s.finals()) >= FRAMES for s in kinds), 30.0, interval=0.1)
    for stream in kinds:
        answered = stream.matching_headers()
        assert len(answered) >= 0.95 * FRAMES, \
            f'{stream.tag}: {len(answered)} of {FRAMES} frames answered with their header ' \
            f'(server: {stream.latest_status()})'
    bounds = {name: {r.deadline_ms for r in streams[name].finals().values()}
              for name in PUBLISHERS}
    assert bounds == {'plain': {FALLBACK_MS}, 'sensor': {FALLBACK_MS},
                      'deadline': {OFFERED_DEADLINE_MS}}


def test_a_bound_no_exit_can_meet_is_answered_late(graph):
    _, streams, _ = graph
    stream = streams['hopeless']
    assert stream.connected()
    _stream_frames([stream], FRAMES)
    wait_for(lambda: len(stream.finals()) >= FRAMES, 30.0, interval=0.1)
    answers = stream.finals().values()
    assert len(answers) >= 0.95 * FRAMES, f'{len(answers)} of {FRAMES} answered'
    assert all(not r.deadline_met and r.exit_index == 0 and r.deadline_ms == 0.5
               for r in answers)
    status = wait_for(lambda: stream.latest_status(lambda s: s.frames_late >= len(answers)))
    assert status and status.frames_dropped == status.dropped_queue + \
        status.dropped_infeasible + status.dropped_shutdown
    assert status.dropped_infeasible == 0


def _shifted(node, seconds):
    now = node.get_clock().now().nanoseconds + int(seconds * 1e9)
    return Time(sec=now // 10 ** 9, nanosec=now % 10 ** 9)


def test_zero_future_and_stale_stamps_are_answered_and_counted(graph):
    probe, streams, log = graph
    stream = streams['stamps']
    assert stream.connected()
    zero = stream.answer_until(lambda r: r.header.stamp.sec == 0, stamp=Time())
    assert zero and zero.header.stamp.nanosec == 0 and zero.deadline_met
    assert zero.latency_ms < FALLBACK_MS
    future = stream.answer_until(lambda r: r.header.stamp.sec > probe.node.get_clock().now()
                                 .to_msg().sec + 5, stamp=_shifted(probe.node, 60.0))
    assert future and future.deadline_met and future.latency_ms < FALLBACK_MS
    stale = stream.answer_until(lambda r: not r.deadline_met,
                                stamp=_shifted(probe.node, -FALLBACK_MS * 2e-3))
    assert stale and stale.latency_ms > 2 * FALLBACK_MS
    status = wait_for(lambda: stream.latest_status(
        lambda s: s.stamps_zero and s.stamps_future and s.stamps_stale))
    assert status, 'TenantStatus does not count zero, future and stale stamps'
    text = log.read_text()
    assert text.count('zero stamp') == 1, 'the zero stamp is not warned exactly once'
    assert 'in the future' in text and 'older than the latency bound' in text


def test_namespace_and_remaps_move_every_topic(tmp_path):
    log = tmp_path / 'server.log'
    process = start_node('server', '-r', '__ns:=/robot2', '-r', 'camera/image:=/front/raw',
                         '-p', 'tenants:=[camera, rear]', log_path=log)
    probe = Probe('interop_ns_client')
    try:
        front = Stream(probe.node, '/front/raw', QoSProfile(depth=10),
                       '/robot2/delen/camera/result', tag='front')
        rear = Stream(probe.node, '/robot2/rear/image', QoSProfile(depth=10),
                      '/robot2/delen/rear/result', '/robot2/delen/rear/status', tag='rear')
        assert front.connected() and rear.connected()
        assert front.answer_until(lambda r: r.tenant == 'camera')
        assert rear.answer_until(lambda r: r.tenant == 'rear')
        assert wait_for(rear.latest_status)
    finally:
        probe.close()
        # Ctrl-C under ros2 launch: the terminal's SIGINT, then launch's, during shutdown.
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        code = stop_node(process)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, text


def test_sim_time_stamps_age_in_ros_time_and_reports_keep_coming(tmp_path):
    log = tmp_path / 'server.log'
    process = start_node('server', '-p', 'use_sim_time:=true', '-p', 'tenants:=[sim]',
                         '-p', 'status_period_s:=0.2', '-p', f'fallback_latency_ms:={FALLBACK_MS}',
                         log_path=log)
    probe = Probe('interop_sim_client')
    try:
        # Simulated time stands still at 1000 s: only the stamps' age in it counts, and the
        # time the frame then spends in the server is measured on the monotonic clock.
        sim_now = Time(sec=1000)
        clock = probe.node.create_publisher(Clock, '/clock', 10)
        probe.node.create_timer(0.05, lambda: clock.publish(Clock(clock=sim_now)))
        stream = Stream(probe.node, '/sim/image', QoSProfile(depth=10), '/delen/sim/result',
                        '/delen/sim/status', tag='sim')
        assert stream.connected()
        # Reports keep coming without /clock advancing; their stamps say the server has it.
        assert wait_for(lambda: stream.latest_status(lambda s: s.header.stamp.sec == 1000)), \
            'no TenantStatus in simulated time'
        aged = Time(sec=999, nanosec=970_000_000)  # 30 ms old in simulated time
        sent_at = {}

        def publish_aged():
            sent_at[stream.publish(stamp=aged)] = time.monotonic()
        answer = wait_for(lambda: publish_aged() or next(iter(stream.finals().values()), None),
                          interval=0.05)
        received_at = time.monotonic()
        assert answer, 'no answer under use_sim_time'
        in_server_ms = answer.latency_ms - 30.0
        assert in_server_ms > 0 and answer.compute_ms > 0
        assert abs(answer.latency_ms - answer.queue_ms - answer.compute_ms
                   - answer.delivery_ms) < 0.01
        assert in_server_ms <= (received_at - sent_at[answer.header.frame_id]) * 1e3
        assert answer.deadline_ms == FALLBACK_MS
        assert answer.deadline_met == (answer.latency_ms <= FALLBACK_MS)
        stale = stream.answer_until(lambda r: not r.deadline_met,
                                    stamp=Time(sec=999, nanosec=700_000_000))
        assert stale and stale.latency_ms > 300.0
        count = len(stream.statuses)
        assert wait_for(lambda: len(stream.statuses) >= count + 3), \
            'TenantStatus stopped under use_sim_time'
    finally:
        probe.close()
        code = stop_node(process)
    assert code == 0, log.read_text()
