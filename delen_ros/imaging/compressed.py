"""
sensor_msgs/CompressedImage (jpeg, png) <-> numpy through OpenCV, duck-typed on the fields.

A CompressedImage-like object has ``format`` and ``data`` (and ``header`` to fill). The
format is read as image_transport's compressed plugin writes it (``"rgb8; jpeg compressed
bgr8"``, ``"mono8; png compressed mono8"``) or as cv_bridge writes it (``"jpeg"``,
``"png"``); an empty format is told by the data's signature. The size in the header of the
data is checked before anything is decoded, so a small message declaring a huge image costs
nothing, and a truncated stream is refused rather than decoded half grey.
"""

import array
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from .codec import (_byte_view, _check_max_pixels, _check_size, _set_stamp, DecodedImage,
                    DEFAULT_MAX_PIXELS, ImageFormatError)

__all__ = ['COMPRESSIONS', 'compression_of', 'decode_compressed', 'fill_compressed',
           'is_compressed']

COMPRESSIONS = ('jpeg', 'png')

_SIGNATURES = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
_ALIASES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png'}
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): not DHT, JPG, DAC.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
# The decoder may shrink a JPEG by these factors while it decodes (DCT scaling).
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_COLOR_2),
)
# What imdecode(IMREAD_UNCHANGED) returns -> its encoding: (channels, dtype) -> name.
_DECODED = {(1, 'uint8'): 'mono8', (3, 'uint8'): 'bgr8', (4, 'uint8'): 'bgra8',
            (1, 'uint16'): 'mono16', (3, 'uint16'): 'bgr16', (4, 'uint16'): 'bgra16'}


