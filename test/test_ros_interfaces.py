"""The package's own messages cross between two OS processes over rclpy and Fast DDS."""

import importlib.util
import math
import os
from pathlib import Path

from delen_ros.msg import InferenceResult, TenantStatus
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60.0


def _load_roundtrip_tool():
    spec = importlib.util.spec_from_file_location(
        'delen_ros_roundtrip', REPO / 'tools' / 'ros_roundtrip.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roundtrip = _load_roundtrip_tool()


def _round_trip(type_name):
    """Publish from a subprocess, receive and echo here; return the received message."""
    topic = '/delen_test/%s_%d' % (type_name.lower(), os.getpid())
    publisher = roundtrip.start_publisher(type_name, topic, TIMEOUT_S)
    try:
        received = roundtrip.receive_and_echo(type_name, topic, publisher, TIMEOUT_S)
        exit_code = publisher.wait(timeout=TIMEOUT_S)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    assert received is not None, 'no %s from the publisher process within %.0f s' % (
        type_name, TIMEOUT_S)
    # 0: the publisher got back exactly what it sent (checked in that process).
    assert exit_code == 0, 'publisher process exit code %s' % exit_code
    return received


@pytest.mark.ros
def test_inference_result_round_trip(ros_domain_id):
    received = _round_trip('InferenceResult')
    assert isinstance(received, InferenceResult)
    assert received.header.stamp.sec == 1_700_000_000
    assert received.header.stamp.nanosec == 123_456_789
    assert received.header.frame_id == 'camera_optical_frame'
    assert (received.tenant, received.label, received.goal, received.policy) == (
        'tenant_a', 'Ankle boot', 'min_energy', 'confidence')
    assert (received.class_id, received.exit_index, received.num_exits) == (9, 2, 4)
    assert received.num_threads == 1
    assert received.is_final and received.deadline_met and not received.energy_measured
    assert received.confidence == 0.875
    assert (received.latency_ms, received.queue_ms, received.compute_ms) == (12.5, 0.25, 11.75)
    assert (received.energy_mj, received.deadline_ms) == (3.25, 50.0)
    assert roundtrip.messages_equal(received, roundtrip.sample_message('InferenceResult'))


@pytest.mark.ros
def test_tenant_status_round_trip(ros_domain_id):
    received = _round_trip('TenantStatus')
    assert isinstance(received, TenantStatus)
    assert received.header.frame_id == 'camera_optical_frame'
    assert received.tenant == 'tenant_b'
    # uint64 beyond 32 bits survives
    assert received.frames_received == 2**40 + 7
    assert received.deadline_met_ratio == 0.984375
    # "no ground truth" is NaN and stays NaN
    assert math.isnan(received.accuracy) and received.labelled_frames == 0
    assert (received.latency_bound_ms, received.min_accuracy, received.energy_bound_mj) == (
        40.0, 0.75, 5.0)
    assert roundtrip.messages_equal(received, roundtrip.sample_message('TenantStatus'))


def test_messages_equal_notices_a_difference():
    sent = roundtrip.sample_message('InferenceResult')
    changed = roundtrip.sample_message('InferenceResult')
    changed.header.frame_id = 'other_frame'
    assert roundtrip.messages_equal(sent, roundtrip.sample_message('InferenceResult'))
    assert not roundtrip.messages_equal(sent, changed)


def test_session_has_its_own_domain(ros_domain_id):
    assert 0 <= ros_domain_id <= 101
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
