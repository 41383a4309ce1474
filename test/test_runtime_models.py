"""A family of models in one server: loading, checks, pinning and the choice of model (no ROS)."""

import hashlib
import json
from pathlib import Path
import shutil

from delen_ros.engine import load_checkpoint, save_checkpoint
from delen_ros.engine.profiling import load_profile, ProfileError
from delen_ros.runtime import Goal, InferenceServer, make_policy, RequestContext
from delen_ros.runtime.models import load_served_model
import numpy as np
import pytest
import torch

MODELS = Path(__file__).resolve().parents[1] / 'models'
ANYTIME = MODELS / 'fmnist_compact_resnet.pt'
TRADITIONAL = MODELS / 'fmnist_small_resnet.pt'


@pytest.fixture(scope='module')
def family():
    server = InferenceServer.from_checkpoint(path=ANYTIME, models=[TRADITIONAL], threads=1,
                                             max_batch=1)
    yield server
    server.stop(timeout=5.0)


def test_every_model_held_is_reported_with_its_memory_and_load_time(family):
    infos = {info.name: info for info in family.models()}
    assert list(infos) == ['fmnist_compact_resnet', 'fmnist_small_resnet']
    anytime, traditional = infos['fmnist_compact_resnet'], infos['fmnist_small_resnet']
    assert (anytime.kind, anytime.num_exits) == ('anytime', 4)
    assert (traditional.kind, traditional.num_exits) == ('traditional', 1)
    for info in (anytime, traditional):
        assert info.memory_bytes >= 4 * info.parameters > 0
        assert info.load_s > 0
        assert 'MiB, loaded in' in info.describe()
        assert info.folded_norms > 0  # served with batch norms folded into the convolutions
        assert f'{info.folded_norms} batch norms folded' in info.describe()
    assert anytime.parameters > 5 * traditional.parameters
    served = family.model.network
    assert served is family.executor.network
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())


def test_a_profile_made_for_another_model_is_refused(tmp_path):
    other = tmp_path / 'other.pt'
    loaded = load_checkpoint(ANYTIME)
    with torch.no_grad():
        loaded.network.heads[0][-1].bias.add_(1.0)  # other weights, same architecture
    save_checkpoint(other, loaded.network, loaded.config, metrics=loaded.metrics)
    shutil.copy(MODELS / 'fmnist_compact_resnet.profile.json', tmp_path / 'other.profile.json')
    with pytest.raises(ProfileError, match='made for another model file'):
        load_served_model(other)
    shutil.copy(TRADITIONAL, tmp_path / 'small.pt')
    with pytest.raises(ProfileError, match='1 exits but its profile 4'):
        load_served_model(tmp_path / 'small.pt', MODELS / 'fmnist_compact_resnet.profile.json')
    with pytest.raises(ValueError, match='made for another model file'):
        InferenceServer(load_checkpoint(other), load_profile(tmp_path / 'other.profile.json'))


def test_a_model_that_does_not_load_is_named(family, tmp_path):
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(ANYTIME.read_bytes()[:2000])
    with pytest.raises(ValueError, match='broken.pt: not a readable checkpoint'):
        family.add_model(broken)
    with pytest.raises(ValueError, match='already held'):
        family.add_model(TRADITIONAL)


def _context(server, models, remaining_ms, goal=None):
    first = models[0]
    return RequestContext(
        tenant='t', goal=goal or Goal.latency(remaining_ms), num_exits=first.num_exits,
        queue_ms=0.0, remaining_ms=remaining_ms, energy_budget_mj=float('inf'),
        default_threads=1, thread_counts=(1,), cost=first.cost, profile=first.profile,
        stages=first.executor, models=models)


