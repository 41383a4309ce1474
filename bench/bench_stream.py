#!/usr/bin/env python3
"""
Stream Fashion-MNIST frames at camera rates into the installed ``server``; time each answer.

One process publishes every tenant's stream (stamps taken just before publishing, deadline
QoS offered) and receives the answers; the server runs as its own process. Phases: calm,
then contention (one busy-looping process per core), then calm again. Per tenant and phase
it prints answered %, within-deadline % (stamp to receipt), p50/p99 latency, the server's
reported compute/queue/delivery, accuracy and mean exit. Late answers are split into queue,
compute, answer (to the result's write), trip and this process's own delay, with the
middleware's source and receive timestamps of each result. The frames not answered in time are
counted per second of each phase, so a burst (the onset of contention, a stall) shows apart
from a steady rate. The serving path's overhead (stamp-to-receipt minus compute) is printed
for the first phase, and per phase how far the server's ``latency_ms`` was from the
stamp-to-receipt time measured here.

    source tools/env.sh
    python bench/bench_stream.py --tenants 50:10 --seconds 5
    python bench/bench_stream.py --tenants 60:16 10:100 5:200 --seconds 5
"""

import argparse
import os
from pathlib import Path
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple

from ament_index_python.packages import get_package_prefix
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult, TenantStatus
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

BUSY = 'while True: pass'


class Answer(NamedTuple):
    """One final answer; times in s on the system clock (the stamps' clock)."""

    tenant: str
    stamp: float  # the frame's stamp, taken just before publishing
    received: float  # in this process's callback
    msg: InferenceResult
    phase: str
    label: int
    arrived: float  # the middleware's receive timestamp here
    written: float  # the server's write (the result's source timestamp)

    @property
    def latency_ms(self) -> float:
        return (self.received - self.stamp) * 1e3


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float('nan')


def parse_tenant(text):
    rate, _, deadline = text.partition(':')
    return float(rate), float(deadline)


def server_params(path, tenants, args):
    lines = ['delen_server:', '  ros__parameters:',
             f'    tenants: [{", ".join(f"t{i}" for i in range(len(tenants)))}]',
             f'    threads: {args.threads}', f'    max_batch: {args.max_batch}',
             f"    cpu_priority: '{args.cpu_priority}'"]
    if args.workers is not None:
        lines.append(f'    workers: {args.workers}')
    for number, (_, deadline) in enumerate(tenants):
        name = f't{number}'
        lines += [f'    {name}.input_topic: /bench/{name}/image',
                  f'    {name}.latency_ms: {deadline}', f"    {name}.policy: '{args.policy}'",
                  f'    {name}.input_deadline_ms: 0.0']
    path.write_text('\n'.join(lines) + '\n')


class Streams:
    """Publishers of every tenant's frames and the subscription of every answer."""

    def __init__(self, node, tenants, frames, labels):
        self.node = node
        self.frames, self.labels = frames, labels
        self.tenants = tenants
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        self.publishers = []
        self.sent = {}
        self.answers = []
        self.lock = threading.Lock()
        self.status = {}
        self.server_values = {}
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback, 10)
        for number, (_, deadline) in enumerate(tenants):
            offered = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                 reliability=ReliabilityPolicy.BEST_EFFORT,
                                 deadline=Duration(nanoseconds=int(deadline * 1e6)))
            self.publishers.append(node.create_publisher(Image, f'/bench/t{number}/image',
                                                         offered))
            node.create_subscription(InferenceResult, f'/delen/t{number}/result',
                                     self._answer_callback, 50)
            node.create_subscription(TenantStatus, f'/delen/t{number}/status',
                                     self._status_callback, 10)
        del qos

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name == 'delen_server':
                self.server_values = {kv.key: kv.value for kv in status.values}

    def _status_callback(self, msg):
        self.status[msg.tenant] = msg

    def _answer_callback(self, msg, info):
        now = time.time()
        if not msg.is_final:
            return
        # Fast DDS's receive timestamp (system clock, as the stamps): before this process's
        # executor and callback run.
        arrived = info.get('received_timestamp', 0) / 1e9 or now
        written = info.get('source_timestamp', 0) / 1e9 or arrived
        key = (msg.tenant, msg.header.frame_id)
        with self.lock:
            sent = self.sent.get(key)
            if sent is not None:
                stamp, phase, label = sent
                self.answers.append(Answer(msg.tenant, stamp, now, msg, phase, label, arrived,
                                           written))

    def stream(self, seconds, phase):
        """Publish every tenant's frames on schedule for ``seconds``."""
        start = time.perf_counter()
        periods = [1.0 / rate for rate, _ in self.tenants]
        due = [start] * len(self.tenants)
        counts = [0] * len(self.tenants)
        image = Image()
        while True:
            now = time.perf_counter()
            if now - start >= seconds:
                return counts
            number = min(range(len(due)), key=due.__getitem__)
            if due[number] > now:
                time.sleep(min(due[number] - now, 0.002))
                continue
            index = (sum(counts) * 7 + number) % len(self.frames)
            fill_image(image, self.frames[index], encoding='mono8')
            stamp = time.time()
            image.header.stamp.sec = int(stamp)
            image.header.stamp.nanosec = int((stamp % 1.0) * 1e9)
            image.header.frame_id = f'{phase}:{counts[number]}'
            with self.lock:
                self.sent[(f't{number}', image.header.frame_id)] = (
                    stamp, phase, int(self.labels[index]))
            self.publishers[number].publish(image)
            counts[number] += 1
            due[number] += periods[number]


