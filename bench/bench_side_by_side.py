#!/usr/bin/env python3
"""
delen_server side by side with the plain rclpy node it must beat, on the same camera streams.

Processes, all real, over Fast DDS on loopback:
- a stream process publishes Fashion-MNIST test frames on every stream of a row, at the
  stream's rate, with the stream's deadline offered as a deadline QoS (best effort, keep last 2);
- the system under test, one after the other on the same streams: the floor (the plain peer
  answering without the network: the same messages, no compute), the plain peer
  (bench/plain_peer_node.py) with torch's default threads and with 1 thread, then the installed
  delen_server (one tenant per stream, ``latency_ms: 0``: the bound is the offered deadline,
  the server's default policy), and once more per --cpu-priority or --variant with those
  parameters;
- this process receives the results and times them from the image stamp to their receipt
  (in its Python callback), and to their arrival (the middleware's receive timestamp, taken
  before this process's executor runs: the server's and the transport's time alone);
- in the contention phase, one CPU-bound process per core, started and stopped here.

Rows: 30 Hz/33 ms; 50 Hz/10 ms; three tenants at once (60 Hz/16 ms, 10 Hz/100 ms,
5 Hz/200 ms); eight tenants at 30 Hz/50 ms. Phases: calm, contention, calm again. Per row and
phase: answered %, within-deadline % (of the frames published) at receipt and at arrival,
p50/p99 stamp-to-receipt latency, accuracy of the answers, mean exit. Then, calm, one 25 Hz
stream: the bare rclpy echo (bench_ros_roundtrip.py's echo node) streamed, against each
system's end-to-end time minus the compute of the exits it ran (``compute_ms`` of the answer).

Each phase lasts --frames frames of the row's fastest stream (times --scale).
Usage: bench/bench_side_by_side.py [--frames 300] [--scale 1] [--rows ...] [--systems ...]
       [--cpu-priority VALUE] [--variant PARAMETER=VALUE[,PARAMETER=VALUE...] ...]
Full run (default): about 10-15 min on 2 cores; `--scale 0.2` about 2 min.
Run it where rclpy is importable: `source tools/env.sh` (or `./delen shell`) first.
"""

import argparse
import collections
import contextlib
from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

from bench_ros_roundtrip import (ECHO_IN, ECHO_OUT, percentile, sensor_qos, server_executable,
                                 start_process, stop_process)
from delen_ros.engine import fashion_mnist, load_checkpoint
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult
from diagnostic_msgs.msg import DiagnosticArray
from plain_peer_node import input_topic, result_topic
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

HERE = Path(__file__).resolve().parent
TENANTS = tuple(f't{i}' for i in range(8))
PHASES = ('calm', 'contention', 'calm again')
START_TIMEOUT_S = 90.0
FLOOR_HZ = 25.0
FLOOR_DEADLINE_MS = 40.0


@dataclass(frozen=True)
class Stream:
    """One camera stream: the tenant it feeds, its rate and its deadline."""

    tenant: str
    rate_hz: float
    deadline_ms: float


ROWS = {
    '30hz': ('30 Hz, 33 ms', (Stream('t0', 30.0, 33.0),)),
    '50hz': ('50 Hz, 10 ms', (Stream('t0', 50.0, 10.0),)),
    'three': ('3 tenants: 60 Hz/16 ms, 10 Hz/100 ms, 5 Hz/200 ms',
              (Stream('t0', 60.0, 16.0), Stream('t1', 10.0, 100.0), Stream('t2', 5.0, 200.0))),
    'eight': ('8 tenants, 30 Hz, 50 ms', tuple(Stream(t, 30.0, 50.0) for t in TENANTS)),
}
FLOOR_ROW = ('25 Hz, 40 ms, calm', (Stream('t0', FLOOR_HZ, FLOOR_DEADLINE_MS),))


# -- the stream process --------------------------------------------------------------------

