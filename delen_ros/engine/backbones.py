"""Split torchvision classifiers into stages and attach an exit head after each one."""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

from .config import MultiExitConfig
from .network import ExitHead, MultiExitNetwork

__all__ = ['build_multi_exit', 'compact_resnet_stages', 'from_torchvision']

COMPACT_RESNET_WIDTHS = (24, 64, 128, 256)


def _downsample(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
        nn.BatchNorm2d(out_channels))


def compact_resnet_stages(*, in_channels: int, num_classes: int,
                          widths: Sequence[int] = COMPACT_RESNET_WIDTHS) -> Tuple[
                              List[nn.Module], nn.Module]:
    """
    Stages of a small ResNet of torchvision BasicBlocks for 28-32 px inputs, and its classifier.

    Stage 0 keeps full resolution; every later stage halves it with one strided block.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f'compact_resnet needs at least 2 positive widths, got {widths}')
    stages: List[nn.Module] = [nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
        BasicBlock(widths[0], widths[0]))]
    for previous, width in zip(widths, widths[1:]):
        stages.append(BasicBlock(previous, width, stride=2,
                                 downsample=_downsample(previous, width)))
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                               nn.Linear(widths[-1], num_classes))
    return stages, classifier


def _resnet_parts(model: models.ResNet) -> Tuple[List[nn.Module], nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    stages = [stem, model.layer2, model.layer3, model.layer4]
    return stages, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)


def _group_by_resolution(blocks: Sequence[nn.Module], input_size: Tuple[int, int],
                         in_channels: int, num_exits: int) -> List[nn.Module]:
    """Cut a sequence of blocks where the feature map shrinks; merge the earliest groups."""
    x = torch.zeros(1, in_channels, *input_size)
    groups: List[List[nn.Module]] = []
    size = None
    for block in blocks:
        _, x = _out_channels(block, x)
        if groups and x.shape[-2:] == size:
            groups[-1].append(block)
        else:
            groups.append([block])
        size = x.shape[-2:]
    while len(groups) > num_exits:
        groups[1] = groups[0] + groups[1]
        del groups[0]
    return [nn.Sequential(*group) for group in groups]


def _features_parts(model: nn.Module, *, input_size: Tuple[int, int], in_channels: int,
                    num_exits: int) -> Tuple[List[nn.Module], nn.Module]:
    stages = _group_by_resolution(list(model.features), input_size, in_channels, num_exits)
    return stages, nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier)


def _out_channels(stage: nn.Module, x: torch.Tensor) -> Tuple[int, torch.Tensor]:
    was_training = stage.training
    stage.eval()  # batch-norm statistics of a 1-image probe are meaningless
    with torch.inference_mode():
        y = stage(x)
    stage.train(was_training)
    return y.shape[1], y


def from_torchvision(model: nn.Module, *, num_classes: int,
                     input_size: Tuple[int, int] = (224, 224), in_channels: int = 3,
                     head_channels: int = 64,
                     num_exits: int = 4) -> MultiExitNetwork:
    """
    Turn a torchvision ResNet, MobileNetV3 or EfficientNet into a multi-exit network.

    The backbone's own classifier becomes the last exit; earlier exits get an ``ExitHead``.
    Raises ValueError for other model types or an input too small for the stages.
    """
    if num_exits < 2:
        raise ValueError(f'num_exits must be at least 2, got {num_exits}')
    try:
        if isinstance(model, models.ResNet):
            stages, classifier = _resnet_parts(model)
        elif isinstance(model, (models.MobileNetV3, models.EfficientNet)):
            stages, classifier = _features_parts(
                model, input_size=input_size, in_channels=in_channels, num_exits=num_exits)
        else:
            raise ValueError(
                f'unsupported model type {type(model).__name__}: expected a torchvision ResNet, '
                'MobileNetV3 or EfficientNet, or build MultiExitNetwork(stages, heads) yourself')
        return _attach_heads(stages, classifier, num_classes=num_classes, input_size=input_size,
                             in_channels=in_channels, head_channels=head_channels)
    except RuntimeError as error:
        raise ValueError(
            f'input {input_size[0]}x{input_size[1]} is too small for {type(model).__name__}: '
            f'{str(error).splitlines()[0]}') from None


def _attach_heads(stages: List[nn.Module], classifier: nn.Module, *, num_classes: int,
                  input_size: Tuple[int, int], in_channels: int,
                  head_channels: int) -> MultiExitNetwork:
    x = torch.zeros(1, in_channels, *input_size)
    heads: List[nn.Module] = []
    last = len(stages) - 1
    for index, stage in enumerate(stages):
        channels, x = _out_channels(stage, x)
        # Below 2x2, later strided stages would only see padding.
        if index < last and min(x.shape[-2:]) < 2:
            raise ValueError(
                f'input {input_size[0]}x{input_size[1]} is too small for {len(stages)} exits: '
                f'stage {index} output is {x.shape[-2]}x{x.shape[-1]}, only the last stage may '
                'reach 1x1')
        if index == last:
            heads.append(classifier)
        else:
            stride = 2 if min(x.shape[-2:]) >= 14 else 1
            heads.append(ExitHead(channels, num_classes, hidden_channels=head_channels,
                                  stride=stride))
    return MultiExitNetwork(stages, heads)


def _torchvision_model(config: MultiExitConfig) -> nn.Module:
    channels = config.input_spec.channels
    model = getattr(models, config.arch)(weights=None, num_classes=config.num_classes)
    if isinstance(model, models.ResNet):
        if config.small_input:
            # CIFAR-style stem: small images can't afford a stride-4 stem.
            model.conv1 = nn.Conv2d(channels, 64, 3, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    else:
        stem = model.features[0][0]
        if config.small_input or channels != 3:
            model.features[0][0] = nn.Conv2d(
                channels, stem.out_channels, stem.kernel_size,
                stride=1 if config.small_input else stem.stride, padding=stem.padding,
                bias=False)
    return model


def build_multi_exit(config: MultiExitConfig, *,
                     num_exits: Optional[int] = None) -> MultiExitNetwork:
    """Build the (untrained) multi-exit network a config describes."""
    size = config.input_spec.size
    channels = config.input_spec.channels
    exits = num_exits or config.options.get('num_exits')
    if config.arch == 'compact_resnet':
        widths = config.options.get('widths', COMPACT_RESNET_WIDTHS)
        exits = int(exits or len(widths))
        stages, classifier = compact_resnet_stages(
            in_channels=channels, num_classes=config.num_classes, widths=widths)
        if exits == 1:
            stages = [nn.Sequential(*stages)]  # a traditional network: no early exits
        elif exits != len(stages):
            raise ValueError(f'compact_resnet with {len(stages)} widths has {len(stages)} '
                             f'exits, or 1 (traditional); got num_exits={exits}')
        try:
            return _attach_heads(stages, classifier, num_classes=config.num_classes,
                                 input_size=size, in_channels=channels,
                                 head_channels=config.head_channels)
        except RuntimeError as error:
            raise ValueError(f'input {size[0]}x{size[1]} is too small for compact_resnet: '
                             f'{str(error).splitlines()[0]}') from None
    return from_torchvision(_torchvision_model(config), num_classes=config.num_classes,
                            input_size=size, in_channels=channels,
                            head_channels=config.head_channels, num_exits=int(exits or 4))