def late_split(answer):
    """Split one answer's stamp-to-receipt time (ms): e2e, queue, compute, answer, trip, here."""
    msg = answer.msg
    e2e, arrival, write = ((t - answer.stamp) * 1e3
                           for t in (answer.received, answer.arrived, answer.written))
    return (e2e, msg.queue_ms, msg.compute_ms, write - msg.queue_ms - msg.compute_ms,
            arrival - write, e2e - arrival)


def missed_by_second(streams, phase):
    """Per second of a phase (by stamp): frames sent, and those not answered in time."""
    deadline_of = {f't{number}': deadline for number, (_, deadline) in enumerate(streams.tenants)}
    answered = {(a.tenant, a.msg.header.frame_id): a.latency_ms for a in streams.answers
                if a.phase == phase}
    sent = [(key, stamp) for key, (stamp, sent_phase, _) in streams.sent.items()
            if sent_phase == phase]
    if not sent:
        return []
    start = min(stamp for _, stamp in sent)
    seconds = [[0, 0] for _ in range(int(max(stamp for _, stamp in sent) - start) + 1)]
    for key, stamp in sent:
        counts = seconds[int(stamp - start)]
        counts[0] += 1
        counts[1] += answered.get(key, float('inf')) > deadline_of[key[0]]
    return seconds


