"""The serving loop: frame sources, EDF at stage boundaries, batches, shares, failures."""

import os
import subprocess
import sys
import textwrap
import threading
import time

from delen_ros.engine import fashion_mnist
from delen_ros.evaluation.load import CpuLoad
from delen_ros.runtime import Goal, InferenceServer, Plan, Policy
from delen_ros.runtime.policies import available_cores, register_policy, thread_counts_left
from delen_ros.runtime.priority import apply_priority, parse_priority, PriorityError, \
    thread_slice_us
from delen_ros.runtime.run_queue import FreeCores, RunQueue
from delen_ros.runtime.scheduler import Request
import pytest


@pytest.fixture(scope='module')
def images():
    return fashion_mnist.load('test')[0][:64]


class ScriptedSource:
    """A FrameSource whose n-th poll runs the n-th scripted step (on the worker's thread)."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.polls = 0
        self.event = threading.Event()

    def poll(self):
        self.polls += 1
        if self.steps:
            return self.steps.pop(0)() or 0
        return 0

    def wait(self, timeout):
        self.event.wait(timeout)
        self.event.clear()

    def wake(self):
        self.event.set()


@register_policy
class FaultyStopPolicy(Policy):
    """Plans exit 3 with a stop check at exit 1 that raises: a policy with a bug."""

    name = 'test_faulty_stop'

    def plan(self, context):
        return Plan(threads=context.default_threads, target_exit=3, stop_exits=(1,))

    def should_stop(self, status):
        raise RuntimeError('faulty policy')


@register_policy
class FaultyPlanPolicy(Policy):
    """Raises while planning: a crash inside the serving loop."""

    name = 'test_faulty_plan'

    def plan(self, context):
        raise RuntimeError('planning crashed')

    def should_stop(self, status):
        return True


@register_policy
class ThreadsSeenPolicy(Policy):
    """Plans the final exit with the most threads offered; keeps what each plan was offered."""

    name = 'test_threads_seen'
    offered = []

    def plan(self, context):
        self.offered.append(tuple(context.thread_counts))
        return Plan(threads=max(context.thread_counts), target_exit=3)

    def should_stop(self, status):
        return False


def _finals(server, count, timeout=60):
    """Wait for ``count`` final answers (in the order given), then for the server to idle."""
    finals = []
    deadline = time.monotonic() + timeout
    while len(finals) < count and time.monotonic() < deadline:
        result = server.next_result(timeout=max(deadline - time.monotonic(), 0.01))
        if result is not None and result.is_final:
            finals.append(result)
    assert server.wait_idle(timeout=timeout)
    return finals


def test_an_urgent_frame_preempts_a_deep_one_at_the_next_stage_boundary(make_server, images):
    server = make_server()
    server.add_tenant('deep', goal=Goal.latency(1000.0), policy='static:exit_index=3')
    # Answered even when a loaded machine makes 10 ms infeasible: the order is what counts.
    server.add_tenant('urgent', goal=Goal.latency(10.0), policy='budget',
                      on_infeasible='serve_first_exit')
    source = ScriptedSource([lambda: server.submit('deep', images[0], frame_id='deep'),
                             lambda: server.submit('urgent', images[1], frame_id='urgent')])
    server.attach_source(source)
    server.start()
    answers = _finals(server, 2)
    assert [a.tenant for a in answers] == ['urgent', 'deep']
    assert server.preemptions == 1
    assert answers[1].exit_index == 3  # resumed from its stored features, to its exit


def test_a_resumed_frame_whose_budget_is_gone_answers_from_the_exit_reached(
        make_server, images):
    server = make_server()
    server.add_tenant('deep', goal=Goal.latency(40.0), policy='budget',
                      on_infeasible='serve_first_exit')
    # Answered even when a loaded machine makes 10 ms infeasible: the deep frame is checked.
    server.add_tenant('urgent', goal=Goal.latency(10.0), policy='budget',
                      on_infeasible='serve_first_exit')

    def late_urgent():
        time.sleep(0.06)  # the intake was slow: the deep frame's 40 ms are gone
        server.submit('urgent', images[1], frame_id='urgent')

    source = ScriptedSource([lambda: server.submit('deep', images[0], frame_id='deep'),
                             late_urgent])
    server.attach_source(source)
    server.start()
    answers = {a.tenant: a for a in _finals(server, 2)}
    assert answers['deep'].exit_index == 0
    assert not answers['deep'].deadline_met
    assert server.stats('deep').served == 1


def test_frames_of_tenants_waiting_together_run_as_one_batch(make_server, images):
    alone = make_server(max_batch=1)
    batched = make_server(max_batch=8)
    for server in (alone, batched):
        for tenant in ('a', 'b', 'c'):
            server.add_tenant(tenant, goal=Goal.latency(1000.0), policy='budget')
        for number, tenant in enumerate(('a', 'b', 'c')):
            server.submit(tenant, images[number], frame_id=str(number))
        server.start()
    one = {r.tenant: r for r in _finals(alone, 3)}
    many = {r.tenant: r for r in _finals(batched, 3)}
    assert (alone.batches, batched.batches, batched.batched_frames) == (0, 1, 3)
    assert {t: (r.class_id, r.exit_index) for t, r in many.items()} == {
        t: (r.class_id, r.exit_index) for t, r in one.items()}


def test_a_frame_that_fails_inside_a_batch_fails_alone(make_server, images):
    events = []
    server = make_server(on_event=lambda kind, text: events.append((kind, text)))
    for tenant, policy in (('a', 'budget'), ('bad', 'test_faulty_stop'), ('b', 'budget')):
        server.add_tenant(tenant, goal=Goal.latency(1000.0), policy=policy)
    for number, tenant in enumerate(('a', 'bad', 'b')):
        server.submit(tenant, images[number])
    server.start()
    answers = _finals(server, 3)
    assert server.batches == 1
    assert sorted(a.tenant for a in answers) == ['a', 'b']
    assert server.stats('bad').failed == 1 and server.frames_failed == 1
    assert any(kind == 'error' and 'faulty policy' in text for kind, text in events)
    server.submit('bad', images[5])
    server.submit('a', images[4])
    assert [a.tenant for a in _finals(server, 1)] == ['a']
    assert server.stats('bad').failed == 2


def test_a_crash_in_the_serving_loop_is_counted_and_serving_goes_on(make_server, images):
    events = []
    server = make_server(on_event=lambda kind, text: events.append((kind, text)))
    server.add_tenant('bad', goal=Goal.latency(1000.0), policy='test_faulty_plan')
    server.add_tenant('good', goal=Goal.latency(1000.0), policy='budget')

    def broken_intake():
        raise OSError('intake broke')

    source = ScriptedSource([broken_intake, lambda: server.submit('bad', images[0]),
                             lambda: server.submit('good', images[1])])
    server.attach_source(source)
    server.start()
    answers = _finals(server, 1)
    assert [a.tenant for a in answers] == ['good']
    stats = server.stats('bad')
    assert stats.failed == 1
    assert stats.received == stats.served + stats.dropped + stats.rejected + stats.failed
    assert [text for kind, text in events if kind == 'error'][:2] == [
        'serving loop failed: OSError: intake broke',
        "serving a frame of tenant 'bad' failed: RuntimeError: planning crashed"]
    assert server.serving and server.fatal_error is None


def test_the_idle_task_runs_on_the_worker_only_while_no_frame_waits(make_server, images):
    events = []
    server = make_server(on_event=lambda kind, text: events.append((kind, text)))
    server.add_tenant('cam', goal=Goal.latency(1000.0), policy='budget')
    calls = []

    def task():
        calls.append((threading.get_ident(), server.pending()))
        if len(calls) == 3:
            raise ValueError('report broke')
        return 0.0 if len(calls) < 6 else None  # 0: again at once, after a look for frames

    server.set_idle_task(task)
    idle = [lambda: 0] * 16  # polls between the stages of the first frame take some
    source = ScriptedSource([lambda: server.submit('cam', images[0])] + idle
                            + [lambda: server.submit('cam', images[1])])
    server.attach_source(source)
    server.start()
    answers = _finals(server, 2)
    assert len(answers) == 2, 'serving stopped after the idle task failed'
    assert len(calls) >= 6
    assert {ident for ident, _ in calls} == {server._worker.ident}
    assert all(waiting == 0 for _, waiting in calls), calls
    assert server.idle_task_errors == 1
    assert ('error', 'idle task failed: ValueError: report broke') in events
    assert server.serving


def test_under_overload_each_tenant_keeps_its_share(make_server, images):
    server = make_server(max_batch=1)
    server.add_tenant('fast', goal=Goal.latency(50.0), policy='budget')
    server.add_tenant('slow', goal=Goal.accuracy(0.9), policy='budget')
    server.start()
    answered = {'fast': 0, 'slow': 0}
    stop = time.monotonic() + 2.0
    number = 0
    while time.monotonic() < stop:  # both tenants far faster than the server serves
        for tenant in answered:
            server.submit(tenant, images[number % 64])
        number += 1
        for result in server.results():
            answered[result.tenant] += result.is_final
    assert server.wait_idle(timeout=30)
    for result in server.results():
        answered[result.tenant] += result.is_final
    total = sum(answered.values())
    assert total > 20
    assert min(answered.values()) >= 0.3 * total, answered


def test_cameras_triggered_together_take_turns_by_their_share(make_server, images):
    # Deadlines closer than one first exit are a tie, won by the tenant owed the most: by
    # deadline alone the camera published first would always be served first.
    server = make_server()
    tenants = ('left', 'right', 'rear')
    for tenant in tenants:
        server.add_tenant(tenant, goal=Goal.latency(50.0))
    stamp = time.time()
    for number, tenant in enumerate(tenants):
        server.submit(tenant, images[number], stamp_s=stamp + number * 1e-4)
    assert server._pick().tenant == 'left'
    server._shares.answered('left', set(tenants))
    server._shares.answered('right', set(tenants))
    first = server._pick()
    assert first.tenant == 'rear'
    assert server._scheduler.take(first)
    server._shares.answered('rear', set(tenants))
    server.submit('rear', images[3], stamp_s=stamp + 0.03)  # its next frame: not a tie
    assert server._pick().tenant == 'left'
    running = server._start([server._pick()])
    server._shares.answered('left', set(tenants))
    assert server._pick().tenant == 'right'
    assert server._pick(running) is running  # a tie never preempts


def test_frames_with_one_stamp_keep_their_own_tokens(make_server, images):
    server = make_server()
    server.add_tenant('camera', goal=Goal.latency(1000.0), queue_size=4)
    stamp = time.time()
    for number in range(3):
        server.submit('camera', images[number], stamp_s=stamp, frame_id=f'f{number}',
                      token=('header', number))
    server.start()
    answers = _finals(server, 3)
    assert sorted((a.frame_id, a.token) for a in answers) == [
        (f'f{n}', ('header', n)) for n in range(3)]


def test_budget_plans_first_and_runs_only_the_heads_it_needs(make_server, images):
    server = make_server()
    server.add_tenant('latency', goal=Goal.latency(1000.0), policy='budget')
    server.add_tenant('accuracy', goal=Goal.accuracy(0.9), policy='budget')
    tensor = server.to_input(images[0])
    for tenant in ('latency', 'accuracy'):
        state = server._tenant(tenant)
        goal = state.config.goal
        request = Request(tenant=tenant, stamp_s=time.time(), due_s=0.0,
                          deadline_s=None, tensor=tensor, goal=goal, policy=state.policy)
        execution = server.serve(request)
        evaluated = [status.exit_index for status in execution.exits]
        if tenant == 'latency':
            assert evaluated == [3]
        else:
            curve = server.executor.accuracy
            assert all(curve(k, 1.0) >= 0.9 for k in evaluated[:-1])


def test_latency_includes_the_estimated_delivery(make_server, images):
    server = make_server()
    server.add_tenant('camera', goal=Goal.latency(1000.0))
    server.start()
    server.submit('camera', images[0], transport_ms=0.8)
    answer = _finals(server, 1)[0]
    assert answer.delivery_ms > 0
    assert answer.latency_ms == pytest.approx(
        answer.queue_ms + answer.compute_ms + answer.delivery_ms)


def test_the_delivery_estimate_counts_the_subscribers_wake_up(make_server, images):
    # A subscriber's wake-up is estimated from the worker's own for frames (same machine):
    # slow wake-ups (a loaded machine) make every answer reserve more.
    server = make_server()
    server.add_tenant('camera', goal=Goal.latency(1000.0), queue_size=100)
    in_process = server.delivery_ms  # publishing only: no hop, no wake-up measured yet
    server.submit('camera', images[0], transport_ms=0.5, wake_ms=8.0)
    assert server.delivery_ms == pytest.approx(in_process + 8.5)  # the first as they are
    for number in range(1, 60):
        server.submit('camera', images[number], transport_ms=0.5, wake_ms=2.0)
    assert in_process + 2.5 < server.delivery_ms < in_process + 3.0  # weighted 0.05 a frame
    server.start()
    answers = _finals(server, 60)
    assert min(answer.delivery_ms for answer in answers) > 2.5


def test_the_answers_of_a_batch_count_the_wait_for_those_before_them(make_server, images):
    # Each answer is delivered (here: a slow publish) after the ones before it in its batch;
    # its latency_ms must cover that wait, which its own compute_ms does not.
    delivered = {}

    def slow_publish(result):
        delivered[result.tenant] = time.time()
        time.sleep(0.03)

    server = make_server(max_batch=8, on_result=slow_publish)
    for tenant in ('a', 'b', 'c'):
        server.add_tenant(tenant, goal=Goal.latency(1000.0), policy='budget')
    stamps = {}
    for number, tenant in enumerate(('a', 'b', 'c')):
        stamps[tenant] = time.time()
        server.submit(tenant, images[number], stamp_s=stamps[tenant])
    server.start()
    answers = sorted(_finals(server, 3), key=lambda r: delivered[r.tenant])
    assert (server.batches, server.batched_frames) == (1, 3)
    for position, answer in enumerate(answers):
        seen_ms = (delivered[answer.tenant] - stamps[answer.tenant]) * 1e3
        # 10 ms for the untimed steps around an answer; each answer before it took 30
        assert seen_ms <= answer.latency_ms + 10.0
        assert answer.delivery_ms >= position * 30.0
        assert answer.latency_ms == pytest.approx(
            answer.queue_ms + answer.compute_ms + answer.delivery_ms)


def test_cpu_priority_is_parsed_and_applied_or_explained():
    assert parse_priority('none') == ('none', 0)
    assert parse_priority('nice:5') == ('nice', 5)
    assert parse_priority('realtime:10') == ('realtime', 10)
    assert parse_priority('slice:100') == ('slice', 100)
    for bad in ('nice', 'nice:99', 'realtime:0', 'fast', 'none:3', 'slice:50', 'slice:1e3'):
        with pytest.raises(PriorityError):
            parse_priority(bad)
    reports = {}

    def in_a_thread(text):
        reports[text] = apply_priority(text)

    for text in ('none', 'nice:3', 'realtime:10'):
        thread = threading.Thread(target=in_a_thread, args=(text,))
        thread.start()
        thread.join()
    assert reports['none'] is None
    assert reports['nice:3'].endswith('nice 3')  # lowering priority needs no rights
    assert 'SCHED_FIFO' in reports['realtime:10'] or 'CAP_SYS_NICE' in reports['realtime:10']


def test_a_time_slice_is_set_on_the_serving_thread_only_or_explained():
    seen = {}

    def in_a_thread():
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, 3)
        seen['before'] = thread_slice_us()
        seen['report'] = apply_priority('slice:250')
        seen['after'], seen['nice'] = thread_slice_us(), os.getpriority(os.PRIO_PROCESS, tid)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    if seen['before'] is None:  # the kernel keeps no slice per thread (before Linux 6.12)
        assert 'not applied' in seen['report']
        return
    assert seen['report'].endswith('time slice 250 µs'), seen['report']
    assert seen['after'] == 250 and seen['nice'] == 3  # the nice level is kept
    assert thread_slice_us() == seen['before']  # this thread keeps the kernel's slice


def test_a_bad_cpu_priority_is_refused(model, profile):
    with pytest.raises(ValueError, match='cpu_priority'):
        InferenceServer(model, profile, cpu_priority='nice:-99')


def test_a_second_worker_serves_the_frames_one_cannot_answer_in_time(make_server, images):
    delivered_by = set()
    events = []
    server = make_server(workers=2, max_batch=1,
                         on_result=lambda result: delivered_by.add(threading.get_ident()),
                         on_event=lambda kind, text: events.append((kind, text)))
    # 25 ms for eight full networks: one worker cannot answer them all in time (EDF's test).
    for tenant in ('a', 'b', 'c', 'd'):
        server.add_tenant(tenant, goal=Goal.latency(25.0), policy='static:exit_index=3',
                          on_infeasible='serve_first_exit')
    server.add_tenant('bad', goal=Goal.latency(25.0), policy='test_faulty_plan')
    for number in range(8):
        server.submit('abcd'[number % 4], images[number], frame_id=str(number))
    server.submit('bad', images[8])
    server.start()
    workers = [server._worker] + server._helpers
    answers = _finals(server, 8)
    assert sorted(int(a.frame_id) for a in answers) == list(range(8))
    assert server.helper_jobs >= 1
    assert delivered_by == {thread.ident for thread in workers}
    assert server.stats('bad').failed == 1 and server.frames_failed == 1
    assert [kind for kind, _ in events].count('error') == 1
    assert server.serving
    server.stop(timeout=30)
    assert not any(thread.is_alive() for thread in workers) and not server.serving
    helpers = server.helpers_busy_time  # one busy turn per job the second worker ran
    assert helpers.turns == server.helper_jobs and helpers.wall_ms > 0.0


def test_thread_counts_left_beside_running_jobs():
    assert thread_counts_left((1, 2), cores=2, busy=0) == (1, 2)
    assert thread_counts_left((1, 2), cores=2, busy=1) == (1,)
    assert thread_counts_left((1, 2), cores=2, busy=2) == (1,)  # the least stays
    assert thread_counts_left((1, 2, 4), cores=8, busy=4) == (1, 2, 4)
    assert thread_counts_left((2, 4), cores=4, busy=3) == (2,)


def test_a_job_planned_beside_another_gets_only_the_cores_left(make_server, images):
    # Two workers on two cores: a plan made while the other worker computes a job is offered
    # one thread, so the two jobs do not ask for more threads than there are cores.
    ThreadsSeenPolicy.offered.clear()
    server = make_server(workers=2, max_batch=1)
    for tenant in ('a', 'b', 'c', 'd'):
        server.add_tenant(tenant, goal=Goal.latency(25.0), policy='test_threads_seen',
                          on_infeasible='serve_first_exit')
    for number in range(8):
        server.submit('abcd'[number % 4], images[number])
    server.start()
    answers = _finals(server, 8)
    assert len(answers) == 8 and server.helper_jobs >= 1
    offered = ThreadsSeenPolicy.offered
    assert offered and all(counts in ((1, 2), (1,)) for counts in offered), offered
    if available_cores() == 2:  # the shipped profile's counts are 1 and 2
        assert (1,) in offered, offered


@pytest.fixture
def cpu_hogs():
    """One CPU-bound process per core, once the run queues show them all."""
    cores = available_cores()
    run_queue = RunQueue()
    with CpuLoad(workers=cores, max_seconds=120.0):
        assert run_queue.wait_for_others(cores), 'the CPU-bound processes never showed as runnable'
        yield cores
    run_queue.close()


def test_a_plan_beside_cpu_bound_processes_gets_the_least_threads(
        make_server, images, cpu_hogs):
    # More threads than the cores nobody else wants stall at every operator's barrier.
    ThreadsSeenPolicy.offered.clear()
    server = make_server(workers=1, max_batch=1)
    for tenant in ('a', 'b'):
        server.add_tenant(tenant, goal=Goal.latency(1000.0), policy='test_threads_seen')
    for number in range(4):
        server.submit('ab'[number % 2], images[number])
    server.start()
    assert len(_finals(server, 4)) == 4
    counts = server.cost.thread_counts
    assert ThreadsSeenPolicy.offered == [(min(counts),)] * 4
    assert server.free_cores.runnable_elsewhere >= cpu_hogs
    assert server.free_cores.plans_narrowed == (4 if len(counts) > 1 else 0)


@pytest.mark.skipif(available_cores() < 2, reason='needs 2 cores for a 2-thread plan')
def test_a_job_planned_on_two_threads_goes_on_with_the_cores_left(
        make_server, images, cpu_hogs):
    # The plan insists on 2 threads; the stages run with what the other processes leave.
    server = make_server(workers=1, max_batch=1)
    for tenant in ('a', 'b'):
        server.add_tenant(tenant, goal=Goal.latency(1000.0),
                          policy='static:exit_index=3,threads=2')
    for number in range(4):
        server.submit('ab'[number % 2], images[number])
    server.start()
    answers = _finals(server, 4)
    assert [a.threads for a in answers] == [2] * 4  # as planned, for what the policy learns
    assert server.free_cores.jobs_narrowed == 4


def test_the_run_queue_reads_the_kernels_count(tmp_path):
    loadavg = tmp_path / 'loadavg'
    loadavg.write_text('0.36 0.40 0.45 5/345 12345\n')
    queue = RunQueue(str(loadavg))
    assert queue.available and queue.runnable() == 5
    assert queue.others(own=1) == 3  # the caller and one thread of its own left out
    assert queue.others(own=9) == 0
    assert queue.wait_for_others(4, timeout=0.0)  # already runnable: no wait
    assert not queue.wait_for_others(5, timeout=0.05)
    loadavg.write_text('garbled\n')
    assert queue.others(own=0) == 0 and queue.read_errors == 1
    queue.close()
    missing = RunQueue(str(tmp_path / 'none'))
    assert not missing.available and missing.runnable() is None and missing.others(0) == 0
    assert not missing.wait_for_others(1)  # unknown: no wait


def test_only_the_first_worker_takes_frames_from_the_source(make_server, images):
    server = make_server(workers=2, max_batch=1)
    for tenant in ('a', 'b', 'c', 'd'):
        server.add_tenant(tenant, goal=Goal.latency(25.0), policy='static:exit_index=3',
                          on_infeasible='serve_first_exit')
    pollers = set()

    def burst():
        for number in range(8):
            server.submit('abcd'[number % 4], images[number])

    source = ScriptedSource([burst])
    poll = source.poll
    source.poll = lambda: pollers.add(threading.get_ident()) or poll()
    server.attach_source(source)
    server.start()
    assert len(_finals(server, 8)) == 8
    assert server.helper_jobs >= 1
    assert pollers == {server._worker.ident}


def test_a_second_worker_stays_idle_while_one_answers_in_time(make_server, images):
    server = make_server(workers=2)
    server.add_tenant('camera', goal=Goal.latency(1000.0), queue_size=4)

    def burst():  # taken by the first worker, which starts the first frame at once
        for number in range(4):
            server.submit('camera', images[number], frame_id=str(number))

    server.attach_source(ScriptedSource([burst]))
    server.start()
    assert len(_finals(server, 4)) == 4
    assert server.helper_jobs == 0


def test_a_server_stopped_from_an_answer_callback_ends_every_worker(make_server, images):
    answered = threading.Event()
    servers, errors = [], []

    def stop_on_answer(result):
        if result.is_final and not answered.is_set():
            try:
                servers[0].stop(timeout=1.0)  # on a worker: returns without joining
            except Exception as error:  # noqa: B902 - the runtime would only log it
                errors.append(error)
            answered.set()

    server = make_server(workers=2, on_result=stop_on_answer)
    servers.append(server)
    server.add_tenant('camera', goal=Goal.latency(1000.0))
    server.start()
    workers = [server._worker] + server._helpers
    server.submit('camera', images[0])
    assert answered.wait(timeout=60)
    for thread in workers:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in workers) and not server.serving
    assert errors == []


@pytest.mark.parametrize('workers', [0, 17, True, 1.5])
def test_a_bad_worker_count_is_refused(model, profile, workers):
    with pytest.raises(ValueError, match='workers'):
        InferenceServer(model, profile, workers=workers)


def test_frames_waiting_cap_the_plan_of_the_frame_before_them(make_server, images):
    # A still clock and a 9 ms bound: alone, a frame takes the last exit. Served while an
    # older frame waits (due 3 ms earlier, e.g. another tenant's), its plan must leave that
    # frame time for its first exit, so it stops earlier.
    now = time.time()
    exits = {}
    for case in ('alone', 'behind'):
        server = make_server(clock=lambda: now)
        server.add_tenant('camera', goal=Goal.latency(9.0), policy='budget', queue_size=2)
        state = server._tenant('camera')
        if case == 'behind':
            assert server.submit('camera', images[1], stamp_s=now - 0.003)  # no worker: waits
        request = Request(tenant='camera', stamp_s=now, due_s=now + 0.009,
                          deadline_s=now + 0.009, tensor=server.to_input(images[0]),
                          goal=state.config.goal, policy=state.policy)
        exits[case] = server.serve(request).final.exit_index
    assert exits['alone'] == 3
    assert exits['behind'] < exits['alone'], exits


def test_while_frames_keep_waiting_a_plan_keeps_up_with_the_arrivals(make_server, images):
    # Frames of one stream every 2 ms with a 50 ms bound into a queue of 2: each could take a
    # deep exit alone, but while the queue overflows the plan must fit the 2 ms between
    # arrivals.
    now = [time.time()]
    exits = {}
    for case in ('alone', 'stream'):
        server = make_server(clock=lambda: now[0])
        server.add_tenant('camera', goal=Goal.latency(50.0), policy='budget', queue_size=2)
        state = server._tenant('camera')
        if case == 'stream':
            for number in range(6):
                now[0] += 0.002
                assert server.submit('camera', images[number], stamp_s=now[0])
        request = Request(tenant='camera', stamp_s=now[0], due_s=now[0] + 0.05,
                          deadline_s=now[0] + 0.05, tensor=server.to_input(images[9]),
                          goal=state.config.goal, policy=state.policy)
        exits[case] = server.serve(request).final.exit_index
    assert exits['alone'] == 3
    assert exits['stream'] < exits['alone'], exits


def test_while_queues_overflow_every_frame_of_a_batch_keeps_up_with_the_arrivals(
        make_server, images):
    # Two streams, a frame each every 4 ms, 50 ms bounds, queues of 1. Alone, each frame of
    # a batch of both could take the deepest exit; while the queues push frames out the batch
    # must fit the 2 ms between arrivals per frame, less the worker's own time per frame.
    now = [time.time()]
    targets = {}
    for case in ('calm', 'overflowing'):
        server = make_server(clock=lambda: now[0])
        for name in ('left', 'right'):
            server.add_tenant(name, goal=Goal.latency(50.0), policy='budget', queue_size=1)
        for _ in range(4 if case == 'overflowing' else 1):
            now[0] += 0.004
            for number, name in enumerate(('left', 'right')):
                assert server.submit(name, images[number], stamp_s=now[0])
        if case == 'overflowing':
            per_frame = 1e3 / 500.0 - server.frame_overhead_ms
            assert server._keep_up_ms(now[0], 1) == pytest.approx(per_frame, rel=1e-3)
            assert server._keep_up_ms(now[0], 2) == pytest.approx(
                2 * per_frame / server.executor.batch_factor(2), rel=1e-3)
        else:
            assert server._keep_up_ms(now[0], 2) == float('inf')
        job = server._next_job()
        targets[case] = sorted(row.plan.target_exit for row in job.active)
        server._finished(len(job.active))
    assert targets['calm'] == [3, 3]
    assert len(targets['overflowing']) == 2 and max(targets['overflowing']) < 3, targets


def test_a_frame_already_late_rides_in_a_batch_and_makes_plans_keep_up(
        make_server, images):
    # Under overload EDF takes the frame whose deadline has passed first. It is answered from
    # its first exit whatever it rides with, so it must not stop the frames behind it, which
    # can still be in time, from joining its batch.
    now = [time.time()]
    server = make_server(clock=lambda: now[0])
    for name in ('late', 'left', 'right'):
        server.add_tenant(name, goal=Goal.latency(50.0), policy='budget', queue_size=4,
                          on_infeasible='serve_first_exit')
    for _ in range(2):  # two frames a stream, 10 ms apart: the streams' rates are known
        assert server.submit('late', images[0], stamp_s=now[0] - 0.06)
        assert server.submit('left', images[1], stamp_s=now[0])
        assert server.submit('right', images[2], stamp_s=now[0])
        now[0] += 0.01
    assert server._keep_up_ms(now[0]) == float('inf')  # no queue overflowed
    assert not server.falling_behind
    job = server._next_job()
    # A turn that came too late says the worker falls behind: plans now keep up.
    assert server.falling_behind and server._keep_up_ms(now[0]) < float('inf')
    rows = {row.request.tenant: row for row in job.active}
    assert sorted(rows) == ['late', 'left', 'right']
    assert rows['late'].late and rows['late'].infeasible and rows['late'].plan.target_exit == 0
    assert not rows['left'].late and rows['left'].plan.target_exit > 0
    assert (server.batches, server.batched_frames) == (1, 3)
    server._finished(len(job.active))


def test_serving_freezes_what_was_loaded_before_it_once():
    # In a fresh process: this one's first start may have come before the fixtures' model.
    script = textwrap.dedent("""
        import gc
        from delen_ros.runtime import InferenceServer
        from delen_ros.runtime.collector import freeze_loaded_objects
        events = []
        server = InferenceServer.from_checkpoint(
            on_event=lambda kind, text: events.append((kind, text)))
        network = server.model.network
        assert any(obj is network for obj in gc.get_objects())
        server.start()
        # The collector's full passes no longer scan the model the worker serves.
        assert not any(obj is network for obj in gc.get_objects())
        assert freeze_loaded_objects() == 0
        server.stop(timeout=30)
        server.start()
        server.stop(timeout=30)
        kinds = [text for kind, text in events if kind == 'collector']
        assert len(kinds) == 1 and kinds[0].startswith('froze '), events
        print('ok', gc.get_freeze_count())
    """)
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('ok ')


def test_while_queues_overflow_frames_with_less_time_than_a_frame_period_give_way(
        make_server, images):
    # A 50 ms bound, a frame every 20 ms, a queue of 3, nothing served (not started).
    now = [time.time()]
    server = make_server(clock=lambda: now[0])
    server.add_tenant('camera', goal=Goal.latency(50.0), queue_size=3)
    server.add_tenant('survey', goal=Goal.accuracy(0.9), queue_size=3)
    for number in range(3):
        now[0] += 0.02
        assert server.submit('camera', images[number], stamp_s=now[0])
        assert server.submit('survey', images[number], stamp_s=now[0])
    assert server.pending('camera') == 3 and server.stats('camera').dropped_queue == 0
    now[0] += 0.02
    assert server.submit('camera', images[3], stamp_s=now[0])  # overflows: the oldest goes
    assert server.stats('camera').dropped_queue == 1
    now[0] += 0.02
    assert server.submit('camera', images[4], stamp_s=now[0])
    assert server.submit('survey', images[4], stamp_s=now[0])
    # Due within the next 20 ms: the frames 40 and 60 ms old go; the one 20 ms old stays.
    assert server.pending('camera') == 2 and server.stats('camera').dropped_queue == 3
    # Without a deadline a frame never expires: only the overflow drops one.
    assert server.pending('survey') == 3 and server.stats('survey').dropped_queue == 1
    # A second after the last overflow nothing gives way, even frames already late.
    now[0] += 1.5
    assert server.submit('camera', images[5], stamp_s=now[0])
    assert server.pending('camera') == 3 and server.stats('camera').dropped_queue == 3


def test_free_cores_narrow_plans_and_running_jobs_for_the_tasks_elsewhere(tmp_path):
    loadavg = tmp_path / 'loadavg'

    def runnable(count):
        loadavg.write_text(f'0.36 0.40 0.45 {count}/345 12345\n')

    runnable(1)  # the reader alone
    free = FreeCores(2, RunQueue(str(loadavg)))
    assert free.for_plan((1, 2), ours=0) == (1, 2) and free.plans_narrowed == 0
    runnable(2)  # our other job's thread: it narrows the plan, but is not counted
    assert free.for_plan((1, 2), ours=1) == (1,) and free.plans_narrowed == 0
    runnable(3)  # two tasks elsewhere
    assert free.for_plan((1, 2), ours=0) == (1,)
    assert free.plans_narrowed == 1 and free.runnable_elsewhere == 2
    runnable(2)  # a 2-thread job's own pool thread is not another task
    assert free.for_next_stage((1, 2), 2, ours=0) == 2 and free.jobs_narrowed == 0
    runnable(4)
    assert free.for_next_stage((1, 2), 2, ours=0) == 1 and free.jobs_narrowed == 1
    assert free.for_next_stage((1, 2), 1, ours=0) == 1 and free.jobs_narrowed == 1
    with pytest.raises(ValueError, match='cores'):
        FreeCores(0)
