"""Checkpoints load without unpickling code, and bad files give one-line errors naming them."""

from delen_ros.engine import (build_multi_exit, CheckpointError, InputSpec, load_checkpoint,
                              MultiExitConfig, save_checkpoint)
import pytest
import torch


def _config(widths=(8, 16, 16, 32)):
    return MultiExitConfig(
        arch='compact_resnet', num_classes=10, class_names=[f'c{i}' for i in range(10)],
        input_spec=InputSpec(height=28, width=28, channels=1, mean=[0.3], std=[0.3]),
        head_channels=8, options={'widths': list(widths)})


@pytest.fixture
def saved(tmp_path):
    config = _config()
    network = build_multi_exit(config).eval()
    path = save_checkpoint(tmp_path / 'model.pt', network, config,
                           metrics={'exit_accuracy': [0.1, 0.2, 0.3, 0.4],
                                    'torch': torch.__version__})
    return path, network


def test_round_trip_keeps_config_weights_and_metrics(saved):
    path, network = saved
    loaded = load_checkpoint(path)
    assert loaded.config == _config()
    assert loaded.config.label(3) == 'c3'
    assert loaded.metrics['exit_accuracy'] == [0.1, 0.2, 0.3, 0.4]
    x = torch.randn(1, 1, 28, 28)
    with torch.inference_mode():
        for a, b in zip(network(x), loaded.network(x)):
            assert torch.equal(a, b)
    assert not loaded.network.training


def _one_line_error(path, match):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert '\n' not in message
    assert str(path) in message
    assert match in message
    return message


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / 'nope.pt', 'not found')


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(path.read_bytes()[:1000])
    _one_line_error(truncated, 'truncated or corrupt')


def test_garbage_file(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'\x00not a checkpoint' * 10)
    _one_line_error(garbage, 'not a readable checkpoint')


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / 'pwned'

    class Exploit:

        def __reduce__(self):
            return (open, (str(marker), 'w'))

    evil = tmp_path / 'evil.pt'
    torch.save({'format': 'delen_ros.multi_exit/1', 'payload': Exploit()}, evil)
    _one_line_error(evil, 'not a readable checkpoint')
    assert not marker.exists()


def test_foreign_torch_file(tmp_path):
    foreign = tmp_path / 'foreign.pt'
    torch.save({'weights': torch.zeros(3)}, foreign)
    _one_line_error(foreign, 'not a delen_ros multi-exit checkpoint')


def test_weights_that_do_not_match_the_architecture(tmp_path):
    other = _config(widths=(8, 16, 32, 32))
    path = save_checkpoint(tmp_path / 'other.pt', build_multi_exit(other), other)
    payload = torch.load(path, weights_only=True)
    payload['config'] = _config().to_dict()
    torch.save(payload, path)
    message = _one_line_error(path, 'do not match architecture')
    assert 'shape-mismatched' in message


def test_bad_config(tmp_path, saved):
    path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload['config']['arch'] = 'alexnet'
    torch.save(payload, path)
    _one_line_error(path, 'bad model config')