def report(streams, counts_by_phase, phases):
    print('| tenant | phase | sent | answered % | in deadline % | p50 ms | p99 ms | '
          'compute p50 | queue p50 | delivery | accuracy % | mean exit |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    overhead = []
    for number, (rate, deadline) in enumerate(streams.tenants):
        name = f't{number}'
        for phase in phases:
            answers = [a for a in streams.answers if a.tenant == name and a.phase == phase]
            sent = counts_by_phase[phase][number]
            latency = [a.latency_ms for a in answers]
            within = sum(value <= deadline for value in latency)
            compute = [a.msg.compute_ms for a in answers]
            if phase == phases[0]:
                overhead += [a.latency_ms - a.msg.compute_ms for a in answers]
            accuracy = [a.msg.class_id == a.label for a in answers]
            print(f'| {name} {rate:g} Hz/{deadline:g} ms | {phase} | {sent} | '
                  f'{100 * len(answers) / max(sent, 1):.1f} | {100 * within / max(sent, 1):.1f} '
                  f'| {percentile(latency, 50):.2f} | {percentile(latency, 99):.2f} | '
                  f'{percentile(compute, 50):.2f} | '
                  f'{percentile([a.msg.queue_ms for a in answers], 50):.2f} | '
                  f'{percentile([a.msg.delivery_ms for a in answers], 50):.2f} | '
                  f'{100 * statistics.mean(accuracy) if accuracy else float("nan"):.1f} | '
                  f'{statistics.mean(a.msg.exit_index for a in answers) if answers else 0:.2f} |')
    print('\nLate answers (past the deadline at receipt), means in ms that add up to e2e: '
          'queue (stamp to the worker starting), compute (the stages run), answer (compute '
          "end to the result's write: its source timestamp), trip (write to arrival here), "
          "here (arrival to this process's callback)\n")
    print('| tenant | phase | late | arrived late | e2e | queue | compute | answer | trip '
          '| here |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for number, (rate, deadline) in enumerate(streams.tenants):
        name = f't{number}'
        for phase in phases:
            late = [late_split(a) for a in streams.answers
                    if a.tenant == name and a.phase == phase and a.latency_ms > deadline]
            if late:
                means = ' | '.join(f'{statistics.mean(parts):.2f}' for parts in zip(*late))
                arrived_late = sum(e2e - here > deadline for e2e, *_, here in late)
                print(f'| {name} {rate:g} Hz/{deadline:g} ms | {phase} | {len(late)} | '
                      f'{arrived_late} | {means} |')
    print('\nFrames not answered in time (late or never), per second of each phase, all '
          'tenants: missed/sent\n')
    for phase in phases:
        seconds = missed_by_second(streams, phase)
        print(f'- {phase}: ' + ' '.join(f'{missed}/{sent}' for sent, missed in seconds))
    print()
    for name, status in sorted(streams.status.items()):
        print(f'{name} server counts: received {status.frames_received}, served '
              f'{status.frames_served}, dropped {status.frames_dropped} (queue '
              f'{status.dropped_queue}, infeasible {status.dropped_infeasible}), rejected '
              f'{status.frames_rejected}, failed {status.frames_failed}')
    values = streams.server_values
    keys = ('delivery_ms', 'intake_wait_ms_p50', 'worker_waits', 'worker_wakeups',
            'frames_taken_by_worker', 'workers', 'helper_jobs', 'preemptions', 'batches',
            'batched_frames', 'frames_failed', 'cpu_priority', 'gc_idle_passes',
            'gc_overdue_passes', 'gc_longest_pass_ms', 'worker_busy_s', 'worker_on_cpu_pct',
            'worker_runnable_pct', 'worker_asleep_pct', 'worker_asleep_ms_p99',
            'worker_frame_overhead_ms', 'helpers_busy_s', 'helpers_on_cpu_pct',
            'helpers_runnable_pct', 'helpers_asleep_pct', 'falling_behind')
    print('server: ' + ', '.join(f'{key} {values[key]}' for key in keys if key in values))
    print(f'\nserving-path overhead ({phases[0]}: stamp-to-receipt - compute): '
          f'p50 {percentile(overhead, 50):.2f} ms, p99 {percentile(overhead, 99):.2f} ms')
    errors = {phase: [] for phase in phases}
    for answer in streams.answers:
        if answer.phase in errors:  # not the warm-up's
            errors[answer.phase].append(answer.latency_ms - answer.msg.latency_ms)
    print("the server's latency_ms against stamp-to-receipt here (receipt - reported; over 0: "
          'the server reported less than a subscriber saw), p50 / p99 ms: ' + ', '.join(
              f'{phase} {percentile(values, 50):.2f} / {percentile(values, 99):.2f}'
              for phase, values in errors.items()))


def spin(executor):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tenants', nargs='+', default=['50:10'], help='RATE_HZ:DEADLINE_MS')
    parser.add_argument('--seconds', type=float, default=5.0, help='length of each phase')
    parser.add_argument('--policy', default='budget')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--max-batch', type=int, default=8)
    parser.add_argument('--cpu-priority', default='none')
    parser.add_argument('--workers', type=int, default=None,
                        help="serving threads (default: the server's)")
    parser.add_argument('--executor', default='single', choices=('single', 'multi'))
    parser.add_argument('--phases', nargs='+', default=['calm', 'contention', 'calm_again'])
    args = parser.parse_args(argv)
    tenants = [parse_tenant(t) for t in args.tenants]
    frames, labels = fashion_mnist.load('test')
    frames, labels = frames[:500], labels[:500]
    rclpy.init()
    node = rclpy.create_node('bench_stream')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    streams = Streams(node, tenants, frames, labels)
    folder = Path(tempfile.mkdtemp(prefix='bench_stream_'))
    params = folder / 'server.yaml'
    server_params(params, tenants, args)
    log = open(folder / 'server.log', 'w')
    server = subprocess.Popen(
        [str(Path(get_package_prefix('delen_ros'), 'lib', 'delen_ros', 'server')),
         '--executor', args.executor, '--ros-args', '--params-file', str(params)],
        stdout=log, stderr=subprocess.STDOUT)
    busy = []
    try:
        deadline = time.monotonic() + 60
        while not streams.answers and time.monotonic() < deadline:
            streams.stream(0.5, 'warmup')
        if not streams.answers:
            raise SystemExit(f'no answer from the server; log: {folder / "server.log"}')
        streams.stream(2.0, 'warmup')
        print(f'# {len(tenants)} tenant(s) {args.tenants}, {args.seconds:g} s per phase, '
              f'policy {args.policy}, max_batch {args.max_batch}, workers '
              f'{args.workers or "default"}, cpu_priority {args.cpu_priority}, {args.executor} '
              f'executor, {os.cpu_count()} CPUs, load before '
              f'{os.getloadavg()[0]:.2f}, {time.strftime("%Y-%m-%d %H:%M")}\n')
        counts = {}
        for phase in args.phases:
            if phase == 'contention':
                busy = [subprocess.Popen([sys.executable, '-c', BUSY])
                        for _ in range(os.cpu_count())]
            counts[phase] = streams.stream(args.seconds, phase)
            for process in busy:
                process.kill()
                process.wait()
            busy = []
            time.sleep(0.3)
        report(streams, counts, args.phases)
    finally:
        for process in busy:
            process.kill()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        log.close()
        # Stop the spinning thread before exit: a daemon thread still inside rcl when the
        # interpreter finalizes aborts the process ('terminate called without an active
        # exception').
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
