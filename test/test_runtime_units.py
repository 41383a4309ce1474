"""Scheduler, slowdown filters, cost model, accuracy curve, statistics, collector on their own."""

import gc
import math
import threading
import weakref

from delen_ros.engine.profiling import load_profile
from delen_ros.runtime import (AccuracyCurve, CostModel, EdfScheduler, PowerModel, Request,
                               SlowdownFilter, TenantStats)
from delen_ros.runtime.collector import IdleCollector
from delen_ros.runtime.stats import sorted_percentile
import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest


def _request(tenant, due_s, frame_id=''):
    return Request(tenant=tenant, stamp_s=due_s - 0.1, due_s=due_s, deadline_s=due_s,
                   frame_id=frame_id)


def test_scheduler_serves_earliest_deadline_first_across_tenants():
    scheduler = EdfScheduler()
    for tenant in ('a', 'b', 'c'):
        scheduler.add_tenant(tenant, 3)
    for tenant, due in (('a', 5.0), ('b', 1.0), ('c', 3.0), ('a', 2.0), ('b', 4.0),
                        ('c', 2.0)):
        assert scheduler.put(_request(tenant, due, f'{tenant}{due:g}')) == []
    order = [scheduler.get_nowait().frame_id for _ in range(6)]
    # Ties (a2, c2) go to the earlier arrival.
    assert order == ['b1', 'a2', 'c2', 'c3', 'b4', 'a5']
    assert scheduler.get_nowait() is None and scheduler.pending() == 0


def test_scheduler_keeps_the_newest_frames_of_each_tenant():
    scheduler = EdfScheduler()
    scheduler.add_tenant('cam', 2)
    scheduler.add_tenant('lidar', 1)
    dropped = []
    for index in range(5):
        # Later frames have earlier deadlines here: dropping is by arrival, not deadline.
        dropped += scheduler.put(_request('cam', 10.0 - index, f'cam{index}'))
    dropped += scheduler.put(_request('lidar', 1.0, 'lidar0'))
    assert [r.frame_id for r in dropped] == ['cam0', 'cam1', 'cam2']
    assert scheduler.pending('cam') == 2 and scheduler.pending('lidar') == 1
    assert [r.frame_id for r in scheduler.set_capacity('cam', 1)] == ['cam3']
    assert [r.frame_id for r in scheduler.close()] == ['cam4', 'lidar0']
    with pytest.raises(RuntimeError, match='closed'):
        scheduler.put(_request('cam', 1.0))
    with pytest.raises(ValueError, match='positive integer'):
        scheduler.add_tenant('x', 0)
    scheduler.reopen()
    with pytest.raises(KeyError, match='unknown tenant'):
        scheduler.put(_request('nobody', 1.0))


def test_scheduler_get_blocks_until_a_request_or_close():
    scheduler = EdfScheduler()
    scheduler.add_tenant('t', 4)
    got = []
    ready = threading.Event()

    def worker():
        ready.set()
        while True:
            request = scheduler.get()
            if request is None:
                return
            got.append(request.frame_id)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    for index in range(3):
        scheduler.put(_request('t', float(index), str(index)))
    scheduler.close()  # wakes the worker; what is still queued comes back
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert scheduler.get(timeout=0.0) is None


def test_slowdown_filter_tracks_a_step_and_bounds_it():
    slowdown = SlowdownFilter(measurement_std=0.1, sigma=2.0)
    for _ in range(200):
        slowdown.update(1.0)
    assert slowdown.mean == pytest.approx(1.0, abs=0.01)
    quiet_upper = slowdown.upper
    for _ in range(200):
        slowdown.update(2.0)  # a competitor arrived
    assert slowdown.mean == pytest.approx(2.0, abs=0.05)
    assert slowdown.upper > slowdown.mean and slowdown.upper > quiet_upper
    slowdown.update(math.nan)
    slowdown.update(-1.0)
    assert slowdown.count == 400


def test_windowed_filter_covers_the_recent_worst_case():
    capped = SlowdownFilter(measurement_std=0.05, sigma=0.0, window=10, margin=0.1)
    for ratio in [1.0] * 5 + [3.0] + [1.0] * 5:
        capped.update(ratio)
    assert capped.recent_max == 3.0 and capped.upper == pytest.approx(3.3)
    for _ in range(10):
        capped.update(1.0)
    assert capped.recent_max == 1.0 and capped.upper < 1.5