def test_coordinated_picks_the_model_and_exit_that_fit_the_bound(family):
    anytime = family.served_model('fmnist_compact_resnet')
    small = family.served_model('fmnist_small_resnet')
    models = (anytime, small)
    policy = make_policy('coordinated:threads=1')
    policy.attach(anytime.profile)
    # Plenty of time: the most accurate answer of the family.
    plan = policy.plan(_context(family, models, 1000.0))
    best = max(anytime.profile.max_accuracy, small.profile.max_accuracy)
    chosen = small if plan.model == small.name else anytime
    assert plan.model in (None, small.name)
    assert chosen.profile.exit_accuracy[plan.target_exit] >= best - 0.002
    # A bound that the traditional model's only exit fits at the policy's safe slowdown,
    # with no time for the anytime model's exits that are as accurate: the traditional model.
    factor = policy.settings[1].factor
    small_ms = small.profile.stage_latency_ms(0, 1) * factor
    as_good = [k for k in range(anytime.num_exits)
               if anytime.profile.exit_accuracy[k] >= small.profile.exit_accuracy[0] - 0.002]
    anytime_ms = sum(anytime.profile.stage_latency_ms(k, 1)
                     for k in range(as_good[0] + 1)) * factor
    assert anytime_ms > small_ms * 1.05, 'the shipped models no longer differ here'
    plan = policy.plan(_context(family, models, small_ms * 1.02))
    assert plan.model == small.name and plan.target_exit == 0
    # Pinned to one model (the only candidate): never another.
    plan = policy.plan(_context(family, (anytime,), small_ms * 1.02))
    assert plan.model is None


def _frames(count):
    from delen_ros.engine import fashion_mnist
    images, labels = fashion_mnist.load('test')
    return images[:count], labels[:count]


def test_tenants_pinned_to_a_model_are_answered_by_it(family):
    images, labels = _frames(30)
    family.add_tenant('pinned', goal='latency:200', model='fmnist_small_resnet',
                      policy='static:exit_index=0')
    family.add_tenant('anytime', goal='latency:200', model='fmnist_compact_resnet')
    with pytest.raises(KeyError, match='unknown model'):
        family.add_tenant('nowhere', goal='latency:200', model='resnet_not_here')
    family.start()
    try:
        answers = {'pinned': [], 'anytime': []}
        for image, label in zip(images, labels):
            for tenant in answers:
                family.submit(tenant, image, label=int(label))
            for tenant in answers:
                result = family.next_result(timeout=10.0)
                assert result is not None
                answers[result.tenant].append(result)
        assert family.stats('pinned').model_counts == (('fmnist_small_resnet', 30),)
        assert family.stats('anytime').model_counts == (('fmnist_compact_resnet', 30),)
    finally:
        family.stop(timeout=5.0)
        family.remove_tenant('pinned')
        family.remove_tenant('anytime')
    assert {r.model for r in answers['pinned']} == {'fmnist_small_resnet'}
    assert {r.num_exits for r in answers['pinned']} == {1}
    assert {r.model for r in answers['anytime']} == {'fmnist_compact_resnet'}
    correct = np.mean([r.correct for r in answers['pinned']])
    assert correct >= 0.8  # a trained model, not noise


