"""Resumable stage-by-stage execution gives exactly the logits of a plain forward pass."""

from delen_ros.engine import (build_multi_exit, fold_batch_norms, from_torchvision, InputSpec,
                              MultiExitConfig, MultiExitNetwork, serving_network)
import pytest
import torch
from torchvision import models

FAMILIES = [
    ('compact_resnet', 28, 1, True),
    ('resnet18', 32, 1, True),
    ('resnet34', 32, 3, True),
    ('resnet50', 64, 3, False),
    ('mobilenet_v3_small', 64, 3, False),
    ('mobilenet_v3_large', 32, 1, True),
    ('efficientnet_b0', 64, 3, False),
]


def _config(arch, size, channels, small_input):
    return MultiExitConfig(
        arch=arch, num_classes=10, small_input=small_input,
        input_spec=InputSpec(height=size, width=size, channels=channels,
                             mean=[0.5] * channels, std=[0.25] * channels))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('arch,size,channels,small_input', FAMILIES)
def test_resumed_exits_equal_plain_forward(arch, size, channels, small_input):
    network = build_multi_exit(_config(arch, size, channels, small_input)).eval()
    x = torch.randn(2, channels, size, size)
    with torch.inference_mode():
        plain = network(x)
        final = network.forward_final(x)
    assert network.num_exits >= 4
    state = network.begin(x)
    stepped = [network.step(state) for _ in range(network.num_exits)]
    assert state.done
    for exit_index, (a, b) in enumerate(zip(plain, stepped)):
        assert torch.equal(a, b), f'{arch}: exit {exit_index} differs'
    assert torch.equal(final, plain[-1])
    # Stop at exit 1, then resume to the last exit without recomputing earlier stages.
    state = network.begin(x)
    assert torch.equal(network.run_to(state, 1), plain[1])
    assert state.next_exit == 2
    assert torch.equal(network.run_to(state, network.num_exits - 1), plain[-1])


@pytest.mark.parametrize('factory', [models.resnet18, models.mobilenet_v3_small,
                                     models.efficientnet_b0])
def test_final_exit_is_the_torchvision_models_own_forward(factory):
    model = factory(weights=None, num_classes=7).eval()
    network = from_torchvision(model, num_classes=7, input_size=(64, 64)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
    state = network.begin(x)
    assert torch.equal(network.run_to(state, network.num_exits - 1), expected)


def test_user_defined_stages_and_heads():
    stages = [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 3, stride=2)]
    heads = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)) for _ in stages]
    network = MultiExitNetwork(stages, heads)
    x = torch.randn(1, 1, 8, 8)
    with torch.inference_mode():
        plain = network(x)
    state = network.begin(x)
    assert torch.equal(network.step(state), plain[0])
    assert torch.equal(network.step(state), plain[1])
    with pytest.raises(RuntimeError, match='already run'):
        network.step(state)


@pytest.mark.parametrize('kwargs,message', [
    ({'arch': 'vgg16'}, 'unknown architecture'),
    ({'arch': 'resnet18', 'small_input': False, 'size': 8}, 'too small'),
    ({'arch': 'compact_resnet', 'size': 2}, 'too small'),
])
def test_bad_arguments_give_clear_errors(kwargs, message):
    size = kwargs.pop('size', 32)
    with pytest.raises(ValueError, match=message):
        build_multi_exit(_config(kwargs.pop('arch'), size, 3, kwargs.pop('small_input', True)))


def test_too_few_stages_and_unsupported_models_are_refused():
    with pytest.raises(ValueError, match='at least one stage'):
        MultiExitNetwork([], [])
    with pytest.raises(ValueError, match='1 stages but 2 exit heads'):
        MultiExitNetwork([torch.nn.Identity()], [torch.nn.Identity(), torch.nn.Identity()])
    with pytest.raises(ValueError, match='unsupported model type'):
        from_torchvision(models.vgg11(weights=None), num_classes=10)
    with pytest.raises(ValueError, match='num_exits'):
        from_torchvision(models.resnet18(weights=None), num_classes=10, num_exits=1)


