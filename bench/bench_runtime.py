#!/usr/bin/env python3
"""
Benchmark the Dělen runtime on the shipped model: its own decision overhead, and queueing.

1. Decision overhead per request, model compute excluded, two ways:
   - the decision code paths timed directly: scheduler put + get, policy plan, the
     feasibility check and ConditionalExecutor.execute driven by a network whose stages
     return precomputed logits (so everything but the model runs: calibrated confidence,
     expected accuracy, cost predictions, ExitStatus, conditions, energy accounting);
   - the whole serve path on the real network (InferenceServer.serve: plan, execute,
     result, statistics, policy.observe) minus the time spent inside the network's stages.
   - the decision with a family of 1, 2 and 3 models (the shipped anytime model, then the
     shipped small and medium traditional ones): scheduler put + get, the plan over
     model x exit x threads (plan-first, as the server runs it) and feasibility.
2. Queueing with 1, 3 and 8 tenants, each a camera thread submitting Fashion-MNIST frames at
   a fixed rate into a queue of 2 under a latency bound: served / dropped / infeasible and
   latency p50 / p99 from the source stamp.

Usage: bench/bench_runtime.py [--requests N] [--seconds S] [--fps F] [--bound-ms B]
"""

import argparse
from dataclasses import fields
import os
import platform
import statistics
import threading
import time

from delen_ros.engine import fashion_mnist, load_checkpoint, normalize_images
from delen_ros.engine.profiling import load_profile
from delen_ros.runtime import (ConditionalExecutor, EdfScheduler, ExitStatus, Goal,
                               InferenceServer, make_policy, Request, RequestContext)
import numpy as np
import torch

STATUS_FIELDS = tuple(f.name for f in fields(ExitStatus))


class ReplayNetwork:
    """Stands in for the network: each step returns logits computed beforehand."""

    def __init__(self, frames):
        self.frames = frames  # per frame, the logits of every exit
        self.num_exits = len(frames[0])
        self.count = 0

    def begin(self, x):
        self.count += 1
        return [0, self.frames[self.count % len(self.frames)]]

    def step(self, state, *, evaluate_head=True):
        index = state[0]
        state[0] += 1
        return state[1][index] if evaluate_head or index == self.num_exits - 1 else None


def _us(samples):
    return 1e6 * statistics.median(samples), 1e6 * float(np.percentile(samples, 99))


def decision_paths(model, profile, images, requests):
    """Median/p99 microseconds of each path per request, for each policy and goal."""
    server = InferenceServer(model, profile, threads=1)
    spec = model.config.input_spec
    with torch.inference_mode():
        all_logits = [model.network(normalize_images(images[i:i + 1], spec))
                      for i in range(256)]
    cases = [('static:exit_index=3', Goal.latency(1e4)),
             ('confidence:threshold=0.9', Goal.latency(1e4)),
             ('budget', Goal.latency(1e4)),
             ('budget', Goal.accuracy(0.92)),
             ('budget', Goal.energy(1e5, latency_ms=1e4)),
             ('coordinated', Goal.latency(1e4)),
             ('coordinated', Goal.latency(10.0)),
             ('coordinated', Goal.accuracy(0.92)),
             ('coordinated', Goal.energy(1e5, latency_ms=1e4))]
    rows = []
    for spec_text, goal in cases:
        policy = make_policy(spec_text)
        scheduler = EdfScheduler()
        scheduler.add_tenant('t', 2)
        samples = {'scheduler put+get': [], 'plan + feasibility': [],
                   'ExitStatus + should_stop': [], 'execute bookkeeping': []}
        exits = []
        x = torch.zeros(1)
        executor = ConditionalExecutor(ReplayNetwork(all_logits), profile, cost=server.cost)
        for run in range(requests + 200):
            start = time.perf_counter()
            scheduler.put(Request(tenant='t', stamp_s=0.0, due_s=0.01, deadline_s=0.01,
                                  tensor=x, goal=goal, policy=policy))
            request = scheduler.get_nowait()
            middle = time.perf_counter()
            context = RequestContext(
                tenant='t', goal=goal, num_exits=profile.num_exits, queue_ms=0.0,
                remaining_ms=goal.latency_ms or float('inf'),
                energy_budget_mj=goal.energy_mj or float('inf'), default_threads=1,
                thread_counts=server.cost.thread_counts, cost=server.cost, profile=profile)
            plan = policy.plan(context)
            first = server.cost.expected(0, plan.threads)
            feasible = (first.latency_ms <= context.remaining_ms
                        and first.energy_mj <= context.energy_budget_mj)
            planned = time.perf_counter()
            execution = executor.execute(request.tensor, plan=plan, goal=goal,
                                         should_stop=policy.should_stop)
            done = time.perf_counter()
            # The conditions part of execute, re-run alone on the statuses it built.
            values_of = [tuple(getattr(status, name) for name in STATUS_FIELDS)
                         for status in execution.exits]
            again = time.perf_counter()
            for values in values_of:
                status = ExitStatus(*values)
                if plan.target_exit is None:
                    policy.should_stop(status)
            conditions = time.perf_counter() - again
            assert feasible
            if run >= 200:
                samples['scheduler put+get'].append(middle - start)
                samples['plan + feasibility'].append(planned - middle)
                samples['ExitStatus + should_stop'].append(conditions)
                samples['execute bookkeeping'].append(done - planned - conditions)
                exits.append(execution.final.exit_index)
        decision = [a + b + c for a, b, c in zip(*list(samples.values())[:3])]
        total = [d + e for d, e in zip(decision, samples['execute bookkeeping'])]
        rows.append((spec_text, str(goal), float(np.mean(exits)),
                     {name: _us(values) for name, values in samples.items()},
                     _us(decision), _us(total)))
    return rows