def is_compressed(msg) -> bool:
    """Whether msg looks like a CompressedImage (a format and no encoding)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def compression_of(format_string: Any) -> Optional[str]:
    """
    Return the codec a CompressedImage format names: 'jpeg', 'png', or None for none.

    Raises ImageFormatError('bad_format') for a format that is not a string or names a
    transport this module does not decode (compressedDepth).
    """
    if not isinstance(format_string, str):
        raise ImageFormatError('bad_format', f'format must be a string, got '
                                             f'{type(format_string).__name__}')
    words = format_string.lower().replace(';', ' ').split()
    if 'compresseddepth' in words:
        raise ImageFormatError(
            'bad_format', f'format {format_string!r} is compressed_depth (depth images), '
                          f'not supported; subscribe to the raw depth image')
    named = {_ALIASES[word] for word in words if word in _ALIASES}
    if len(named) > 1:
        raise ImageFormatError('bad_format', f'format {format_string!r} names more than one '
                                             f'codec')
    if not named and words:
        raise ImageFormatError(
            'bad_format', f'format {format_string!r} names no codec; expected jpeg or png, '
                          f'as in "rgb8; jpeg compressed bgr8"')
    return named.pop() if named else None


def _sniff(data: np.ndarray) -> Optional[str]:
    head = data[:8].tobytes()
    return next((name for name, magic in _SIGNATURES.items() if head.startswith(magic)), None)


def _jpeg_size(data: np.ndarray) -> Tuple[int, int]:
    """(height, width) from the first start-of-frame segment, skipping the others."""
    view = memoryview(data)
    size = len(view)
    index = 2
    while index + 3 < size:
        if view[index] != 0xFF:
            break
        marker = view[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in _STANDALONE_MARKERS:
            index += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            break
        length = (view[index + 2] << 8) | view[index + 3]
        if marker in _SOF_MARKERS:
            if index + 9 > size or length < 8:
                break
            height = (view[index + 5] << 8) | view[index + 6]
            width = (view[index + 7] << 8) | view[index + 8]
            return height, width
        index += 2 + length
    raise ImageFormatError('corrupt', 'JPEG data has no readable frame header (size unknown)')


def _png_size(data: np.ndarray) -> Tuple[int, int]:
    head = data[:24].tobytes()
    if len(head) < 24 or head[12:16] != b'IHDR':
        raise ImageFormatError('corrupt', 'PNG data has no IHDR header (size unknown)')
    return int.from_bytes(head[20:24], 'big'), int.from_bytes(head[16:20], 'big')


def _check_complete(data: np.ndarray, compression: str) -> None:
    # A stream cut short decodes, with a warning, into a half-grey picture: refuse it.
    tail = data[-16:].tobytes()
    if compression == 'jpeg' and b'\xff\xd9' not in tail:
        raise ImageFormatError('corrupt', f'JPEG data of {data.size} bytes is truncated '
                                          f'(no end-of-image marker)')
    if compression == 'png' and b'IEND' not in tail:
        raise ImageFormatError('corrupt', f'PNG data of {data.size} bytes is truncated '
                                          f'(no IEND chunk)')


def _reduction(size: Tuple[int, int], min_size: Optional[Sequence[int]]) -> int:
    """Return the largest JPEG scale-down factor that keeps the image at least min_size."""
    if min_size is None:
        return 1
    height, width = size
    for factor, _, _ in _REDUCED:
        if -(-height // factor) >= min_size[0] and -(-width // factor) >= min_size[1]:
            return factor
    return 1


def decode_compressed(msg, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      min_size: Optional[Sequence[int]] = None,
                      gray: bool = False) -> DecodedImage:
    """
    Decode a sensor_msgs/CompressedImage-like object (jpeg or png) into pixels + encoding.

    Without hints the pixels are what cv_bridge's ``compressed_imgmsg_to_cv2(msg)`` returns
    (OpenCV's IMREAD_UNCHANGED): ``mono8``, ``bgr8``, ``bgra8``, or their 16-bit forms for
    PNG. Hints for a caller that resizes next (a model input): ``min_size`` (height, width)
    lets a JPEG be decoded at 1/2, 1/4 or 1/8 scale while it stays at least that large, and
    ``gray`` decodes a JPEG's luma only (``mono8``). PNG ignores both. Raises
    ImageFormatError: 'bad_format' (format string), 'corrupt' (data), 'oversize', 'empty'.
    """
    max_pixels = _check_max_pixels(max_pixels)
    try:
        data = msg.data
    except AttributeError:
        raise ImageFormatError('bad_field', "compressed image has no 'data' field") from None
    named = compression_of(getattr(msg, 'format', ''))
    buffer = _byte_view(data)
    if buffer.size == 0:
        raise ImageFormatError('empty', 'compressed image data is empty')
    found = _sniff(buffer)
    if found is None:
        raise ImageFormatError(
            'corrupt', f'data ({buffer.size} bytes, starting {buffer[:4].tobytes()!r}) is '
                       f'neither JPEG nor PNG')
    if named is not None and named != found:
        raise ImageFormatError('bad_format', f'format {msg.format!r} says {named} but the '
                                             f'data is {found}')
    height, width = _jpeg_size(buffer) if found == 'jpeg' else _png_size(buffer)
    _check_size(height, width, max_pixels, f'{found} image')
    _check_complete(buffer, found)
    factor = 1
    flags = cv2.IMREAD_UNCHANGED
    if found == 'jpeg' and (gray or min_size is not None):
        factor = _reduction((height, width), min_size)
        reduced = {f: (g, c) for f, g, c in _REDUCED}.get(factor)
        if reduced is None:
            flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
        else:
            flags = reduced[0] if gray else reduced[1]
        # Camera frames keep their pixel geometry: no EXIF rotation.
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        pixels = cv2.imdecode(buffer, flags)
    except cv2.error as error:
        raise ImageFormatError('corrupt', f'{found} data does not decode: '
                                          f'{str(error).strip().splitlines()[-1]}') from None
    if pixels is None:
        raise ImageFormatError('corrupt', f'{found} data of {buffer.size} bytes does not '
                                          f'decode')
    expected = (-(-height // factor), -(-width // factor))
    if pixels.shape[:2] != expected:
        raise ImageFormatError('corrupt', f'{found} header says {height}x{width} but '
                                          f'{pixels.shape[0]}x{pixels.shape[1]} decoded')
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    encoding = _DECODED.get((channels, pixels.dtype.name))
    if encoding is None:
        raise ImageFormatError('corrupt', f'{found} decoded into {channels} channel(s) of '
                                          f'{pixels.dtype}, which no encoding describes')
    return DecodedImage(pixels, encoding)


def fill_compressed(msg, pixels, *, encoding: str, compression: str = 'jpeg',
                    quality: int = 95, frame_id: Optional[str] = None, stamp=None):
    """
    Fill a CompressedImage-like message as image_transport's compressed publisher does.

    ``pixels`` are ``mono8`` (HxW), ``bgr8`` or ``rgb8`` (HxWx3; JPEG and PNG store BGR as
    OpenCV reads it) and, for PNG, ``mono16``; the format reads e.g. ``"rgb8; jpeg
    compressed bgr8"``. ``quality`` is the JPEG quality (1..100). Returns the message.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f'compression must be one of {", ".join(COMPRESSIONS)}, '
                         f'got {compression!r}')
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f'quality must be an integer in 1..100, got {quality!r}')
    values = np.asarray(pixels)
    shapes = {'mono8': (2, 'uint8'), 'bgr8': (3, 'uint8'), 'rgb8': (3, 'uint8')}
    if compression == 'png':
        shapes['mono16'] = (2, 'uint16')
    wanted = shapes.get(encoding)
    if wanted is None:
        raise ImageFormatError('unknown_encoding', f'{compression} compression takes '
                                                   f'{", ".join(shapes)}, got {encoding!r}')
    if (values.ndim, values.dtype.name) != wanted or (
            values.ndim == 3 and values.shape[2] != 3):
        shape = 'HxW' if wanted[0] == 2 else 'HxWx3'
        raise ImageFormatError('bad_array', f'{encoding} needs {shape} {wanted[1]}, got '
                                            f'{values.dtype} of shape {values.shape}')
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ImageFormatError('empty', f'image is empty ({values.shape[0]}x'
                                        f'{values.shape[1]} pixels)')
    if encoding == 'rgb8':
        values = values[:, :, ::-1]
    target = encoding if values.ndim == 2 else 'bgr8'
    if compression == 'jpeg':
        ok, encoded = cv2.imencode('.jpg', values, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, encoded = cv2.imencode('.png', values)
    if not ok:  # pragma: no cover - OpenCV refuses only shapes checked above
        raise ImageFormatError('bad_array', f'OpenCV could not encode {encoding} as '
                                            f'{compression}')
    if frame_id is not None or stamp is not None:
        if frame_id is not None:
            msg.header.frame_id = str(frame_id)
        if stamp is not None:
            _set_stamp(msg.header, stamp)
    msg.format = f'{encoding}; {compression} compressed {target}'
    data = array.array('B')
    data.frombytes(encoded.reshape(-1))
    msg.data = data
    return msg