def run_streams():
    """
    Publish frames on command (JSON lines on stdin, one JSON answer per line on stdout).

    ``{"streams": [[tenant, topic, rate_hz, deadline_ms], ...]}`` (re)creates the publishers;
    ``{"run": tag, "seconds": s}`` publishes every stream at its rate for s seconds, frame_id
    ``<tag>|<test index>``, and answers the frames published per tenant.
    """
    frames, _ = fashion_mnist.load('test')
    rclpy.init()
    node = rclpy.create_node('bench_streams')
    streams: List[Tuple[str, object, float]] = []
    next_index: Dict[str, int] = collections.defaultdict(int)
    for line in sys.stdin:
        command = json.loads(line)
        if 'streams' in command:
            for _, publisher, _ in streams:
                node.destroy_publisher(publisher)
            streams = [(tenant, node.create_publisher(Image, topic, sensor_qos(deadline)),
                        1.0 / rate)
                       for tenant, topic, rate, deadline in command['streams']]
            answer = {'ok': True}
        else:
            answer = _publish_for(node, streams, frames, next_index, command['run'],
                                  command['seconds'])
        print(json.dumps(answer), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def _publish_for(node, streams, frames, next_index, tag, seconds):
    count = collections.Counter()
    start = time.monotonic()
    end = start + seconds
    # Cameras are not in sync: spread the first frames over a period.
    due = [start + (0.37 * i % 1.0) * period for i, (_, _, period) in enumerate(streams)]
    while streams:
        i = min(range(len(streams)), key=due.__getitem__)
        if due[i] >= end:
            break
        delay = due[i] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        tenant, publisher, period = streams[i]
        index = next_index[tenant] % len(frames)
        next_index[tenant] += 1
        msg = Image()
        fill_image(msg, frames[index], encoding='mono8', frame_id=f'{tag}|{index}',
                   stamp=node.get_clock().now().to_msg())
        publisher.publish(msg)
        count[tenant] += 1
        # A late camera skips frames rather than bursting to catch up.
        due[i] = max(due[i] + period, time.monotonic() - period)
    return {'published': dict(count)}


class StreamProcess:
    """Drives the stream process over its stdin and stdout."""

    def __init__(self, log):
        self.process = subprocess.Popen(
            [sys.executable, __file__, '--streams'], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ))
        self.lock = threading.Lock()

    def _ask(self, command):
        with self.lock:  # one command at a time, whichever thread asks
            self.process.stdin.write(json.dumps(command) + '\n')
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise SystemExit('the stream process ended early (see its log)')
        return json.loads(line)

    def set_streams(self, streams, topic=input_topic):
        self._ask({'streams': [[s.tenant, topic(s.tenant), s.rate_hz, s.deadline_ms]
                               for s in streams]})

    def run(self, tag, seconds):
        return self._ask({'run': tag, 'seconds': seconds})['published']

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- receiving -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One final answer as the subscriber saw it."""

    latency_ms: float
    arrival_ms: float  # stamp to the middleware's receive timestamp (no callback delay)
    exit_index: int
    correct: bool
    compute_ms: float
    deadline_ms: float
    frame: str
    received_s: float
    threads: int = 0  # intra-op threads of the job (0: the peers, which do not say)
    published_ms: float = float('nan')  # stamp to the answer's source timestamp (its write)


def _stamp_ns(header):
    return header.stamp.sec * 10 ** 9 + header.stamp.nanosec


def _published_ms(msg, info):
    source_ns = info.get('source_timestamp')
    return (source_ns - _stamp_ns(msg.header)) / 1e6 if source_ns else float('nan')


def _arrival_ms(msg, info, now_ns):
    # Fast DDS stamps reception with the system clock, as the stream stamps its images.
    received_ns = info.get('received_timestamp') or now_ns
    return (received_ns - _stamp_ns(msg.header)) / 1e6


class Receiver:
    """Collects final answers (and echoed images) by tenant and frame tag."""

    def __init__(self, labels):
        self.labels = labels
        rclpy.init()
        self.node = rclpy.create_node('bench_side_by_side')
        self.answers: Dict[Tuple[str, str], List[Answer]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        for tenant in TENANTS:
            self.node.create_subscription(InferenceResult, result_topic(tenant),
                                          self._result_callback, QoSProfile(depth=100))
        self.node.create_subscription(Image, ECHO_OUT, self._echo_callback, sensor_qos())
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self._diagnostics_callback, 10)
        self.server_values: Dict[str, str] = {}
        self.server_values_at = 0.0
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _result_callback(self, msg, info):
        if not msg.is_final:
            return
        now_ns = time.time_ns()
        tag, _, index = msg.header.frame_id.partition('|')
        label = self.labels[int(index)] if index.isdigit() else -1
        exit_index = int(msg.exit_index) if msg.num_exits else -1  # -1: no network ran
        answer = Answer((now_ns - _stamp_ns(msg.header)) / 1e6, _arrival_ms(msg, info, now_ns),
                        exit_index,
                        int(msg.class_id) == int(label), float(msg.compute_ms),
                        float(msg.deadline_ms), msg.header.frame_id, now_ns / 1e9,
                        int(msg.num_threads), _published_ms(msg, info))
        with self.lock:
            self.answers[msg.tenant, tag].append(answer)

    def _echo_callback(self, msg, info):
        now_ns = time.time_ns()
        tag, _, _ = msg.header.frame_id.partition('|')
        with self.lock:
            self.answers['echo', tag].append(
                Answer((now_ns - _stamp_ns(msg.header)) / 1e6, _arrival_ms(msg, info, now_ns),
                       -1, False, 0.0, 0.0,
                       msg.header.frame_id, now_ns / 1e9))

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name == 'delen_server':
                with self.lock:
                    self.server_values = {kv.key: kv.value for kv in status.values}
                    self.server_values_at = time.monotonic()

    def server_counters(self, after, timeout=3.0):
        """Return the server's /diagnostics values published after ``after`` (None: none came)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.server_values_at > after:
                    return dict(self.server_values)
            time.sleep(0.05)
        return None

    def of(self, tenant, tag):
        with self.lock:
            return list(self.answers.get((tenant, tag), ()))

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown()


