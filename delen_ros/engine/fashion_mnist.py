"""Fashion-MNIST from the idx files of Debian's dataset-fashion-mnist package (no downloads)."""

import gzip
import os
from pathlib import Path
from typing import Tuple

import numpy as np

__all__ = ['CLASS_NAMES', 'DEFAULT_ROOT', 'MEAN', 'STD', 'load']

DEFAULT_ROOT = Path(os.environ.get('DELEN_FASHION_MNIST', '/usr/share/datasets/fashion-mnist'))
CLASS_NAMES = ('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat',
               'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot')
# Pixel statistics of the training set, in [0, 1] units.
MEAN = (0.2860,)
STD = (0.3530,)

_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


def _read_idx(path: Path, *, magic: int) -> np.ndarray:
    candidates = [path, path.with_name(path.name + '.gz')]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f'{path}(.gz): Fashion-MNIST file not found; install it with '
            '`apt-get install dataset-fashion-mnist`')
    opener = gzip.open if found.suffix == '.gz' else open
    with opener(found, 'rb') as stream:
        data = stream.read()
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], 'big') != magic:
        raise ValueError(f'{found}: not an idx file with magic number {magic:#x}')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f'{found}: truncated, header says {shape} but holds '
                         f'{len(data) - header} bytes')
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load(split: str = 'test', *, root: Path = DEFAULT_ROOT) -> Tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of the 'train' (60k) or 'test' (10k) split."""
    if split not in _FILES:
        raise ValueError(f'unknown split {split!r}; expected "train" or "test"')
    image_file, label_file = _FILES[split]
    images = _read_idx(Path(root) / image_file, magic=0x803)
    labels = _read_idx(Path(root) / label_file, magic=0x801).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f'{root}: {len(images)} images but {len(labels)} labels in {split}')
    return images, labels
