"""Multi-exit DNN engine: build, run stage by stage, checkpoint, train and profile (no ROS)."""

from . import fashion_mnist
from .backbones import build_multi_exit, compact_resnet_stages, from_torchvision
from .checkpoint import (CheckpointError, default_model_path, load_checkpoint, LoadedModel,
                         resolve_model_path, save_checkpoint)
from .config import ARCHITECTURES, InputSpec, MultiExitConfig
from .folding import fold_batch_norms, serving_network
from .metrics import exit_accuracy, exit_flops, exit_logits, normalize_images, stage_flops
from .network import ExitHead, ExitState, MultiExitNetwork

__all__ = [
    'ARCHITECTURES', 'CheckpointError', 'ExitHead', 'ExitState', 'InputSpec', 'LoadedModel',
    'MultiExitConfig', 'MultiExitNetwork', 'build_multi_exit', 'compact_resnet_stages',
    'default_model_path', 'exit_accuracy', 'exit_flops', 'exit_logits', 'fashion_mnist',
    'fold_batch_norms', 'from_torchvision', 'load_checkpoint', 'normalize_images',
    'resolve_model_path', 'save_checkpoint', 'serving_network', 'stage_flops',
]
