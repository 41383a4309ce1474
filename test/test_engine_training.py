"""One-batch training smoke runs of every mode, on real Fashion-MNIST."""

from delen_ros.engine import load_checkpoint
from delen_ros.engine.training import main, train, TrainConfig
import pytest
import torch

SMALL = {'widths': [8, 16, 16, 32]}


@pytest.fixture(scope='module')
def joint_checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp('train') / 'joint.pt'
    metrics = train(TrainConfig(output=path, epochs=1, max_steps=1, batch_size=32,
                                eval_limit=200, options=SMALL))
    assert metrics['training']['steps'] == 1
    return path


def test_joint_run_writes_a_servable_checkpoint(joint_checkpoint):
    model = load_checkpoint(joint_checkpoint)
    assert model.network.num_exits == 4
    assert len(model.metrics['exit_accuracy']) == 4
    assert all(0.0 <= a <= 1.0 for a in model.metrics['exit_accuracy'])
    assert model.config.class_names[9] == 'ankle boot'
    assert model.metrics['training']['evaluated_test_images'] == 200


def _head_and_backbone(path):
    network = load_checkpoint(path).network
    return ([p.clone() for p in network.stages.parameters()],
            [p.clone() for p in network.heads[0].parameters()])


@pytest.mark.parametrize('mode,labels', [('heads', True), ('distill', False)])
def test_frozen_backbone_modes_only_train_early_heads(joint_checkpoint, tmp_path, mode, labels):
    output = tmp_path / f'{mode}.pt'
    train(TrainConfig(output=output, mode=mode, init=joint_checkpoint, use_labels=labels,
                      epochs=1, max_steps=1, batch_size=32, eval_limit=100, options=SMALL))
    backbone_before, head_before = _head_and_backbone(joint_checkpoint)
    backbone_after, head_after = _head_and_backbone(output)
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, backbone_after))
    assert not all(torch.equal(a, b) for a, b in zip(head_before, head_after))


def test_training_resumes_from_its_work_dir(tmp_path):
    common = {'epochs': 2, 'max_steps': 1, 'batch_size': 16, 'eval_limit': 50,
              'options': SMALL, 'work_dir': tmp_path / 'work'}
    train(TrainConfig(output=tmp_path / 'a.pt', **common))
    metrics = train(TrainConfig(output=tmp_path / 'b.pt', resume=True, **common))
    assert metrics['training']['resumed_from_epoch'] == 1


def test_same_seed_same_weights(tmp_path):
    common = {'epochs': 1, 'max_steps': 2, 'batch_size': 16, 'eval_limit': 20, 'options': SMALL}
    train(TrainConfig(output=tmp_path / 'a.pt', **common))
    train(TrainConfig(output=tmp_path / 'b.pt', **common))
    a = load_checkpoint(tmp_path / 'a.pt').network.state_dict()
    b = load_checkpoint(tmp_path / 'b.pt').network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main(['--output', str(tmp_path / 'x.pt'), '--mode', 'distill']) == 2
    assert 'give --init' in capsys.readouterr().err
    assert main(['--output', str(tmp_path / 'x.pt'), '--lr', '-1']) == 2