# -- systems under test ------------------------------------------------------------------------

@dataclass(frozen=True)
class System:
    """A system under test: its label and how to start it."""

    label: str
    command: Tuple[str, ...]
    bound_from_qos: bool = False


def peer_system(threads, *, run_network=True):
    command = (sys.executable, str(HERE / 'plain_peer_node.py'), '--tenants', *TENANTS,
               '--threads', str(threads))
    if not run_network:
        return System('floor: peer without the network', command + ('--no-network',))
    label = 'peer, default threads' if threads == 0 else f'peer, {threads} thread'
    return System(label, command)


def server_system(folder, variant=(), number=0):
    """
    Return delen_server with one tenant per stream, and the variant's parameters if given.

    A variant is ((parameter, value), ...); a tenant parameter (one the server does not have
    itself) is set for every tenant.
    """
    lines = ['delen_server:', '  ros__parameters:', f'    tenants: [{", ".join(TENANTS)}]']
    label = 'delen_server'
    for parameter, value in variant:
        kind, spec = parameter_spec(parameter)
        text = _yaml_value(spec, value)
        if kind == 'tenant':
            lines += [f'    {t}.{parameter}: {text}' for t in TENANTS]
        else:
            lines.append(f'    {parameter}: {text}')
    if variant:
        label += ', ' + ', '.join(f'{parameter} {value}' for parameter, value in variant)
    lines += [f'    {tenant}.input_topic: {input_topic(tenant)}' for tenant in TENANTS]
    params = folder / f'server_{number}.yaml'
    params.write_text('\n'.join(lines) + '\n')
    return System(label, (str(server_executable()), '--ros-args', '--params-file', str(params)),
                  bound_from_qos=True)


def _variant(text):
    pairs = []
    for item in text.split(','):
        parameter, sep, value = item.partition('=')
        if not sep or not parameter:
            raise argparse.ArgumentTypeError(
                f'expected PARAMETER=VALUE[,PARAMETER=VALUE...], got {text!r}')
        pairs.append((parameter.strip(), value.strip()))
    return tuple(pairs)


def parameter_spec(name):
    """Return ('server' or 'tenant', its ParameterSpec) where delen_server has it, else None."""
    from delen_ros.nodes.parameters import SERVER_PARAMETERS, TENANT_PARAMETERS
    for kind, specs in (('server', SERVER_PARAMETERS), ('tenant', TENANT_PARAMETERS)):
        for spec in specs:
            if spec.name == name:
                return kind, spec
    return None


def _yaml_value(spec, text):
    """Write a variant's value as YAML of the parameter's type (10 for a double: 10.0)."""
    if spec.kind == 'double':
        return repr(float(text))
    if spec.kind == 'integer':
        return str(int(text))
    if spec.kind == 'bool':
        if text.lower() not in ('true', 'false'):
            raise ValueError(f'{spec.name} takes true or false, got {text!r}')
        return text.lower()
    if spec.kind == 'string_array':
        return json.dumps([text])
    return json.dumps(text)


# -- measuring -------------------------------------------------------------------------------

class Contention:
    """One CPU-bound process per core while the with-block runs."""

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
                          for _ in range(len(os.sched_getaffinity(0)))]
        return self

    def __exit__(self, *exc_info):
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