def _profile_for(path, template):
    data = json.loads(Path(template).read_text())
    data['model'] = {'file': path.name, 'arch': 'compact_resnet',
                     'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
    profile = path.with_name(path.stem + '.profile.json')
    profile.write_text(json.dumps(data))
    return profile


def test_a_model_with_another_input_serves_only_tenants_that_pin_it(tmp_path):
    from delen_ros.engine import build_multi_exit, InputSpec, MultiExitConfig
    config = MultiExitConfig(
        arch='compact_resnet', num_classes=10,
        input_spec=InputSpec(height=32, width=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3),
        options={'widths': [8, 16], 'num_exits': 1})
    path = save_checkpoint(tmp_path / 'color.pt', build_multi_exit(config).eval(), config)
    _profile_for(path, MODELS / 'fmnist_small_resnet.profile.json')
    server = InferenceServer.from_checkpoint(path=ANYTIME, models=[path], threads=1)
    try:
        color = server.served_model('color')
        assert 'input 3x32x32 against 1x28x28' in color.difference(server.served_model())
        server.add_tenant('free', goal='latency:200')
        server.add_tenant('colour', goal='latency:200', model='color')
        rgb = np.zeros((32, 32, 3), np.uint8)
        with pytest.raises(ValueError):
            server.submit('free', np.zeros((5, 5, 7), np.uint8))
        server.start()
        for tenant in ('free', 'colour'):
            server.submit(tenant, rgb, encoding='rgb8')
        results = {r.tenant: r for r in (server.next_result(timeout=10.0) for _ in range(2))}
    finally:
        server.stop(timeout=5.0)
    assert results['colour'].model == 'color'
    assert results['free'].model != 'color'  # never chosen for a tenant that did not pin it


def test_a_deeper_model_added_later_serves_a_tenant_pinned_to_it_with_its_policy():
    server = InferenceServer.from_checkpoint(path=TRADITIONAL, threads=1)
    try:
        server.add_tenant('t', goal='latency:500', policy='static:exit_index=0')
        server.add_model(ANYTIME)
        # exit 3 suits the new model only: checked against it, set with it.
        server.set_model('t', 'fmnist_compact_resnet', policy='static:exit_index=3')
        images, labels = _frames(1)
        server.start()
        server.submit('t', images[0], label=int(labels[0]))
        result = server.next_result(timeout=10.0)
    finally:
        server.stop(timeout=5.0)
    assert result is not None and (result.model, result.exit_index) == (
        'fmnist_compact_resnet', 3)
    snapshot = server.stats('t')
    assert snapshot.failed == 0 and snapshot.exit_counts == (0, 0, 0, 1)


def _record_calls(network):
    """Record (kind, index, batch size, torch threads) of every stage and head call."""
    calls, handles = [], []
    for kind, modules in (('stage', network.stages), ('head', network.heads)):
        for index, module in enumerate(modules):
            def record(module, args, kind=kind, index=index):
                calls.append((kind, index, args[0].shape[0], torch.get_num_threads()))
            handles.append(module.register_forward_pre_hook(record))
    return calls, handles


def test_warm_up_runs_every_stage_and_head_at_each_batch_size_and_thread_count(family):
    served = family.served_model()
    calls, handles = _record_calls(served.model.network)
    saved = torch.get_num_threads()
    try:
        count = served.warm_up(batch_sizes=range(1, 4), thread_counts=[2, 1])
    finally:
        for handle in handles:
            handle.remove()
    expected = {(kind, index, size, threads) for kind in ('stage', 'head')
                for index in range(served.num_exits) for size in (1, 2, 3) for threads in (1, 2)}
    assert set(calls) == expected and count == len(calls) == len(expected)
    assert torch.get_num_threads() == saved
    with pytest.raises(ValueError, match='positive batch sizes'):
        served.warm_up(batch_sizes=[0], thread_counts=[1])


def test_the_server_warms_each_model_once_before_serving_and_not_while_serving():
    events = []
    server = InferenceServer.from_checkpoint(path=ANYTIME, models=[TRADITIONAL], threads=1,
                                             max_batch=3,
                                             on_event=lambda kind, text: events.append(kind))
    calls, handles = _record_calls(server.served_model('fmnist_small_resnet').model.network)
    try:
        report = server.warm_up()
        assert 'fmnist_compact_resnet, fmnist_small_resnet' in report
        assert 'at batch 1-3' in report and server.warm_up_ms > 0
        assert {size for _, _, size, _ in calls} == {1, 2, 3}
        assert server.warm_up() is None  # each model once
        with server:
            assert 'warm_up' not in events  # already warm
            with pytest.raises(RuntimeError, match='before start'):
                server.warm_up()
    finally:
        for handle in handles:
            handle.remove()


def test_a_server_told_not_to_warm_up_runs_no_model_at_start():
    server = InferenceServer.from_checkpoint(path=ANYTIME, threads=1, warm_up=False)
    calls, handles = _record_calls(server.model.network)
    try:
        with server:
            pass
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [] and server.warm_up_ms == 0.0
