"""BusyTime: the serving thread's turns split into on a CPU, runnable and asleep (no ROS)."""

import os
import subprocess
import sys
import threading
import time

from delen_ros.runtime.busy_time import BusyTime, compute_clock
import pytest


def _python_work(rounds: int) -> int:
    total = 0
    for value in range(rounds):
        total += value % 7
    return total


@pytest.fixture
def busy_time():
    watched = BusyTime()
    watched.bind()
    yield watched
    watched.unbind()


def test_a_turn_that_sleeps_is_asleep_not_on_a_cpu(busy_time):
    if not busy_time.split:
        pytest.skip('this OS has no per-thread schedstat')
    turn = busy_time.mark()
    time.sleep(0.02)
    busy_time.add(turn)
    assert busy_time.turns == 1
    assert busy_time.wall_ms >= 20.0
    assert busy_time.asleep_ms >= 15.0  # sleeping is neither on a CPU nor runnable
    assert busy_time.on_cpu_ms + busy_time.runnable_ms + busy_time.asleep_ms == pytest.approx(
        busy_time.wall_ms, abs=0.5)
    values = busy_time.values()
    assert float(values['worker_asleep_pct']) > 50.0
    assert float(values['worker_asleep_ms_p99']) >= 15.0


def test_waiting_for_the_gil_counts_as_asleep(busy_time):
    if not busy_time.split:
        pytest.skip('this OS has no per-thread schedstat')
    spinning, stop = threading.Event(), threading.Event()

    def spin():
        spinning.set()
        while not stop.is_set():
            _python_work(1000)

    other = threading.Thread(target=spin)
    other.start()
    try:
        assert spinning.wait(10.0)
        turn = busy_time.mark()
        _python_work(3_000_000)  # the two threads hand the GIL over every switch interval
        busy_time.add(turn)
    finally:
        stop.set()
        other.join()
    assert busy_time.asleep_ms > 1.0
    assert busy_time.on_cpu_ms < busy_time.wall_ms


def test_without_schedstat_the_time_off_the_cpu_is_not_split():
    busy_time = BusyTime(schedstat=False)
    busy_time.bind()
    assert busy_time.values() == {'worker_busy_turns': '0'}
    turn = busy_time.mark()
    time.sleep(0.01)
    busy_time.add(turn)
    assert not busy_time.split
    assert busy_time.runnable_ms is None and busy_time.asleep_ms is None
    values = busy_time.values()
    assert values['worker_runnable_pct'] == values['worker_asleep_pct'] == ''
    assert float(values['worker_off_cpu_pct']) > 50.0


def test_several_threads_busy_time_adds_up_under_a_prefix():
    parts = []
    for _ in range(2):
        part = BusyTime()
        part.bind()
        turn = part.mark()
        _python_work(20_000)
        part.add(turn)
        part.unbind()
        parts.append(part)
    total = BusyTime.total(parts)
    assert total.turns == 2
    assert total.wall_ms == pytest.approx(parts[0].wall_ms + parts[1].wall_ms)
    assert total.on_cpu_ms == pytest.approx(parts[0].on_cpu_ms + parts[1].on_cpu_ms)
    values = total.values('helpers')
    assert values['helpers_busy_turns'] == '2' and 'worker_busy_turns' not in values
    assert BusyTime.total([]).values('helpers') == {'helpers_busy_turns': '0'}


_PINNED_LOOP = """import os
os.sched_setaffinity(0, {%d})
print('pinned', flush=True)
while True:
    pass
"""


def test_the_compute_clock_leaves_out_the_time_waiting_for_a_cpu(busy_time):
    if not busy_time.split:
        pytest.skip('this OS has no per-thread schedstat')
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    hog = subprocess.Popen([sys.executable, '-c', _PINNED_LOOP % cpu], stdout=subprocess.PIPE,
                           text=True)
    try:
        assert hog.stdout.readline().strip() == 'pinned'
        os.sched_setaffinity(0, {cpu})  # this thread now shares one core with the loop
        wall, compute = time.perf_counter(), compute_clock()
        while time.perf_counter() < wall + 0.3:
            _python_work(1000)
        wall, compute = time.perf_counter() - wall, compute_clock() - compute
    finally:
        os.sched_setaffinity(0, cpus)
        hog.kill()
        hog.wait()
    assert 0.0 < compute < 0.8 * wall  # the fair share of a core, not the wall time