def warm_up(streams_process, receiver, streams, system, tag, warmup_s):
    """Stream until every stream is answered (with its offered bound), then warmup_s more."""
    def ready(stream):
        answers = receiver.of(stream.tenant, tag)
        if system.bound_from_qos:
            return any(abs(a.deadline_ms - stream.deadline_ms) < 1e-3 for a in answers)
        return bool(answers)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(ready(s) for s in streams):
        if time.monotonic() > deadline:  # measure anyway: the table shows what it did
            print(f'note: {system.label} did not answer every stream (with the offered '
                  f'deadline as its bound) within {START_TIMEOUT_S:.0f} s', file=sys.stderr)
            break
        streams_process.run(tag, 0.5)
    streams_process.run(tag, warmup_s)


@dataclass
class Cell:
    """What one system did on one row in one phase (all its streams pooled)."""

    published: int
    answers: List[Answer]
    in_time: int
    arrived_in_time: int
    per_stream: Dict[str, 'Cell']

    def answered_pct(self):
        return 100.0 * len(self.answers) / self.published if self.published else float('nan')

    def in_time_pct(self):
        return 100.0 * self.in_time / self.published if self.published else float('nan')

    def arrived_in_time_pct(self):
        return 100.0 * self.arrived_in_time / self.published if self.published else float('nan')


def cell(receiver, streams, tag, published):
    answers, in_time, arrived, per_stream = [], 0, 0, {}
    for stream in streams:
        got = receiver.of(stream.tenant, tag)
        met = sum(a.latency_ms <= stream.deadline_ms for a in got)
        met_arriving = sum(a.arrival_ms <= stream.deadline_ms for a in got)
        answers += got
        in_time += met
        arrived += met_arriving
        per_stream[stream.tenant] = Cell(published.get(stream.tenant, 0), got, met,
                                         met_arriving, {})
    return Cell(sum(published.get(s.tenant, 0) for s in streams), answers, in_time, arrived,
                per_stream)


def measure_system(system, rows, streams_process, receiver, args, log_path, *, prefix):
    """Run every row's phases, and the 25 Hz overhead row, against one system."""
    tags, counters = {}, {}
    with open(log_path, 'w') as log:
        process = start_process(list(system.command), log)
        try:
            for key in rows:
                _, streams = ROWS[key]
                streams_process.set_streams(streams)
                warm_up(streams_process, receiver, streams, system, f'{prefix}{key}/warm',
                        args.warmup_s)
                seconds = args.frames * args.scale / max(s.rate_hz for s in streams)
                before = _counters_now(system, receiver)
                for phase in PHASES:
                    tag = f'{prefix}{key}/{phase}'
                    if phase == 'contention':
                        with Contention():
                            tags[key, phase] = tag, streams_process.run(tag, seconds)
                    else:
                        tags[key, phase] = tag, streams_process.run(tag, seconds)
                    after = _counters_now(system, receiver)
                    counters[key, phase] = _changes(before, after)
                    before = after
            _, streams = FLOOR_ROW
            streams_process.set_streams(streams)
            warm_up(streams_process, receiver, streams, system, f'{prefix}floor/warm',
                    args.warmup_s)
            tags['floor', 'calm'] = f'{prefix}floor', streams_process.run(
                f'{prefix}floor', args.frames * args.scale / FLOOR_HZ)
            time.sleep(1.0)  # late answers
        finally:
            stop_process(process)
    if process.returncode not in (0, None):
        print(f'note: {system.label} exited with {process.returncode} (log {log_path})',
              file=sys.stderr)
    cells = {}
    for (key, phase), (tag, published) in tags.items():
        streams = FLOOR_ROW[1] if key == 'floor' else ROWS[key][1]
        cells[key, phase] = cell(receiver, streams, tag, published)
    return cells, counters


# What the server counts in /diagnostics, reported per row and phase as changes.
COUNTERS = ('helper_jobs', 'plans_narrowed_by_other_tasks', 'jobs_narrowed_by_other_tasks',
            'batches', 'preemptions', 'frames_failed')


def _counters_now(system, receiver):
    """Return the server's counters published after now (None: a peer, or none came)."""
    if not system.bound_from_qos:
        return None
    values = receiver.server_counters(after=time.monotonic())
    if values is None:
        return None
    return {name: int(values[name]) for name in COUNTERS if name in values}


