#!/usr/bin/env python3
"""
Soak and fuzz delen_server across processes: bad images, random parameters, 10x overload.

The installed `server` runs with two tenants: t0 with a latency goal (50 ms bound), t1 with an
accuracy goal and no latency bound (its publisher offers no deadline). From other processes:

1. images: every class of test/adversarial.py (malformed and odd-but-valid, at least 35),
   --rounds times, one at a time; each must be counted (frames_received), rejected ones as
   rejected, valid ones answered; the server must stay up;
2. parameter fuzz: every writable parameter the server lists (ListParameters and
   DescribeParameters, so parameters added later are fuzzed too) gets values of its type in
   and out of range, of other types, and policy strings, through the parameter services,
   while both tenants stream at 30 Hz; then both tenants must answer with the fuzzed values
   in place (reported) and after the starting values are restored (required);
3. overload: both tenants at --overload-hz (10x what the server answers) for --overload-s;
   the server's RSS is sampled (psutil); then both stream at 30 Hz and the time to the first
   answer within bound is the recovery time.

A crashed server is counted, its log kept, and a new one started for the next part.
Prints a markdown table: classes tried, crashes, frames uncounted (published against
frames_received + frames_missed of TenantStatus; frames_missed includes the frames_lost DDS
reports), RSS growth, answered share per tenant,
recovery time.

Usage: bench/bench_soak.py [--rounds 2] [--overload-s 60] [--overload-hz 500] [--seed 1]
Short run: --rounds 1 --overload-s 10 (about 2 min). Needs `source tools/env.sh` first.
"""

import argparse
import collections
import os
from pathlib import Path
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench_ros_roundtrip import sensor_qos, server_executable, start_process, stop_process
from bench_side_by_side import Receiver, Stream, StreamProcess
from delen_ros.engine import fashion_mnist
from plain_peer_node import input_topic
import psutil
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from sensor_msgs.msg import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
import adversarial  # noqa: E402, I100 - shared with the always-run tests, in test/

LATENCY_TENANT, ACCURACY_TENANT = 't0', 't1'
LATENCY_BOUND_MS = 50.0
MIN_ACCURACY = 0.93
CALM_HZ = 30.0
START_TIMEOUT_S = 90.0
SERVICE_TIMEOUT_S = 10.0
RECOVERY_MAX_S = 20.0
CRASH_WAIT_S = 30.0


def server_parameters(path):
    path.write_text(f"""delen_server:
  ros__parameters:
    tenants: [{LATENCY_TENANT}, {ACCURACY_TENANT}]
    status_period_s: 0.1
    {LATENCY_TENANT}.input_topic: {input_topic(LATENCY_TENANT)}
    {LATENCY_TENANT}.latency_ms: {LATENCY_BOUND_MS}
    {ACCURACY_TENANT}.input_topic: {input_topic(ACCURACY_TENANT)}
    {ACCURACY_TENANT}.goal: accuracy
    {ACCURACY_TENANT}.min_accuracy: {MIN_ACCURACY}
    {ACCURACY_TENANT}.input_deadline_ms: 0.0
""")
    return path


STREAMS = (Stream(LATENCY_TENANT, CALM_HZ, LATENCY_BOUND_MS),
           Stream(ACCURACY_TENANT, CALM_HZ, None))


class Server:
    """The server process, restarted after a crash; crashes are counted by part."""

    def __init__(self, folder):
        self.folder = folder
        self.params = server_parameters(folder / 'server.yaml')
        self.crashes = collections.Counter()
        self.causes = []
        self.starts = 0
        self.process = None
        self.start()

    def start(self):
        self.starts += 1
        self.log_path = self.folder / f'server_{self.starts}.log'
        self.log = open(self.log_path, 'w')
        self.process = start_process([str(server_executable()), '--ros-args', '--params-file',
                                      str(self.params)], self.log)

    def check(self, part, cause=''):
        """Count a crash (and start again) if the process has died; True when it was up."""
        if self.process.poll() is None:
            return True
        self.crashes[part] += 1
        self.causes.append(f'{part}: {cause}' if cause else part)
        self.log.close()
        kept = Path.cwd() / f'bench_soak_crash_{self.starts}.log'
        shutil.copy(self.log_path, kept)
        print(f'server crashed during {part} {cause} (exit {self.process.returncode}); '
              f'log: {kept}', file=sys.stderr)
        self.start()
        return False

    def stop(self):
        stop_process(self.process)
        self.log.close()