def family_decisions(requests):
    """Median/p99 us of scheduler + plan + feasibility with 1, 2 and 3 models, per goal."""
    server = InferenceServer.from_checkpoint(
        models=['fmnist_small_resnet', 'fmnist_medium_resnet'], threads=1)
    family = tuple(server.served_model(info.name) for info in server.models())
    goals = (Goal.latency(1e4), Goal.latency(10.0), Goal.latency(2.0), Goal.accuracy(0.92),
             Goal.energy(1e5, latency_ms=1e4))
    rows = []
    x = torch.zeros(1)
    for count in (1, 2, 3):
        models = family[:count]
        first = models[0]
        for goal in goals:
            policy = make_policy('coordinated')
            policy.attach(first.profile)
            scheduler = EdfScheduler()
            scheduler.add_tenant('t', 2)
            samples, chosen = [], []
            for run in range(requests + 200):
                start = time.perf_counter()
                scheduler.put(Request(tenant='t', stamp_s=0.0, due_s=0.01, deadline_s=0.01,
                                      tensor=x, goal=goal, policy=policy))
                request = scheduler.get_nowait()
                context = RequestContext(
                    tenant='t', goal=request.goal, num_exits=first.num_exits, queue_ms=0.0,
                    remaining_ms=goal.latency_ms or float('inf'),
                    energy_budget_mj=goal.energy_mj or float('inf'), default_threads=1,
                    thread_counts=first.cost.thread_counts, cost=first.cost,
                    profile=first.profile, stages=first.executor, models=models)
                plan = policy.plan(context)
                served = first if plan.model is None else server.served_model(plan.model)
                least = served.cost.expected(0, plan.threads)
                feasible = least.latency_ms <= context.remaining_ms
                done = time.perf_counter()
                if run >= 200:
                    samples.append(done - start)
                    chosen.append((served.name, plan.target_exit, plan.threads, feasible))
            common = max(set(chosen), key=chosen.count)
            rows.append((count, str(goal), _us(samples), common))
    return rows


def serve_overhead(model, profile, images, requests):
    """Per request: whole serve path, time inside network stages, and the difference (ms)."""
    spec = model.config.input_spec
    server = InferenceServer(model, profile, threads=1)
    rows = []
    for policy, goal in (('static:exit_index=3', Goal.latency(1e4)),
                         ('budget', Goal.accuracy(0.92))):
        name = f'{policy}/{goal.kind.value}'
        server.add_tenant(name, goal=goal, policy=policy, queue_size=1)
        totals, inside, exits = [], [], []
        inputs = normalize_images(images[:256], spec)
        for run in range(requests + 100):
            request = Request(tenant=name, stamp_s=time.time(), due_s=0.0, deadline_s=None,
                              tensor=inputs[run % 256:run % 256 + 1], goal=goal,
                              policy=server._tenant(name).policy)
            start = time.perf_counter()
            execution = server.serve(request)
            elapsed = time.perf_counter() - start
            if run >= 100:
                totals.append(elapsed)
                inside.append(execution.model_ms / 1e3)
                exits.append(execution.final.exit_index)
        overhead = [t - m for t, m in zip(totals, inside)]
        rows.append((name, float(np.mean(exits)), _us(totals), _us(inside), _us(overhead)))
        server.results()
    return rows


def raw_stages(model, images, requests):
    """Median ms of the bare stage loop to the last exit, every head evaluated."""
    network = model.network
    inputs = normalize_images(images[:256], model.config.input_spec)
    samples = []
    for run in range(requests + 100):
        start = time.perf_counter()
        state = network.begin(inputs[run % 256:run % 256 + 1])
        while not state.done:
            network.step(state)
        if run >= 100:
            samples.append(time.perf_counter() - start)
    return _us(samples)