def _changes(before, after):
    if before is None or after is None:
        return {}
    return {name: after[name] - before[name] for name in after if name in before}


def measure_floor(streams_process, receiver, args, log_path):
    """Stream to the bare rclpy echo at 25 Hz; stamp to receipt of the echoed images."""
    with open(log_path, 'w') as log:
        process = start_process([sys.executable, str(HERE / 'bench_ros_roundtrip.py'), '--echo'],
                                log)
        try:
            streams_process.set_streams([Stream('echo', FLOOR_HZ, FLOOR_DEADLINE_MS)],
                                        topic=lambda tenant: ECHO_IN)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not receiver.of('echo', 'warm'):
                if time.monotonic() > deadline:
                    raise SystemExit(f'the echo node never answered; log: {log_path}')
                streams_process.run('warm', 0.5)
            streams_process.run('warm', args.warmup_s)
            published = streams_process.run('echo', args.frames * args.scale / FLOOR_HZ)
            time.sleep(0.5)
        finally:
            stop_process(process)
    return [a.latency_ms for a in receiver.of('echo', 'echo')], published.get('echo', 0)


# -- report ----------------------------------------------------------------------------------

def _fmt(value, digits=1):
    return '–' if value != value else f'{value:.{digits}f}'


def _p(values, q):
    return percentile(values, q) if values else float('nan')


def detail_table(results, rows):
    lines = ['| row | system | phase | answered % | in time % | arrived in time % | p50 ms '
             '| p99 ms | accuracy % | mean exit | 2+ threads % | longest gap ms |',
             '|---' * 12 + '|']
    for key in rows:
        name, streams = ROWS[key]
        for label, cells in results.items():
            for phase in PHASES:
                lines.append(_detail_line(name, label, phase, cells[key, phase]))
                if 1 < len(streams) <= 3:  # the mixed row: each stream too
                    lines += [_detail_line(f'· {s.rate_hz:g} Hz, {s.deadline_ms:g} ms', label,
                                           phase, cells[key, phase].per_stream[s.tenant])
                              for s in streams]
    return lines


def _mean(values):
    return statistics.mean(values) if values else float('nan')


def _detail_line(name, label, phase, c):
    latency = [a.latency_ms for a in c.answers]
    inferred = [a for a in c.answers if a.exit_index >= 0]
    accuracy = 100.0 * _mean([a.correct for a in inferred])
    exits = _mean([a.exit_index for a in inferred])
    told = [a.threads for a in inferred if a.threads]
    several = 100.0 * _mean([t > 1 for t in told])
    return (f'| {name} | {label} | {phase} | {_fmt(c.answered_pct())} | '
            f'{_fmt(c.in_time_pct())} | {_fmt(c.arrived_in_time_pct())} | '
            f'{_fmt(_p(latency, 50))} | {_fmt(_p(latency, 99))} | '
            f'{_fmt(accuracy)} | {_fmt(exits, 2)} | {_fmt(several)} | '
            f'{_fmt(longest_gap_ms(c.answers), 0)} |')


def counter_table(counted, rows):
    """Markdown lines of the servers' counter changes per row and phase (none: no lines)."""
    lines = []
    for label, counters in counted.items():
        for key in rows:
            for phase in PHASES:
                changes = counters.get((key, phase))
                if changes:
                    lines.append(f'| {ROWS[key][0]} | {label} | {phase} | ' + ' | '.join(
                        str(changes.get(name, '–')) for name in COUNTERS) + ' |')
    if not lines:
        return []
    return ['| row | system | phase | ' + ' | '.join(COUNTERS) + ' |',
            '|---' * (3 + len(COUNTERS)) + '|'] + lines


def longest_gap_ms(answers):
    """Return the longest time between two answers received in a row (a stall shows here)."""
    times = sorted(a.received_s for a in answers)
    return max((b - a for a, b in zip(times, times[1:])), default=float('nan')) * 1e3


def wake_table(results, rows, phase='contention'):
    """Markdown lines: the answers' time before their write, in transport and in the callback."""
    lines = ['| row | system | stamp to written p50 / p90 ms | written to arrival p50 / p90 ms '
             '| over 3 ms % | arrival to callback p50 / p90 ms | over 3 ms % |',
             '|---' * 7 + '|']
    for key in rows:
        for label, cells in results.items():
            answers = cells[key, phase].answers
            timed = [a for a in answers if not math.isnan(a.published_ms)]
            written = [a.published_ms for a in timed]
            hop = [a.arrival_ms - a.published_ms for a in timed]
            callback = [a.latency_ms - a.arrival_ms for a in answers]
            lines.append(f'| {ROWS[key][0]} | {label} | {_spread(written)} | {_spread(hop)} | '
                         f'{_fmt(_over_pct(hop, 3.0))} | {_spread(callback)} | '
                         f'{_fmt(_over_pct(callback, 3.0))} |')
    return lines


