"""Source stamps on the runtime's clock, and run-time tenants' values (no ROS)."""

from delen_ros.nodes.frame_time import FrameClock
from delen_ros.nodes.tenant_values import check_tenant_name, tenant_values
import pytest

MS = 10 ** 6


def test_stamp_age_is_kept_and_odd_stamps_are_counted():
    clock = FrameClock(monotonic=lambda: 50.0)
    now = 1000 * 10 ** 9
    fresh = clock.arrival(now - 20 * MS, now, bound_ms=100.0)
    assert fresh.check == '' and fresh.age_ms == pytest.approx(20.0)
    assert fresh.runtime_stamp_s == pytest.approx(50.0 - 0.020)
    assert clock.arrival(0, now, bound_ms=100.0).runtime_stamp_s == 50.0
    future = clock.arrival(now + 5000 * MS, now, bound_ms=100.0)
    assert future.check == 'future' and future.runtime_stamp_s == 50.0
    stale = clock.arrival(now - 300 * MS, now, bound_ms=100.0)
    assert stale.check == 'stale' and stale.age_ms == pytest.approx(300.0)
    assert clock.arrival(now - 300 * MS, now, bound_ms=None).check == ''
    assert clock.counts == {'zero': 1, 'future': 1, 'stale': 1}


def test_labels_find_their_frame_before_or_after_it():
    clock = FrameClock(monotonic=lambda: 10.0)
    now = 2000 * 10 ** 9
    seen = clock.arrival(now - 5 * MS, now, bound_ms=None)
    assert clock.label(now - 5 * MS, 3) == seen.runtime_stamp_s
    assert clock.label(now - 1 * MS, 7) is None
    assert clock.arrival(now - 1 * MS, now, bound_ms=None).label == 7


def test_tenant_values_are_checked_like_declared_parameters():
    values = tenant_values('extra', {'latency_ms': 30, 'policy': 'static:exit_index=1'})
    assert values['latency_ms'] == 30.0 and isinstance(values['latency_ms'], float)
    assert values['input_topic'] == 'extra/image'
    for given, words in (({'queue_size': 2.5}, 'integer'), ({'queue_size': 0}, 'within'),
                         ({'goal': 'speed'}, 'one of'), ({'latency_ms': float('nan')}, 'finite'),
                         ({'input_topic': 3}, 'string'), ({'nope': 1}, 'unknown')):
        with pytest.raises(ValueError, match=words):
            tenant_values('extra', given)
    assert check_tenant_name('cam_2', existing=['cam']) == 'cam_2'
    for name in ('cam', '', '2cam', 'a/b', '~x', None):
        with pytest.raises(ValueError):
            check_tenant_name(name, existing=['cam'])