def test_cost_model_learns_per_thread_count():
    profile = load_profile()
    power = PowerModel.from_platform('generic_x86_2core')
    cost = CostModel(profile, power=power, sigma=0.0, energy_margin=0.0, energy_window=10)
    assert cost.thread_counts == tuple(profile.thread_counts)
    median = profile.stage_latency_ms(1, 1)
    for _ in range(300):
        cost.observe_stage(1, 1, 3.0 * median, 2.0 * median * power.active_w(1))
    assert cost.slowdown(1).mean == pytest.approx(3.0, rel=0.02)
    assert cost.stage(2, 1).latency_ms == pytest.approx(
        3.0 * profile.stage_latency_ms(2, 1), rel=0.05)
    assert cost.stage(2, 1).energy_mj == pytest.approx(
        2.0 * profile.stage_latency_ms(2, 1) * power.active_w(1), rel=0.05)
    assert cost.slowdown(2).count == 0  # other settings are untouched
    three = cost.stage(0, 3)  # unprofiled: nearest profiled latencies, extrapolated power
    assert three.latency_ms > 0 and three.energy_mj > cost.stage(0, 2).energy_mj * 0.5
    whole = cost.to_exit(profile.num_exits - 1, 1)
    assert whole.latency_ms == pytest.approx(sum(
        cost.stage(k, 1).latency_ms for k in range(profile.num_exits)))


def test_accuracy_curve_from_the_shipped_profile():
    profile = load_profile()
    curve = AccuracyCurve(profile)
    for exit_index in range(profile.num_exits):
        sure, unsure = curve(exit_index, 0.999), curve(exit_index, 0.55)
        assert 0.97 <= sure <= 1.0
        assert unsure < sure
        assert 0.0 <= curve(exit_index, 0.0) <= 1.0


def test_tenant_stats_windows_labels_and_counts():
    stats = TenantStats('t', num_exits=4, window=3)
    for index in range(5):
        stats.received()
        correct = stats.served(stamp_s=10.0 + index, latency_ms=float(index), exit_index=index % 4,
                               energy_mj=2.0, deadline_met=index != 4, class_id=index,
                               label=index if index < 2 else None, energy_measured=False,
                               energy_source='model:x')
        assert correct is (True if index < 2 else None)
    stats.received()
    stats.dropped('queue')
    stats.received()
    stats.dropped('infeasible')
    stats.rejected()
    assert stats.label(12.0, 2) is True and stats.label(13.0, 0) is False
    assert stats.label(99.0, 1) is None  # before its answer: kept until it comes
    stats.received()
    assert stats.served(stamp_s=99.0, latency_ms=1.0, exit_index=0, energy_mj=1.0,
                        deadline_met=None, class_id=1, label=None, energy_measured=False,
                        energy_source='model:x') is True
    snap = stats.snapshot(goal='latency:5ms', policy='budget')
    assert (snap.received, snap.served, snap.dropped, snap.rejected, snap.infeasible) == (
        9, 6, 2, 1, 1)
    assert snap.deadline_misses == 1 and snap.deadline_met_ratio == pytest.approx(4 / 5)
    assert snap.latency_mean_ms == pytest.approx((3.0 + 4.0 + 1.0) / 3)  # last 3 only
    assert snap.labelled == 5 and snap.accuracy == pytest.approx(4 / 5)
    assert snap.exit_counts == (3, 1, 1, 1)
    empty = TenantStats('e', num_exits=2).snapshot()
    assert math.isnan(empty.latency_p99_ms) and math.isnan(empty.accuracy)
    assert empty.deadline_met_ratio == 1.0


@hypothesis.given(st.lists(st.floats(0.0, 1e4), min_size=1, max_size=300),
                  st.floats(0.0, 100.0))
def test_sorted_percentile_is_numpys_linear_percentile(values, q):
    values.sort()
    assert sorted_percentile(values, q) == pytest.approx(float(np.percentile(values, q)),
                                                         rel=1e-9, abs=1e-9)
    assert math.isnan(sorted_percentile([], q))


def test_idle_collector_turns_automatic_collection_off_and_runs_the_due_pass(
        cyclic_garbage):
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        IdleCollector.hold()
        IdleCollector.hold()
        assert not gc.isenabled()
        IdleCollector.release()
        assert not gc.isenabled()  # one serving thread still holds it
        collector = IdleCollector()
        gc.collect()
        assert collector.collect(idle=True) is None  # nothing allocated since: not due
        threshold = gc.get_threshold()[0]
        cycles = cyclic_garbage(threshold + 10)
        assert collector.collect(idle=False) is None  # due, but not yet overdue
        probe = weakref.ref(cycles[0])
        del cycles
        assert probe() is not None  # automatic collection is off: the cycles stay
        assert collector.collect(idle=True) == 0
        assert probe() is None and collector.idle_passes == 1
        hoard = cyclic_garbage(IdleCollector.OVERDUE * threshold + 10)
        assert collector.collect(idle=False) is not None and collector.overdue_passes == 1
        assert collector.longest_pass_ms > 0.0
        del hoard
        IdleCollector.release()
        assert gc.isenabled()
        gc.disable()  # a process that turned it off itself keeps it off
        IdleCollector.hold()
        IdleCollector.release()
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()
    with pytest.raises(ValueError, match='full_interval_s'):
        IdleCollector(full_interval_s=-1.0)