def _spread(values):
    return f'{_fmt(_p(values, 50), 2)} / {_fmt(_p(values, 90), 2)}'


def _over_pct(values, limit_ms):
    return 100.0 * _mean([v > limit_ms for v in values])


def summary_table(results, rows, share=Cell.in_time_pct):
    labels = list(results)
    lines = ['| stream | ' + ' | '.join(labels) + ' |', '|---' * (len(labels) + 1) + '|']
    for key in rows:
        cells = [' / '.join(_fmt(share(results[label][key, phase]), 0)
                            for phase in PHASES) + ' %' for label in labels]
        lines.append(f'| {ROWS[key][0]} | ' + ' | '.join(cells) + ' |')
        streams = ROWS[key][1]
        if 1 < len(streams) <= 3:
            for stream in streams:
                parts = []
                for label in labels:
                    shares = []
                    for phase in PHASES:
                        shares.append(_fmt(share(results[label][key, phase].per_stream[
                            stream.tenant]), 0))
                    parts.append(' / '.join(shares) + ' %')
                lines.append(f'| · {stream.rate_hz:g} Hz, {stream.deadline_ms:g} ms | '
                             + ' | '.join(parts) + ' |')
    return lines


def overhead_table(results, floor):
    floor_p50, floor_p99 = _p(floor, 50), _p(floor, 99)
    lines = ['| path | e2e p50 | e2e p99 | compute p50 | compute p99 | e2e − compute p50 | '
             'e2e − compute p99 | × floor p50 | × floor p99 | mean exit |',
             '|---' * 10 + '|',
             f'| bare rclpy echo (floor) | {_fmt(floor_p50, 2)} | {_fmt(floor_p99, 2)} | | | '
             f'{_fmt(floor_p50, 2)} | {_fmt(floor_p99, 2)} | 1.0 | 1.0 | |']
    for label, cells in results.items():
        answers = cells['floor', 'calm'].answers
        e2e = [a.latency_ms for a in answers]
        compute = [a.compute_ms for a in answers]
        overhead = [a.latency_ms - a.compute_ms for a in answers]
        exits = _mean([a.exit_index for a in answers if a.exit_index >= 0])
        lines.append(
            f'| {label} | {_fmt(_p(e2e, 50), 2)} | {_fmt(_p(e2e, 99), 2)} | '
            f'{_fmt(_p(compute, 50), 2)} | {_fmt(_p(compute, 99), 2)} | '
            f'{_fmt(_p(overhead, 50), 2)} | {_fmt(_p(overhead, 99), 2)} | '
            f'{_fmt(_p(overhead, 50) / floor_p50, 2)} | {_fmt(_p(overhead, 99) / floor_p99, 2)} '
            f'| {_fmt(exits, 2)} |')
    return lines


