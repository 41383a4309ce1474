"""
Where the camera node's frames come from (no ROS import).

``open_source`` understands the camera's ``source`` parameter:

- ``fashion_mnist``: the Fashion-MNIST test set, 28x28 grey, with its labels;
- ``folder:<path>``: the image files of a folder (PNG, PGM/PPM, JPEG, BMP, TIFF), read with
  matplotlib.image (which reads through Pillow), in name order;
- ``video:<index or path>``: a video device or file through OpenCV, when cv2 is importable.

The data-set and folder sources take ``start_index``, ``shuffle`` (a permutation drawn from
``seed``) and ``loop``. Problems found when opening a source raise ``SourceError`` with a
message meant for the user; a single frame that cannot be read raises ``FrameError`` and
the next ``read`` goes on with the following frame.
"""

from dataclasses import dataclass
import importlib
import importlib.util
from pathlib import Path
import sys
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['ENCODINGS', 'FashionMnistSource', 'FolderSource', 'Frame', 'FrameError',
           'FrameSource', 'IMAGE_SUFFIXES', 'SourceError', 'VideoSource', 'convert',
           'open_source', 'parse_source']

# What the camera can publish; frames are converted to it.
ENCODINGS = ('mono8', 'rgb8', 'bgr8')
IMAGE_SUFFIXES = ('.png', '.pgm', '.ppm', '.pnm', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
SOURCE_KINDS = ('fashion_mnist', 'folder', 'video')
# ITU-R BT.601 luma, as delen_ros.imaging and OpenCV's RGB2GRAY use.
_LUMA_RGB = np.array([0.299, 0.587, 0.114])


class SourceError(ValueError):
    """A source cannot be opened: unknown kind, missing files, no reader, no device."""


class FrameError(RuntimeError):
    """One frame could not be read; the source goes on with the next one."""


@dataclass(frozen=True)
class Frame:
    """One frame: uint8 pixels, HxW ('mono') or HxWx3 ('rgb' / 'bgr'), and what it is."""

    pixels: np.ndarray
    channels: str
    index: int                      # data-set index, file number or video frame count
    class_id: Optional[int] = None  # ground truth, for labelled sources
    label: str = ''
    name: str = ''                  # file name for folder sources


def parse_source(text: str) -> Tuple[str, str]:
    """Split a source parameter into (kind, argument); raise SourceError when malformed."""
    text = str(text).strip()
    kind, _, argument = text.partition(':')
    if kind not in SOURCE_KINDS:
        raise SourceError(f'source {text!r}: expected fashion_mnist, folder:<path> or '
                          f'video:<index or path>')
    if kind == 'fashion_mnist' and argument:
        raise SourceError(f'source {text!r}: fashion_mnist takes no argument')
    if kind != 'fashion_mnist' and not argument:
        raise SourceError(f'source {text!r}: {kind} needs an argument ({kind}:<...>)')
    return kind, argument


def to_uint8(values: np.ndarray) -> Tuple[np.ndarray, str]:
    """Return an image array as uint8 HxW or HxWx3 (RGB) and its channel order."""
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[2] in (2, 4):  # grey + alpha, RGBA: drop alpha
        values = values[:, :, :1] if values.shape[2] == 2 else values[:, :, :3]
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] != 3) \
            or 0 in values.shape:
        raise FrameError(f'unsupported image shape {values.shape}')
    if values.dtype == np.uint8:
        pass
    elif np.issubdtype(values.dtype, np.floating):  # PNG via matplotlib: 0..1
        values = np.rint(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(values.dtype, np.integer):
        top = 255 if values.max(initial=0) <= 255 else 65535
        values = (np.clip(values, 0, top).astype(np.float64) * (255.0 / top))
        values = np.rint(values).astype(np.uint8)
    elif values.dtype == np.bool_:
        values = values.astype(np.uint8) * 255
    else:
        raise FrameError(f'unsupported pixel type {values.dtype}')
    return np.ascontiguousarray(values), 'mono' if values.ndim == 2 else 'rgb'


def convert(pixels: np.ndarray, channels: str, encoding: str) -> np.ndarray:
    """Convert uint8 'mono' / 'rgb' / 'bgr' pixels to one of ENCODINGS."""
    if encoding not in ENCODINGS:
        raise ValueError(f'encoding must be one of {", ".join(ENCODINGS)}, got {encoding!r}')
    if channels not in ('mono', 'rgb', 'bgr'):
        raise ValueError(f'unknown channel order {channels!r}')
    if encoding == 'mono8':
        if channels == 'mono':
            return pixels
        weights = _LUMA_RGB if channels == 'rgb' else _LUMA_RGB[::-1]
        return np.rint(pixels @ weights).clip(0, 255).astype(np.uint8)
    wanted = encoding[:3]
    if channels == 'mono':
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if channels == wanted:
        return pixels
    return np.ascontiguousarray(pixels[:, :, ::-1])


def fashion_mnist_module():
    """
    Return delen_ros.engine.fashion_mnist without importing the engine package.

    The engine's __init__ imports torch (seconds and hundreds of MB per process); the loader
    itself needs only numpy, so a camera process loads that one file.
    """
    name = 'delen_ros.engine.fashion_mnist'
    if name in sys.modules:
        return sys.modules[name]
    engine = importlib.util.find_spec('delen_ros.engine')
    spec = importlib.util.spec_from_file_location(
        name, Path(engine.submodule_search_locations[0]) / 'fashion_mnist.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FrameSource:
    """Base of the sources: ``read`` the next frame (None at the end), then ``close``."""

    kind = ''
    labelled = False

    def read(self) -> Optional[Frame]:
        """Return the next frame, or None when the source has no more."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files or devices."""

    def describe(self) -> str:
        """Return a short description for logs and diagnostics."""
        return self.kind


class _IndexedSource(FrameSource):
    """A finite, indexable set of frames, read in order or in a seeded permutation."""

    def __init__(self, size: int, *, start_index: int = 0, shuffle: bool = False,
                 seed: int = 0, loop: bool = True) -> None:
        if size <= 0:
            raise SourceError(f'{self.describe()}: no frames')
        if not 0 <= int(start_index) < size:
            raise SourceError(f'{self.describe()}: start_index {start_index} is outside '
                              f'0..{size - 1}')
        self.size = size
        self.loop = bool(loop)
        self.order = (np.random.default_rng(int(seed)).permutation(size) if shuffle
                      else np.arange(size))
        self.position = int(start_index)

    def read(self) -> Optional[Frame]:
        """Return the next frame in order; wrap around with ``loop``, else None at the end."""
        if self.position >= self.size:
            if not self.loop:
                return None
            self.position = 0
        index = int(self.order[self.position])
        self.position += 1
        return self._frame(index)

    def _frame(self, index: int) -> Frame:
        raise NotImplementedError


class FashionMnistSource(_IndexedSource):
    """The Fashion-MNIST test set (10 000 grey 28x28 images) with its labels."""

    kind = 'fashion_mnist'
    labelled = True

    def __init__(self, *, images: Optional[np.ndarray] = None,
                 labels: Optional[np.ndarray] = None, **order) -> None:
        fashion_mnist = fashion_mnist_module()
        self.class_names: Sequence[str] = fashion_mnist.CLASS_NAMES
        if images is None or labels is None:
            try:
                images, labels = fashion_mnist.load('test')
            except (OSError, ValueError) as error:
                raise SourceError(f'fashion_mnist: {error}') from None
        self.images, self.labels = images, labels
        super().__init__(len(images), **order)

    def _frame(self, index: int) -> Frame:
        class_id = int(self.labels[index])
        label = self.class_names[class_id] if 0 <= class_id < len(self.class_names) else ''
        return Frame(pixels=self.images[index], channels='mono', index=index,
                     class_id=class_id, label=label)

    def describe(self) -> str:
        """Return 'fashion_mnist (test set)'."""
        return 'fashion_mnist (test set)'


class FolderSource(_IndexedSource):
    """Image files of one folder, in name order, decoded by matplotlib.image (Pillow)."""

    kind = 'folder'

    def __init__(self, path: str, **order) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise SourceError(f'folder:{path}: not a directory')
        try:
            self._imread = importlib.import_module('matplotlib.image').imread
        except ImportError as error:
            raise SourceError(
                f'folder:{path}: reading image files needs matplotlib (python3-matplotlib, '
                f'with Pillow): {error}') from None
        self.files = sorted(p for p in self.path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f'folder:{path}: no image files '
                              f'({", ".join(IMAGE_SUFFIXES)})')
        super().__init__(len(self.files), **order)

    def _frame(self, index: int) -> Frame:
        path = self.files[index]
        try:
            values = self._imread(str(path))
        except Exception as error:  # noqa: B902 - any decoder error skips only this file
            raise FrameError(f'{path.name}: {type(error).__name__}: {error}') from None
        pixels, channels = to_uint8(values)
        return Frame(pixels=pixels, channels=channels, index=index, name=path.name)

    def describe(self) -> str:
        """Return 'folder <path>'."""
        return f'folder {self.path}'


class VideoSource(FrameSource):
    """A video device (index) or file through OpenCV, which is optional."""

    kind = 'video'

    def __init__(self, device: str) -> None:
        self.device = int(device) if device.isdigit() else device
        try:
            # Optional: only this source needs OpenCV, so package.xml does not require it.
            cv2 = importlib.import_module('cv2')
        except ImportError:
            raise SourceError(
                f'video:{device}: OpenCV (python3-opencv / opencv-python) is not installed; '
                f'use source fashion_mnist or folder:<path>') from None
        self._capture = cv2.VideoCapture(self.device)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f'video:{device}: cannot open the video device or file')
        self.count = 0

    def read(self) -> Optional[Frame]:
        """Grab one frame (BGR from OpenCV); None when a video file ends."""
        ok, values = self._capture.read()
        if not ok or values is None:
            if isinstance(self.device, str):
                return None  # end of the file
            raise FrameError(f'video:{self.device}: no frame from the device')
        pixels, channels = to_uint8(values)
        self.count += 1
        return Frame(pixels=pixels, channels='bgr' if channels == 'rgb' else channels,
                     index=self.count - 1)

    def close(self) -> None:
        """Release the device."""
        self._capture.release()

    def describe(self) -> str:
        """Return 'video <device>'."""
        return f'video {self.device}'


def open_source(text: str, *, start_index: int = 0, shuffle: bool = False, seed: int = 0,
                loop: bool = True) -> FrameSource:
    """Open the source named by a ``source`` parameter value (see the module docstring)."""
    kind, argument = parse_source(text)
    order = {'start_index': start_index, 'shuffle': shuffle, 'seed': seed, 'loop': loop}
    if kind == 'fashion_mnist':
        return FashionMnistSource(**order)
    if kind == 'folder':
        return FolderSource(argument, **order)
    return VideoSource(argument)
