"""Configuration of a multi-exit network, kept apart from the nn.Module."""

from dataclasses import asdict, dataclass, field
import math
from typing import Any, Dict, Tuple

__all__ = ['ARCHITECTURES', 'InputSpec', 'MultiExitConfig']

# Backbones with a known stage split; 'custom' is a user-defined list of stages and heads.
ARCHITECTURES = (
    'compact_resnet',
    'resnet18', 'resnet34', 'resnet50',
    'mobilenet_v3_small', 'mobilenet_v3_large',
    'efficientnet_b0',
)


@dataclass(frozen=True)
class InputSpec:
    """What the network expects as input: size, channels and normalization."""

    height: int
    width: int
    channels: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f'input size must be positive, got {self.height}x{self.width}')
        if self.channels not in (1, 3):
            raise ValueError(f'input channels must be 1 or 3, got {self.channels}')
        object.__setattr__(self, 'mean', tuple(float(m) for m in self.mean))
        object.__setattr__(self, 'std', tuple(float(s) for s in self.std))
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f'mean and std need one value per channel ({self.channels}), '
                f'got {len(self.mean)} and {len(self.std)}')
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f'std must be positive and finite, got {self.std}')

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width) of the network input."""
        return (self.height, self.width)


@dataclass(frozen=True)
class MultiExitConfig:
    """Everything needed to rebuild a multi-exit network before loading its weights."""

    arch: str
    num_classes: int
    input_spec: InputSpec
    class_names: Tuple[str, ...] = ()
    head_channels: int = 64
    small_input: bool = True
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f'unknown architecture {self.arch!r}; expected one of {", ".join(ARCHITECTURES)}')
        if self.num_classes < 2:
            raise ValueError(f'num_classes must be at least 2, got {self.num_classes}')
        if self.head_channels < 1:
            raise ValueError(f'head_channels must be positive, got {self.head_channels}')
        names = tuple(str(n) for n in self.class_names)
        if names and len(names) != self.num_classes:
            raise ValueError(
                f'{len(names)} class names given for {self.num_classes} classes')
        object.__setattr__(self, 'class_names', names)

    def label(self, class_id: int) -> str:
        """Name of a class, or its index as text when the model carries no names."""
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-data form stored in checkpoints (no pickled objects)."""
        data = asdict(self)
        data['input_spec'] = asdict(self.input_spec)
        data['input_spec']['mean'] = list(self.input_spec.mean)
        data['input_spec']['std'] = list(self.input_spec.std)
        data['class_names'] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'MultiExitConfig':
        """Inverse of to_dict; raises KeyError/TypeError/ValueError on malformed data."""
        spec = dict(data['input_spec'])
        return cls(
            arch=str(data['arch']),
            num_classes=int(data['num_classes']),
            input_spec=InputSpec(
                height=int(spec['height']), width=int(spec['width']),
                channels=int(spec['channels']),
                mean=tuple(spec['mean']), std=tuple(spec['std'])),
            class_names=tuple(data.get('class_names', ())),
            head_channels=int(data.get('head_channels', 64)),
            small_input=bool(data.get('small_input', True)),
            options=dict(data.get('options', {})),
        )