@contextlib.contextmanager
def _log_folder(kept):
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept
        print(f'logs kept in {kept}', file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix='bench_sbs_') as folder:
        yield Path(folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=300,
                        help="frames of a row's fastest stream per phase")
    parser.add_argument('--scale', type=float, default=1.0,
                        help='multiply every phase length (0.2: a short run)')
    parser.add_argument('--warmup-s', type=float, default=2.0,
                        help='seconds streamed after the first answer, not measured')
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), default=list(ROWS))
    parser.add_argument('--systems', nargs='+', default=['floor', 'peer', 'peer1', 'server'],
                        choices=['floor', 'peer', 'peer1', 'server'],
                        help='floor: the peer without the network; peer: default threads; '
                             'peer1: 1 thread; server: delen_server')
    parser.add_argument('--cpu-priority', default=None,
                        help='run delen_server once more with this `cpu_priority` value, '
                             'e.g. nice:-10 (same as --variant cpu_priority=VALUE)')
    parser.add_argument('--variant', type=_variant, action='append', default=[],
                        metavar='PARAMETER=VALUE[,...]',
                        help='run delen_server once more with these parameters, e.g. '
                             'max_batch=1 or policy=budget,max_batch=1; a tenant parameter is '
                             'set for every tenant (skipped when the server has no such '
                             'parameter)')
    parser.add_argument('--keep-logs', type=Path, default=None, metavar='DIR',
                        help="keep every system's log and parameter file in DIR (created); "
                             'by default they go with a temporary folder')
    parser.add_argument('--streams', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.streams:
        return run_streams()

    started = time.monotonic()
    load_at_start = os.getloadavg()
    _, labels = fashion_mnist.load('test')
    exit_accuracy = load_checkpoint().metrics.get('exit_accuracy', [])
    receiver = Receiver(labels)
    results, counted = {}, {}
    with _log_folder(args.keep_logs) as folder:
        systems = [*(peer_system(1, run_network=False) for s in args.systems if s == 'floor'),
                   *(peer_system(0) for s in args.systems if s == 'peer'),
                   *(peer_system(1) for s in args.systems if s == 'peer1'),
                   *(server_system(folder) for s in args.systems if s == 'server')]
        notes = []
        variants = args.variant + ([(('cpu_priority', args.cpu_priority),)]
                                   if args.cpu_priority is not None else [])
        for number, variant in enumerate(variants, start=1):
            missing = [parameter for parameter, _ in variant
                       if parameter_spec(parameter) is None]
            if missing:
                notes.append(f'skipped {",".join(f"{p}={v}" for p, v in variant)}: this '
                             f'delen_server has no `{missing[0]}` parameter')
            else:
                try:
                    systems.append(server_system(folder, variant, number))
                except ValueError as error:
                    notes.append(f'skipped {",".join(f"{p}={v}" for p, v in variant)}: {error}')
        with open(folder / 'streams.log', 'w') as streams_log:
            streams_process = StreamProcess(streams_log)
            try:
                floor, floor_sent = measure_floor(streams_process, receiver, args,
                                                  folder / 'echo.log')
                for number, system in enumerate(systems):
                    print(f'[{time.monotonic() - started:5.0f} s] {system.label}',
                          file=sys.stderr, flush=True)
                    results[system.label], counted[system.label] = measure_system(
                        system, args.rows, streams_process, receiver, args,
                        folder / f'system_{number}.log', prefix=f'{number}:')
            finally:
                streams_process.close()
    receiver.close()

    print(f'# Side by side, {platform.node()}, {os.cpu_count()} CPUs, '
          f'{time.strftime("%Y-%m-%d %H:%M")}, load average {load_at_start[0]:.2f} at the '
          f'start, {os.getloadavg()[0]:.2f} at the end, {time.monotonic() - started:.0f} s')
    print(f'command: {" ".join(["bench/bench_side_by_side.py", *(argv or sys.argv[1:])])}')
    print(f'{args.frames * args.scale:g} frames of the fastest stream per phase; '
          f'contention: {len(os.sched_getaffinity(0))} CPU-bound processes; final-exit test '
          f'accuracy {100 * exit_accuracy[-1]:.2f} %' if exit_accuracy else '')
    for note in notes:
        print(note)
    print('\nWithin deadline (stamp to receipt), calm / contention / calm again:\n')
    print('\n'.join(summary_table(results, args.rows)))
    print("\nWithin deadline at arrival (stamp to the middleware's receive timestamp here, "
          "before this process's executor and callback run), calm / contention / calm "
          'again:\n')
    print('\n'.join(summary_table(results, args.rows, Cell.arrived_in_time_pct)))
    print('\nPer row and phase (in time and answered: % of frames published; latency, '
          'accuracy and exit: of the answers):\n')
    print('\n'.join(detail_table(results, args.rows)))
    print("\nUnder contention, where the answers' time went: stamp to the answer's write (its "
          "source timestamp), its trip to the middleware's receive timestamp here (the wake-up "
          "of its receive thread) and the wait for this process's callback; a wait over 3 ms "
          'is most likely a scheduler tick (docs/serving_path.md):\n')
    print('\n'.join(wake_table(results, args.rows)))
    counter_lines = counter_table(counted, args.rows)
    if counter_lines:
        print("\nThe server's counters over each phase (changes in its /diagnostics):\n")
        print('\n'.join(counter_lines))
    print(f'\nServing-path overhead, {FLOOR_ROW[0]}, one stream, ms (floor: {len(floor)} of '
          f'{floor_sent} echoed):\n')
    print('\n'.join(overhead_table(results, floor)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