def test_a_traditional_network_is_one_stage_with_its_classifier():
    config = MultiExitConfig(
        arch='compact_resnet', num_classes=10,
        input_spec=InputSpec(height=28, width=28, channels=1, mean=(0.5,), std=(0.5,)),
        options={'widths': [8, 16, 32], 'num_exits': 1})
    network = build_multi_exit(config).eval()
    assert network.num_exits == 1
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        state = network.begin(x)
        logits = network.step(state, evaluate_head=False)  # the final head always runs
        assert state.done
        assert torch.allclose(logits, network.forward_final(x))
        assert torch.allclose(network(x)[0], logits)
    with pytest.raises(ValueError, match='3 widths has 3 exits, or 1'):
        build_multi_exit(MultiExitConfig(
            arch='compact_resnet', num_classes=10, input_spec=config.input_spec,
            options={'widths': [8, 16, 32], 'num_exits': 2}))


def _random_norm_statistics(network):
    # Fresh batch norms are the identity; folding must be checked on ones that are not.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize('arch,size,channels,small_input', FAMILIES)
def test_folded_network_gives_the_same_logits_and_leaves_the_original(
        arch, size, channels, small_input):
    network = build_multi_exit(_config(arch, size, channels, small_input)).eval()
    _random_norm_statistics(network)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    served, folded = fold_batch_norms(network)
    assert folded > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    x = torch.randn(2, channels, size, size)
    with torch.inference_mode():
        for plain, fast in zip(network(x), served(x)):
            torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
        state = served.begin(x)
        for index in range(served.num_exits):
            logits = served.step(state)
            torch.testing.assert_close(logits, network(x)[index], rtol=1e-4, atol=1e-4)
    after = network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize('arch,size,channels,small_input', FAMILIES)
def test_the_served_network_is_folded_channels_last_with_the_same_logits(
        arch, size, channels, small_input):
    network = build_multi_exit(_config(arch, size, channels, small_input)).eval()
    _random_norm_statistics(network)
    served, folded = serving_network(network)
    assert folded > 0
    convs = [m for m in served.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last)
                         for m in convs)
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last)
                   and not m.weight.is_contiguous()
                   for m in network.modules() if isinstance(m, torch.nn.Conv2d)), \
        'the trained network was changed'
    x = torch.randn(3, channels, size, size)  # a plain (NCHW) batch, as frames come
    with torch.inference_mode():
        state = served.begin(x)
        for index in range(served.num_exits):
            logits = served.step(state)
            torch.testing.assert_close(logits, network(x)[index], rtol=1e-4, atol=1e-4)
        features = served.stages[0](x)
        assert features.is_contiguous(memory_format=torch.channels_last)


class _ConvNorm(torch.nn.Module):
    """A conv and the batch norm after it, called in a way fx tracing or folding refuses."""

    def __init__(self, in_channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(4)


class _DataDependent(_ConvNorm):

    def forward(self, x):
        if x.sum() > 0:  # fx cannot trace this
            return self.norm(self.conv(x))
        return self.norm(self.conv(-x))


class _SharedConv(_ConvNorm):

    def forward(self, x):
        return self.norm(self.conv(x)) + self.conv(x)


def test_modules_that_cannot_fold_are_served_as_they_are():
    heads = [torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.LazyLinear(10))
             for _ in range(2)]
    network = MultiExitNetwork(
        [_DataDependent(1), torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), _SharedConv(4))],
        heads)
    x = torch.randn(2, 1, 8, 8)
    network(x)  # materialise the lazy layers
    network.eval()
    _random_norm_statistics(network)
    served, folded = fold_batch_norms(network)
    assert folded == 0
    assert isinstance(served.stages[0], _DataDependent)
    with torch.inference_mode():
        for plain, fast in zip(network(x), served(x)):
            torch.testing.assert_close(fast, plain)
    with pytest.raises(TypeError, match='MultiExitNetwork'):
        fold_batch_norms(torch.nn.Conv2d(1, 1, 1))
