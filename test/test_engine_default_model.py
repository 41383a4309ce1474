"""The shipped default model: accuracy per exit on the full test set matches its metadata."""

import hashlib

from delen_ros.engine import (default_model_path, exit_accuracy, exit_flops, exit_logits,
                              fashion_mnist, load_checkpoint, normalize_images)
from delen_ros.engine.profiling import default_profile_path, load_profile
import torch


def test_shipped_model_matches_its_metadata_on_the_full_test_set():
    torch.set_num_threads(2)
    model = load_checkpoint()
    images, labels = fashion_mnist.load('test')
    assert len(labels) == 10000
    logits = exit_logits(model.network, normalize_images(images, model.config.input_spec))
    measured = exit_accuracy(logits, torch.from_numpy(labels))
    recorded = model.metrics['exit_accuracy']
    assert model.network.num_exits >= 4
    assert len(recorded) == model.network.num_exits
    for index, (now, then) in enumerate(zip(measured, recorded)):
        assert abs(now - then) <= 0.003, f'exit {index}: {now:.4f} measured, {then:.4f} recorded'
    assert measured[-1] >= 0.925
    assert measured == sorted(measured), 'later exits should not be less accurate'


def test_shipped_model_budget():
    model = load_checkpoint()
    flops = exit_flops(model.network, model.config.input_spec)
    assert flops[0] <= 0.30 * flops[-1]
    assert default_model_path().stat().st_size <= 20 * 1024 * 1024
    assert model.config.class_names == fashion_mnist.CLASS_NAMES


def test_shipped_profile_belongs_to_the_shipped_model():
    profile = load_profile()
    model = load_checkpoint()
    assert profile.path == default_profile_path()
    assert profile.num_exits == model.network.num_exits
    assert profile.model['sha256'] == hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert list(profile.exit_accuracy) == model.metrics['exit_accuracy']
    for k in range(profile.num_exits):
        for threads in profile.thread_counts:
            assert profile.stage_latency_ms(k, threads) > 0
        assert 0.0 < profile.accuracy_at_confidence(k, 0.95) <= 1.0
    assert profile.machine['cpus'] >= 1