def queueing(model, profile, images, tenants, seconds, fps, bound_ms):
    """Run `tenants` cameras at `fps` each for `seconds`; return the aggregate statistics."""
    server = InferenceServer(model, profile, threads=1)
    names = [f'camera{i}' for i in range(tenants)]
    for name in names:
        server.add_tenant(name, goal=Goal.latency(bound_ms), policy='budget', queue_size=2)
    stop = threading.Event()

    def camera(name, offset):
        period = 1.0 / fps
        next_time = time.perf_counter() + offset * period / tenants
        index = offset * 997
        while not stop.is_set():
            delay = next_time - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            server.submit(name, images[index % len(images)])
            index += 1
            next_time += period

    with server:
        threads = [threading.Thread(target=camera, args=(name, i))
                   for i, name in enumerate(names)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        server.wait_idle(timeout=30)
    latencies = [r.latency_ms for r in server.results() if r.is_final]
    stats = server.stats()
    total = {key: sum(getattr(s, key) for s in stats.values())
             for key in ('received', 'served', 'dropped_queue', 'dropped_infeasible',
                         'deadline_misses')}
    exits = [s.mean_exit for s in stats.values() if s.served]
    return total, latencies, float(np.mean(exits)) if exits else float('nan')


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    return (f'{cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}, '
            f'torch {torch.__version__}, load average {load}')


def main():
    """Print the tables recorded in docs/runtime.md."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--requests', type=int, default=2000)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--bound-ms', type=float, default=50.0)
    parser.add_argument('--tenants', type=int, nargs='+', default=[1, 3, 8])
    parser.add_argument('--decision-only', action='store_true',
                        help='only the decision-overhead table')
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, profile = load_checkpoint(), load_profile()
    images, _ = fashion_mnist.load('test')
    print(f'machine: {_machine()}')
    print(f'model: {model.path.name}, {profile.num_exits} exits; 1 intra-op thread\n')

    print('Runtime paths per request, model excluded (median / p99 us); decision = scheduler '
          '+ plan + conditions; bookkeeping = calibrated confidence, energy accounting, '
          'slowdown learning, stage loop:\n')
    rows = decision_paths(model, profile, images, args.requests)
    names = list(rows[0][3])
    print('| policy | goal | mean exit | ' + ' | '.join(names) + ' | decision | all |')
    print('|---|---|---|' + '---|' * (len(names) + 2))
    for policy, goal, mean_exit, parts, decision, total in rows:
        cells = [f'{parts[n][0]:.1f} / {parts[n][1]:.1f}' for n in names]
        print(f'| {policy} | {goal} | {mean_exit:.2f} | ' + ' | '.join(cells)
              + f' | {decision[0]:.1f} / {decision[1]:.1f} | {total[0]:.1f} / {total[1]:.1f} |')

    print('\nDecision with a model family (coordinated, plan-first; scheduler + plan over '
          'model x exit x threads + feasibility, median / p99 us):\n')
    print('| models | goal | decision | most frequent choice (model, exit, threads) |')
    print('|---|---|---|---|')
    for count, goal, decision, (name, target, threads, _) in family_decisions(args.requests):
        print(f'| {count} | {goal} | {decision[0]:.1f} / {decision[1]:.1f} | '
              f'{name}, {target}, {threads} |')
    if args.decision_only:
        return

    print('\nWhole serve path on the real network (median / p99 us):\n')
    raw = raw_stages(model, images, args.requests)
    print(f'bare stage loop to the last exit, every head: {raw[0]:.1f} / {raw[1]:.1f}\n')
    print('| tenant | mean exit | serve | inside network stages | runtime overhead |')
    print('|---|---|---|---|---|')
    for name, mean_exit, total, inside, overhead in serve_overhead(model, profile, images,
                                                                   args.requests):
        print(f'| {name} | {mean_exit:.2f} | {total[0]:.1f} / {total[1]:.1f} | '
              f'{inside[0]:.1f} / {inside[1]:.1f} | {overhead[0]:.1f} / {overhead[1]:.1f} |')

    print(f'\nQueueing: each tenant {args.fps:g} frames/s for {args.seconds:g} s, queue 2, '
          f'budget policy, latency bound {args.bound_ms:g} ms:\n')
    print('| tenants | offered | served | dropped (queue) | infeasible | deadline misses '
          '| mean exit | latency p50 ms | latency p99 ms |')
    print('|---|---|---|---|---|---|---|---|---|')
    for tenants in args.tenants:
        total, latencies, mean_exit = queueing(model, profile, images, tenants, args.seconds,
                                               args.fps, args.bound_ms)
        p50, p99 = (np.percentile(latencies, [50, 99]) if latencies
                    else (float('nan'), float('nan')))
        print(f'| {tenants} | {total["received"]} | {total["served"]} | '
              f'{total["dropped_queue"]} | {total["dropped_infeasible"]} | '
              f'{total["deadline_misses"]} | {mean_exit:.2f} | {p50:.2f} | {p99:.2f} |')


if __name__ == '__main__':
    main()
