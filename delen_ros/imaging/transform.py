"""Decoded image pixels -> the normalized [1, C, H, W] float tensor a model expects."""

import math
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.nn import functional

from .codec import (decode_image, DecodedImage, DEFAULT_MAX_PIXELS, encoding_info,
                    EncodingInfo, ImageFormatError)
from .compressed import decode_compressed, is_compressed

__all__ = ['LUMA_WEIGHTS', 'ModelInputTransform']

# ITU-R BT.601 luma (what OpenCV's COLOR_RGB2GRAY and PIL's convert('L') use).
LUMA_WEIGHTS = {'R': 0.299, 'G': 0.587, 'B': 0.114}


def _floats(name: str, values, count: int) -> Tuple[float, ...]:
    if isinstance(values, numbers.Real):
        values = (values,)
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a sequence of numbers, got {values!r}') from None
    if len(result) != count:
        raise ValueError(f'{name} needs one value per input channel ({count}), got {result}')
    if not all(math.isfinite(v) for v in result):
        raise ValueError(f'{name} must be finite, got {result}')
    return result


class ModelInputTransform:
    """
    Convert decoded pixels of any supported encoding into a model input tensor.

    Channels are converted (colour -> gray with BT.601 luma for 1-channel models, gray -> 3
    channels by repetition, alpha dropped, BGR -> RGB), values are scaled to [0, 1] by the
    encoding's maximum (255 or 65535) and normalized with ``mean`` / ``std``, and the image
    is resized to ``input_size`` (bilinear, antialiased when shrinking, aspect ratio not
    kept) unless it has that size already. 8-bit values go through one 256-entry lookup
    table per channel. 8-bit images that shrink are resized as uint8 before the lookup:
    halved by exact 2x2 averages while they stay at least ``input_size`` (OpenCV), then
    bilinear (torch's kernel; within 1/255 of resizing in float, like torchvision on uint8
    tensors). Others are normalized first and resized in float, which is exact because the
    filter is linear with weights that sum to one.
    """

    def __init__(self, *, input_size: Sequence[int], in_channels: int,
                 mean: Sequence[float], std: Sequence[float]):
        size = tuple(input_size) if isinstance(input_size, (tuple, list)) else None
        if size is None or len(size) != 2 or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                for s in size):
            raise ValueError(
                f'input_size must be (height, width) of positive integers, got {input_size!r}')
        if in_channels not in (1, 3) or isinstance(in_channels, bool):
            raise ValueError(f'in_channels must be 1 or 3, got {in_channels!r}')
        self.input_size: Tuple[int, int] = (int(size[0]), int(size[1]))
        self.in_channels = int(in_channels)
        self.mean = _floats('mean', mean, self.in_channels)
        self.std = _floats('std', std, self.in_channels)
        if any(s <= 0 for s in self.std):
            raise ValueError(f'std must be positive, got {self.std}')
        # Per output channel c: normalized = raw * scale[c] + offset[c] with scale = 1 / std
        # before dividing by the encoding maximum.
        self._scale = np.array([1.0 / s for s in self.std], dtype=np.float64)
        self._offset = np.array([-m / s for m, s in zip(self.mean, self.std)], dtype=np.float64)
        levels = np.arange(256, dtype=np.float64) / 255.0
        # 8-bit lookup tables: raw value -> normalized value, one row per output channel.
        self._lut8 = (levels[None, :] * self._scale[:, None]
                      + self._offset[:, None]).astype(np.float32)
        # 8-bit colour -> gray: the luma term of each of R, G, B already normalized; the
        # offset rides on the R table so that the three lookups only need adding.
        luma = np.array([LUMA_WEIGHTS[c] for c in 'RGB'], dtype=np.float64)
        self._luma_lut8 = (luma[:, None] * levels[None, :] * self._scale[0]).astype(np.float32)
        self._luma_lut8[0] += np.float32(self._offset[0])
        # Every output is a convex mix of normalized values in [offset, scale + offset]: if
        # those are finite in float32, every pixel is, so callers need not check each frame.
        with np.errstate(over='ignore'):
            ends = np.concatenate([self._offset, self._scale + self._offset]).astype(np.float32)
        if not np.isfinite(ends).all():
            raise ValueError(f'mean {self.mean} and std {self.std} overflow float32 '
                             'when normalizing')

    @classmethod
    def from_spec(cls, spec) -> 'ModelInputTransform':
        """Build from a model input spec with height, width, channels, mean and std."""
        return cls(input_size=(spec.height, spec.width), in_channels=spec.channels,
                   mean=spec.mean, std=spec.std)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(input_size={self.input_size}, '
                f'in_channels={self.in_channels}, mean={self.mean}, std={self.std})')

    def _check_pixels(self, pixels, info: EncodingInfo) -> np.ndarray:
        values = np.asarray(pixels)
        if values.dtype.kind != 'u' or values.dtype.itemsize * 8 != info.depth_bits:
            raise ImageFormatError(
                'bad_array', f'{info.name} pixels must be uint{info.depth_bits}, '
                             f'got {values.dtype}')
        if info.channels == 1 and values.ndim == 3 and values.shape[2] == 1:
            values = values[:, :, 0]
        if info.channels == 1:
            ok = values.ndim == 2
        else:
            ok = values.ndim == 3 and values.shape[2] == info.channels
        if not ok:
            wanted = 'HxW' if info.channels == 1 else f'HxWx{info.channels}'
            raise ImageFormatError(
                'bad_array', f'{info.name} pixels must be {wanted}, got shape {values.shape}')
        if values.shape[0] == 0 or values.shape[1] == 0:
            raise ImageFormatError('empty', f'image is empty ({values.shape[0]}x'
                                            f'{values.shape[1]} pixels)')
        return values

    @staticmethod
    def _planes(values: np.ndarray, info: EncodingInfo):
        """Split HxW / HxWxC pixels into their gray plane or R, G, B planes (views)."""
        if info.channels == 1:
            return [values]
        return [values[:, :, info.order.index(c)] for c in 'RGB']

    def _halve_uint8(self, values: np.ndarray) -> np.ndarray:
        """Exact 2x2 averages while the image stays at least input_size (OpenCV's SIMD)."""
        out_height, out_width = self.input_size
        height, width = values.shape[:2]
        while (height % 2 == 0 and width % 2 == 0 and height >= 2 * out_height
               and width >= 2 * out_width):
            height, width = height // 2, width // 2
            values = cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA)
        return values

    def _shrink_uint8(self, values: np.ndarray, info: EncodingInfo):
        """Resize 8-bit pixels in uint8 (torch's fast antialiased kernel), return planes."""
        # Halve first, by exact 2x2 averages (as Pillow's reduce() does): cheap on camera-size
        # frames, where torch's kernel is slow on one channel, and the exact inverse of a 2x
        # upscale, which the blurrier bilinear filter is not. OpenCV reads rows `step` apart,
        # so message views need no copy.
        values = self._halve_uint8(values)
        if not values.flags.writeable or not values.flags.c_contiguous:
            # torch wants a writable buffer; decoded images are read-only message views.
            values = np.array(values, order='C')
        source = torch.from_numpy(values)
        source = source[None, None] if source.dim() == 2 else source.permute(2, 0, 1)[None]
        resized = functional.interpolate(source, size=self.input_size, mode='bilinear',
                                         align_corners=False, antialias=True)[0].numpy()
        if info.channels == 1:
            return [resized[0]]
        return [resized[info.order.index(c)] for c in 'RGB']

    def _normalized(self, planes, info: EncodingInfo) -> np.ndarray:
        """Planes -> [C, h, w] float32, channels converted and normalized."""
        height, width = planes[0].shape
        out = np.empty((self.in_channels, height, width), dtype=np.float32)
        sources = planes * self.in_channels if len(planes) == 1 else planes
        if info.depth_bits == 8:
            if self.in_channels == 1 and len(sources) == 3:
                np.take(self._luma_lut8[0], sources[0], out=out[0])
                out[0] += np.take(self._luma_lut8[1], sources[1])
                out[0] += np.take(self._luma_lut8[2], sources[2])
            else:
                for c in range(self.in_channels):
                    np.take(self._lut8[c], sources[c], out=out[c])
            return out
        # 16-bit: arithmetic, in float32, on the converted channels.
        maximum = float(info.max_value)
        if self.in_channels == 1 and len(sources) == 3:
            np.multiply(sources[0], np.float32(LUMA_WEIGHTS['R'] / maximum), out=out[0])
            out[0] += sources[1] * np.float32(LUMA_WEIGHTS['G'] / maximum)
            out[0] += sources[2] * np.float32(LUMA_WEIGHTS['B'] / maximum)
            out[0] *= np.float32(self._scale[0])
            out[0] += np.float32(self._offset[0])
            return out
        for c in range(self.in_channels):
            np.multiply(sources[c], np.float32(self._scale[c] / maximum), out=out[c])
            out[c] += np.float32(self._offset[c])
        return out

    def __call__(self, pixels, encoding: str) -> torch.Tensor:
        """
        Pixels (HxW or HxWxC, as image_to_array returns them) to a [1, C, H, W] tensor.

        Raises ImageFormatError for an unknown encoding or pixels that do not fit it.
        """
        info = encoding_info(encoding)
        values = self._check_pixels(pixels, info)
        height, width = values.shape[:2]
        out_height, out_width = self.input_size
        if (height, width) == self.input_size:
            return torch.from_numpy(self._normalized(self._planes(values, info), info))[None]
        if info.depth_bits == 8 and height * width > out_height * out_width:
            # Shrinking 8-bit images: resize the raw bytes first (several times faster than
            # float, within 1/255 of it, as torchvision does for uint8), normalize fewer
            # pixels after.
            planes = self._shrink_uint8(values, info)
            return torch.from_numpy(self._normalized(planes, info))[None]
        tensor = torch.from_numpy(self._normalized(self._planes(values, info), info))[None]
        return functional.interpolate(tensor, size=self.input_size, mode='bilinear',
                                      align_corners=False,
                                      antialias=height > out_height or width > out_width)

    def decode(self, msg, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               fallback: Optional[Callable[[Any], np.ndarray]] = None) -> DecodedImage:
        """
        Decode an Image- or CompressedImage-like message for this model input.

        Images go through decode_image (``fallback`` for encodings it does not know); a
        JPEG is decoded at the smallest scale that still covers ``input_size``, luma only
        for a 1-channel model (see decode_compressed).
        """
        if is_compressed(msg):
            return decode_compressed(msg, max_pixels=max_pixels, min_size=self.input_size,
                                     gray=self.in_channels == 1)
        return decode_image(msg, max_pixels=max_pixels, fallback=fallback)

    def transform_message(self, msg, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                          fallback: Optional[Callable[[Any], np.ndarray]] = None
                          ) -> torch.Tensor:
        """Decode an Image or CompressedImage-like message and transform it (see decode)."""
        decoded = self.decode(msg, max_pixels=max_pixels, fallback=fallback)
        return self(decoded.pixels, decoded.encoding)