class Probe(adversarial.ServerWatch):
    """Status, parameter services and a publisher for single bad images (this process)."""

    def __init__(self, receiver):
        super().__init__(receiver.node, (LATENCY_TENANT, ACCURACY_TENANT))
        self.node = receiver.node
        self.images = self.node.create_publisher(Image, input_topic(LATENCY_TENANT),
                                                 sensor_qos(LATENCY_BOUND_MS))


def wait_serving(streams, receiver, tag, timeout=START_TIMEOUT_S):
    """Stream until both tenants are answered; False if they are not within timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(receiver.of(s.tenant, tag) for s in STREAMS):
            return True
        streams.run(tag, 0.5)
    return False


# -- part 1: images ------------------------------------------------------------------------

def soak_images(server, probe, streams, receiver, frames, rounds):
    """Send every class one at a time; return (tried, classes, outcomes not as expected)."""
    classes = adversarial.image_classes()
    tried, unexpected = 0, []
    for round_number in range(rounds):
        tag = f'class{round_number}'
        probe.fresh_status(LATENCY_TENANT)  # counts every frame sent so far
        for number, image_class in enumerate(classes):
            outcome = adversarial.send_class(
                image_class, frames[number], f'{tag}|{number}', publish=probe.images.publish,
                status=lambda: probe.latest_status(LATENCY_TENANT),
                answered=lambda frame_id: any(a.frame == frame_id for a in
                                              receiver.of(LATENCY_TENANT, tag)),
                stamp=lambda: probe.node.get_clock().now().to_msg())
            tried += 1
            if not server.check('images', image_class.name):
                outcome = 'crash'
                wait_serving(streams, receiver, f'restart{server.starts}')
                probe.fresh_status(LATENCY_TENANT)
            if outcome != image_class.expect:
                unexpected.append(f'{image_class.name}: {outcome}')
    return tried, len(classes), unexpected


# -- part 2: parameter fuzz ----------------------------------------------------------------

def fuzz_parameters(server, probe, streams, receiver, rng):
    """Throw fuzz values at every writable parameter while both tenants stream."""
    descriptors = {n: d for n, d in probe.descriptors().items() if not d.read_only}
    requests = adversarial.fuzz_requests(descriptors, rng)
    start_values = probe.call(GetParameters, GetParameters.Request(names=list(descriptors)))
    originals = dict(zip(descriptors, start_values.values))
    calls = collections.Counter()
    stop = threading.Event()
    streamer = threading.Thread(target=_stream_until, args=(streams, 'fuzz', stop),
                                daemon=True)
    streamer.start()
    try:
        for request in requests:
            answer = probe.call(SetParameters, adversarial.set_request(request),
                                timeout=SERVICE_TIMEOUT_S, process=server.process)
            if answer is None:
                calls['no answer'] += 1
                try:  # a dying server takes a while to exit: blame the right request
                    server.process.wait(timeout=CRASH_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
            else:
                calls['accepted' if all(r.successful for r in answer.results)
                      else 'refused'] += 1
            if not server.check('parameter fuzz', ', '.join(f'{n}={v!r}' for n, v in request)):
                calls['crash'] += 1
                wait_serving(streams, receiver, f'restart{server.starts}')
    finally:
        stop.set()
        streamer.join()
    fuzzed = _answered(streams, receiver, 'after fuzz')
    restore = SetParameters.Request(parameters=[
        ParameterMsg(name=name, value=value) for name, value in originals.items()])
    restored = probe.call(SetParameters, restore)
    restored_ok = restored is not None and all(r.successful for r in restored.results)
    recovered = _answered(streams, receiver, 'restored')
    return {'parameters': len(descriptors), 'calls': len(requests), **calls,
            'answered with fuzzed values': fuzzed, 'restore accepted': restored_ok,
            'answered after restore': recovered}


def _stream_until(streams, tag, stop):
    while not stop.is_set():
        streams.run(tag, 0.5)


def _answered(streams, receiver, tag, seconds=3.0):
    published = streams.run(tag, seconds)
    time.sleep(0.5)
    return {s.tenant: f'{len(receiver.of(s.tenant, tag))}/{published.get(s.tenant, 0)}'
            for s in STREAMS}


# -- part 3: overload ----------------------------------------------------------------------

def overload(server, probe, streams, receiver, seconds, rate_hz):
    """Both tenants at rate_hz for seconds; RSS, loss accounting, shares, recovery."""
    streams.set_streams([Stream(s.tenant, rate_hz, s.deadline_ms) for s in STREAMS])
    before = {s.tenant: probe.fresh_status(s.tenant) for s in STREAMS}
    process = psutil.Process(server.process.pid)
    rss = [process.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            try:
                rss.append(process.memory_info().rss)
            except psutil.Error:
                return
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        published = streams.run('overload', seconds)
    finally:
        stop.set()
        sampler.join()
    streams.set_streams(STREAMS)
    recovery_start = time.time()
    recovery_published = collections.Counter()
    while time.time() < recovery_start + RECOVERY_MAX_S and not all(
            _in_time(receiver.of(s.tenant, 'recovery'), s.deadline_ms) for s in STREAMS):
        recovery_published.update(streams.run('recovery', 0.5))
    time.sleep(1.0)
    after = {s.tenant: probe.fresh_status(s.tenant) for s in STREAMS}
    server.check('overload')
    result = {'rss': rss, 'published': published, 'recovery_published': recovery_published}
    answers = {s.tenant: receiver.of(s.tenant, 'overload') for s in STREAMS}
    total = sum(len(a) for a in answers.values())
    for s in STREAMS:
        got = answers[s.tenant]
        sent = published.get(s.tenant, 0) + recovery_published.get(s.tenant, 0)
        b, a = before[s.tenant], after[s.tenant]
        counted = lost = missed = None
        if a is not None and b is not None:
            counted = a.frames_received - b.frames_received
            lost = a.frames_lost - b.frames_lost
            missed = a.frames_missed - b.frames_missed
        bound = s.deadline_ms
        in_time = _in_time(receiver.of(s.tenant, 'recovery'), bound)
        result[s.tenant] = {
            'published': sent, 'received': counted, 'lost counted': lost, 'missed': missed,
            'uncounted': None if counted is None else sent - counted - missed,
            'answers': len(got), 'share': len(got) / total if total else float('nan'),
            'in time': (statistics.mean(x.latency_ms <= bound for x in got)
                        if bound and got else None),
            'recovery_s': (min(x.received_s for x in in_time) - recovery_start
                           if in_time else None)}
    return result


def _in_time(answers, bound_ms):
    return [a for a in answers if bound_ms is None or a.latency_ms <= bound_ms]


# -- report --------------------------------------------------------------------------------

def _pct(value):
    return '–' if value is None or value != value else f'{100 * value:.1f} %'


def report(args, images, fuzz, load, result, server, started):
    tried, classes, unexpected = images
    rss = result['rss']
    growth = (max(rss[2:] or rss) - rss[0]) / rss[0] if rss else None
    end_growth = (rss[-1] - rss[0]) / rss[0] if rss else None
    t0, t1 = result[LATENCY_TENANT], result[ACCURACY_TENANT]
    print(f'# Soak, {platform.node()}, {os.cpu_count()} CPUs, {time.strftime("%Y-%m-%d %H:%M")}, '
          f'load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, '
          f'{time.monotonic() - started:.0f} s')
    print(f'command: bench/bench_soak.py {" ".join(sys.argv[1:])}\n')
    print('| check | result |')
    print('|---|---|')
    print(f'| image classes tried | {classes} classes × {args.rounds} rounds = {tried} frames '
          f'(one at a time) |')
    print(f'| outcomes not as expected | {len(unexpected)}'
          + (f': {"; ".join(unexpected)}' if unexpected else '') + ' |')
    print(f'| crashes: images / parameter fuzz / overload | {server.crashes["images"]} / '
          f'{server.crashes["parameter fuzz"]} / {server.crashes["overload"]} |')
    if server.causes:
        print(f'| crash causes | {"; ".join(server.causes)} |')
    print(f'| parameter fuzz | {fuzz["parameters"]} writable parameters, {fuzz["calls"]} '
          f'set requests: {fuzz.get("accepted", 0)} accepted, {fuzz.get("refused", 0)} '
          f'refused, {fuzz.get("no answer", 0)} unanswered ({fuzz.get("crash", 0)} of them '
          f'ended the server) |')
    print(f'| answered with the fuzzed values in place (t0, t1) | '
          f'{", ".join(fuzz["answered with fuzzed values"].values())} |')
    print(f'| starting values restored / answered after (t0, t1) | '
          f'{"yes" if fuzz["restore accepted"] else "NO"} / '
          f'{", ".join(fuzz["answered after restore"].values())} |')
    for name, t in ((f'{LATENCY_TENANT} (latency, {LATENCY_BOUND_MS:g} ms)', t0),
                    (f'{ACCURACY_TENANT} (accuracy ≥ {MIN_ACCURACY}, no bound)', t1)):
        print(f'| overload {name}: published / received / missed (of them lost in DDS) / '
              f'uncounted | {t["published"]} / {t["received"]} / {t["missed"]} '
              f'({t["lost counted"]}) / **{t["uncounted"]}** |')
        recovery = (f'none in time within {RECOVERY_MAX_S:g} s' if t['recovery_s'] is None
                    else f'{t["recovery_s"]:.2f} s')
        print(f'| overload {name}: answers, share, in time; recovery | {t["answers"]}, '
              f'**{_pct(t["share"])}**, {_pct(t["in time"])}; {recovery} |')
    rate = {k: v / args.overload_s for k, v in result['published'].items()}
    answered = (t0['answers'] + t1['answers']) / args.overload_s
    print(f'| overload: offered per tenant; answered in all (frames/s) | '
          f'{", ".join(f"{k} {v:.0f}" for k, v in sorted(rate.items()))}; {answered:.0f} '
          f'({sum(rate.values()) / answered if answered else float("inf"):.1f}× overload) |')
    if rss:
        print(f'| server RSS over the overload | {rss[0] / 2**20:.1f} → {rss[-1] / 2**20:.1f} MiB '
              f'(max {max(rss) / 2**20:.1f}); growth **{_pct(end_growth)}** at the end, '
              f'{_pct(growth)} at the peak, {len(rss)} samples |')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=2, help='passes over the image classes')
    parser.add_argument('--overload-s', type=float, default=60.0)
    parser.add_argument('--overload-hz', type=float, default=500.0,
                        help='frames/s per tenant during the overload')
    parser.add_argument('--seed', type=int, default=1, help='of the parameter fuzz')
    args = parser.parse_args(argv)
    started = time.monotonic()
    load = os.getloadavg()
    frames, labels = fashion_mnist.load('test')
    receiver = Receiver(labels)
    probe = Probe(receiver)
    with tempfile.TemporaryDirectory(prefix='bench_soak_') as folder:
        folder = Path(folder)
        server = Server(folder)
        with open(folder / 'streams.log', 'w') as streams_log:
            streams = StreamProcess(streams_log)
            try:
                streams.set_streams(STREAMS)
                if not wait_serving(streams, receiver, 'warm'):
                    raise SystemExit(f'the server never answered; log:\n'
                                     f'{server.log_path.read_text()[-2000:]}')
                print(f'[{time.monotonic() - started:4.0f} s] images', file=sys.stderr)
                images = soak_images(server, probe, streams, receiver, frames, args.rounds)
                print(f'[{time.monotonic() - started:4.0f} s] parameter fuzz', file=sys.stderr)
                fuzz = fuzz_parameters(server, probe, streams, receiver, random.Random(args.seed))
                print(f'[{time.monotonic() - started:4.0f} s] overload', file=sys.stderr)
                result = overload(server, probe, streams, receiver, args.overload_s,
                                  args.overload_hz)
            finally:
                streams.close()
                server.stop()
    receiver.close()
    report(args, images, fuzz, load, result, server, started)
    return 0


if __name__ == '__main__':
    sys.exit(main())
