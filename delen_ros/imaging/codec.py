"""
sensor_msgs/Image <-> numpy without copies, duck-typed on the message fields.

Nothing here imports rclpy or sensor_msgs: any object with the fields ``height``,
``width``, ``encoding``, ``is_bigendian``, ``step`` and ``data`` can be decoded,
and any object that accepts those attributes can be filled. Pixel layouts (ENCODINGS) are
viewed without copies; yuv422 and bayer images (CONVERTED_ENCODINGS) are converted to bgr8
or bgr16 by OpenCV, as cv_bridge converts them. Other encodings can be handed to a fallback
decoder (see decode_image).
"""

import array
from dataclasses import dataclass
import math
import numbers
from typing import Any, Callable, Dict, NamedTuple, Optional

import cv2
import numpy as np

__all__ = [
    'CONVERTED_ENCODINGS', 'ConvertedEncoding', 'DEFAULT_MAX_PIXELS', 'DecodedImage',
    'ENCODINGS', 'EncodingInfo', 'ImageFormatError', 'REASONS', 'decode_image',
    'encoding_info', 'fill_image', 'image_to_array',
]

# 4096 x 4096: far above any camera a small robot serves a classifier from.
DEFAULT_MAX_PIXELS = 4096 * 4096
# sensor_msgs/Image.data is a uint8[] whose length is a uint32 on the wire.
_MAX_DATA_BYTES = 2 ** 32 - 1

REASONS = (
    'unknown_encoding',  # encoding is not one this module (or a fallback decoder) decodes
    'empty',             # height or width is 0
    'step_too_small',    # a row holds fewer bytes than width x bytes per pixel
    'data_too_short',    # data holds fewer than step x height bytes
    'oversize',          # more than max_pixels, or step x height beyond a uint32
    'bad_endianness',    # is_bigendian is neither 0 nor 1 for a multi-byte encoding
    'bad_field',         # a field is missing or of the wrong type / sign
    'bad_data',          # data is neither a byte buffer nor a sequence of 0..255
    'bad_array',         # fill_image / transform got an array that does not fit the encoding
    'bad_geometry',      # a size the encoding cannot have (odd width for yuv422)
    'bad_format',        # CompressedImage.format unknown, or naming another codec than the data
    'corrupt',           # compressed data that does not decode (bad header, truncated, garbage)
)


class ImageFormatError(ValueError):
    """A malformed image; ``reason`` is one of REASONS, the message gives the numbers."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f'unknown ImageFormatError reason {reason!r}')
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EncodingInfo:
    """Pixel layout of one encoding: channel order and the dtype of one channel."""

    name: str
    order: str  # 'L' (gray), 'RGB', 'BGR', 'RGBA' or 'BGRA'
    depth_bits: int  # bits per channel: 8 or 16

    @property
    def channels(self) -> int:
        """Return the number of channels per pixel."""
        return len(self.order)

    @property
    def bytes_per_pixel(self) -> int:
        """Return the bytes of one pixel, all channels."""
        return self.channels * self.depth_bits // 8

    @property
    def max_value(self) -> int:
        """Return the largest channel value (255 or 65535), the value that scales to 1.0."""
        return (1 << self.depth_bits) - 1

    def dtype(self, *, big_endian: bool = False) -> np.dtype:
        """Return the numpy dtype of one channel in the given byte order."""
        if self.depth_bits == 8:
            return _UINT8
        return _BIG_UINT16 if big_endian else _LITTLE_UINT16


_UINT8 = np.dtype(np.uint8)
_BIG_UINT16 = np.dtype('>u2')
_LITTLE_UINT16 = np.dtype('<u2')


def _table():
    infos = {}
    for order in ('L', 'RGB', 'BGR', 'RGBA', 'BGRA'):
        for bits in (8, 16):
            name = ('mono' if order == 'L' else order.lower()) + str(bits)
            infos[name] = EncodingInfo(name, order, bits)
    # OpenCV type names as cv_bridge writes them; OpenCV keeps colour as BGR(A).
    infos['8UC1'] = EncodingInfo('8UC1', 'L', 8)
    infos['8UC3'] = EncodingInfo('8UC3', 'BGR', 8)
    infos['8UC4'] = EncodingInfo('8UC4', 'BGRA', 8)
    infos['16UC1'] = EncodingInfo('16UC1', 'L', 16)
    return infos


ENCODINGS: Dict[str, EncodingInfo] = _table()


def encoding_info(encoding: Any) -> EncodingInfo:
    """Layout of an encoding name; ImageFormatError('unknown_encoding') when not supported."""
    info = ENCODINGS.get(encoding) if isinstance(encoding, str) else None
    if info is None:
        raise _unknown_encoding(encoding)
    return info


@dataclass(frozen=True)
class ConvertedEncoding:
    """A raw encoding OpenCV converts to colour: packed yuv422 or a bayer mosaic."""

    name: str
    layout: str  # 'yuv422' (2 bytes per pixel, pairs share chroma) or 'bayer' (1 sample each)
    depth_bits: int  # bits per sample: 8 or 16
    code: int  # the cv2.cvtColor code to BGR
    output: str  # encoding of the converted pixels: 'bgr8' or 'bgr16'

    @property
    def bytes_per_pixel(self) -> int:
        """Return the bytes of one pixel on the wire."""
        return 2 if self.layout == 'yuv422' else self.depth_bits // 8


def _converted():
    infos = {}
    # sensor_msgs/image_encodings: 'yuv422' is UYVY and 'yuv422_yuy2' YUYV; Jazzy added the
    # clearer names 'uyvy' and 'yuyv'. Same conversions as cv_bridge.
    for name, code in (('yuv422', cv2.COLOR_YUV2BGR_UYVY), ('uyvy', cv2.COLOR_YUV2BGR_UYVY),
                       ('yuv422_yuy2', cv2.COLOR_YUV2BGR_YUY2),
                       ('yuyv', cv2.COLOR_YUV2BGR_YUY2)):
        infos[name] = ConvertedEncoding(name, 'yuv422', 8, code, 'bgr8')
    # OpenCV's pattern-named codes (COLOR_BayerRGGB2BGR is cv_bridge's COLOR_BayerBG2BGR).
    for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
        code = getattr(cv2, f'COLOR_Bayer{pattern.upper()}2BGR')
        for bits in (8, 16):
            name = f'bayer_{pattern}{bits}'
            infos[name] = ConvertedEncoding(name, 'bayer', bits, code, f'bgr{bits}')
    return infos


CONVERTED_ENCODINGS: Dict[str, ConvertedEncoding] = _converted()


def _unknown_encoding(encoding) -> ImageFormatError:
    return ImageFormatError(
        'unknown_encoding',
        f'unsupported image encoding {encoding!r}; expected one of '
        f'{", ".join([*ENCODINGS, *CONVERTED_ENCODINGS])}')


class DecodedImage(NamedTuple):
    """Pixels of a decoded image and the encoding that describes their channel order."""

    pixels: np.ndarray
    encoding: str


def _uint_field(msg, name: str) -> int:
    try:
        value = getattr(msg, name)
    except AttributeError:
        raise ImageFormatError('bad_field', f'image has no {name!r} field') from None
    if type(value) is int and value >= 0:  # the common case, cheaper than the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ImageFormatError(
            'bad_field', f'image {name} must be a non-negative integer, got {value!r}')
    return int(value)


def _check_max_pixels(max_pixels) -> int:
    if type(max_pixels) is int and max_pixels >= 1:
        return max_pixels
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) \
            or max_pixels < 1:
        raise ValueError(f'max_pixels must be a positive integer, got {max_pixels!r}')
    return int(max_pixels)


def _check_size(height: int, width: int, max_pixels: int, what: str = 'image') -> None:
    """Refuse an empty image or one of more than max_pixels, before its data is read."""
    if height == 0 or width == 0:
        raise ImageFormatError('empty', f'{what} is empty ({height}x{width} pixels)')
    if height * width > max_pixels:
        raise ImageFormatError(
            'oversize', f'{what} {height}x{width} = {height * width} pixels exceeds '
                        f'max_pixels {max_pixels}')


def _checked_geometry(msg, max_pixels: int):
    """height, width, step of msg, checked against empty / oversize (encoding-independent)."""
    height = _uint_field(msg, 'height')
    width = _uint_field(msg, 'width')
    step = _uint_field(msg, 'step')
    _check_size(height, width, max_pixels)
    if step * height > _MAX_DATA_BYTES:
        raise ImageFormatError(
            'oversize', f'step {step} x height {height} = {step * height} bytes does not fit '
                        f'a uint8[] (at most {_MAX_DATA_BYTES} bytes)')
    return height, width, step


def _byte_view(data) -> np.ndarray:
    """View data as flat uint8: no copy for bytes, bytearray, array.array, memoryview."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    # Not a contiguous buffer (e.g. a list built by hand): one checked copy.
    try:
        values = np.asarray(data)
    except (TypeError, ValueError) as error:
        raise ImageFormatError('bad_data', f'image data is not a byte buffer: {error}') from None
    if values.ndim != 1 or (values.size and values.dtype.kind not in 'iu'):
        raise ImageFormatError(
            'bad_data', f'image data must be a flat sequence of bytes, got '
                        f'{type(data).__name__} of {values.dtype} with shape {values.shape}')
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ImageFormatError(
            'bad_data', f'image data values must be in 0..255, got {values.min()}..'
                        f'{values.max()}')
    return values.astype(np.uint8)


def _big_endian(msg, name: str, depth_bits: int) -> bool:
    """Byte order of multi-byte samples (is_bigendian 0 or 1); 8-bit ignores the flag."""
    if depth_bits == 8:
        return False
    flag = getattr(msg, 'is_bigendian', 0)
    if isinstance(flag, bool):
        flag = int(flag)
    if flag not in (0, 1):
        raise ImageFormatError(
            'bad_endianness', f'is_bigendian must be 0 or 1 for {name}, got {flag!r}')
    return flag == 1


def _checked_step(name: str, width: int, step: int, bytes_per_pixel: int) -> None:
    if step < width * bytes_per_pixel:
        raise ImageFormatError(
            'step_too_small', f'step {step} < width {width} x {bytes_per_pixel} byte(s) per '
                              f'pixel ({name})')


def _message_bytes(msg, height: int, step: int) -> np.ndarray:
    """msg.data as flat uint8 (no copy), checked to hold step x height bytes."""
    try:
        data = msg.data
    except AttributeError:
        raise ImageFormatError('bad_field', "image has no 'data' field") from None
    buffer = _byte_view(data)
    needed = step * height
    if buffer.size < needed:
        raise ImageFormatError(
            'data_too_short', f'data has {buffer.size} byte(s), need {needed} '
                              f'(step {step} x height {height})')
    return buffer


def _decode(msg, info: EncodingInfo, height: int, width: int, step: int) -> np.ndarray:
    bytes_per_pixel = info.bytes_per_pixel
    _checked_step(info.name, width, step, bytes_per_pixel)
    big_endian = _big_endian(msg, info.name, info.depth_bits)
    buffer = _message_bytes(msg, height, step)
    itemsize = info.depth_bits // 8
    if info.channels == 1:
        shape, strides = (height, width), (step, itemsize)
    else:
        shape, strides = (height, width, info.channels), (step, bytes_per_pixel, itemsize)
    # A strided view over the message buffer: row padding is skipped, nothing is copied.
    pixels = np.ndarray(shape, dtype=info.dtype(big_endian=big_endian), buffer=buffer,
                        strides=strides)
    # The view aliases the message; read-only so nobody edits a received image in place.
    pixels.flags.writeable = False
    return pixels


def _convert(msg, info: ConvertedEncoding, height: int, width: int, step: int) -> np.ndarray:
    """yuv422 / bayer -> new HxWx3 BGR array by OpenCV, reading rows ``step`` apart."""
    if info.layout == 'yuv422' and width % 2:
        raise ImageFormatError(
            'bad_geometry', f'{info.name} packs pixels in pairs: width must be even, got '
                            f'{width}')
    _checked_step(info.name, width, step, info.bytes_per_pixel)
    big_endian = _big_endian(msg, info.name, info.depth_bits)
    buffer = _message_bytes(msg, height, step)
    if info.layout == 'yuv422':
        raw = np.ndarray((height, width, 2), dtype=_UINT8, buffer=buffer, strides=(step, 2, 1))
    elif info.depth_bits == 8:
        raw = np.ndarray((height, width), dtype=_UINT8, buffer=buffer, strides=(step, 1))
    else:
        dtype = _BIG_UINT16 if big_endian else _LITTLE_UINT16
        raw = np.ndarray((height, width), dtype=dtype, buffer=buffer, strides=(step, 2))
        if big_endian or step % 2:
            # OpenCV reads native-order samples in rows a whole number of samples apart.
            raw = raw.astype(np.uint16)
    try:
        return cv2.cvtColor(raw, info.code)
    except cv2.error as error:
        raise ImageFormatError(
            'bad_geometry', f'OpenCV cannot convert {height}x{width} {info.name}: '
                            f'{str(error).strip().splitlines()[-1]}') from None


def image_to_array(msg, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """
    Decode a sensor_msgs/Image-like object into a read-only numpy view of its data.

    The result is HxW for one-channel encodings and HxWxC otherwise, in the channel order
    of the encoding (bgr8 stays BGR). 16-bit images keep the byte order of the message
    (``>u2`` when is_bigendian is 1). Nothing is copied when data is a bytes-like buffer
    (bytes, bytearray, array.array('B') as rclpy gives it, memoryview); call ``.copy()``
    to get a writable array that outlives the message.

    Raises ImageFormatError (a ValueError) whose ``reason`` names the problem.
    """
    max_pixels = _check_max_pixels(max_pixels)
    info = encoding_info(getattr(msg, 'encoding', None))
    height, width, step = _checked_geometry(msg, max_pixels)
    return _decode(msg, info, height, width, step)


def decode_image(msg, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 fallback: Optional[Callable[[Any], np.ndarray]] = None) -> DecodedImage:
    """
    Decode a sensor_msgs/Image-like object into pixels plus the encoding that describes them.

    Pixel layouts (ENCODINGS) go through image_to_array without copies. yuv422 (UYVY:
    ``yuv422``, ``uyvy``; YUYV: ``yuv422_yuy2``, ``yuyv``) and bayer (``bayer_rggb8``,
    ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` and their 16-bit forms) are converted
    by OpenCV into a new HxWx3 array, ``bgr8`` (``bgr16`` for 16-bit bayer), as cv_bridge's
    ``imgmsg_to_cv2(msg, 'bgr8')`` does. For any other encoding ``fallback(msg)`` is called,
    if given, and must return HxWx3 uint8 pixels in BGR order; without a fallback it raises
    ImageFormatError('unknown_encoding'). Size checks (empty, oversize) run first.
    """
    max_pixels = _check_max_pixels(max_pixels)
    encoding = getattr(msg, 'encoding', None)
    if encoding in ENCODINGS or not isinstance(encoding, str):
        return DecodedImage(image_to_array(msg, max_pixels=max_pixels),
                            encoding_info(encoding).name)
    converted = CONVERTED_ENCODINGS.get(encoding)
    if converted is not None:
        height, width, step = _checked_geometry(msg, max_pixels)
        return DecodedImage(_convert(msg, converted, height, width, step), converted.output)
    if fallback is None:
        raise _unknown_encoding(encoding)
    height, width, _ = _checked_geometry(msg, max_pixels)
    try:
        pixels = np.asarray(fallback(msg))
    except Exception as error:  # noqa: B902 - decoders raise their own types (CvBridgeError)
        raise ImageFormatError(
            'unknown_encoding', f'fallback decoder cannot convert {encoding!r} to bgr8: '
                                f'{type(error).__name__}: {error}') from None
    if pixels.dtype != np.uint8 or pixels.shape != (height, width, 3):
        raise ImageFormatError(
            'bad_array', f'fallback decoder for {encoding!r} must return {height}x{width}x3 '
                         f'uint8 (bgr8), got {pixels.dtype} of shape {pixels.shape}')
    return DecodedImage(pixels, 'bgr8')


def _set_stamp(header, stamp) -> None:
    if hasattr(stamp, 'to_msg'):  # rclpy.time.Time
        stamp = stamp.to_msg()
    if hasattr(stamp, 'sec') and hasattr(stamp, 'nanosec'):
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    elif isinstance(stamp, numbers.Real) and not isinstance(stamp, bool) \
            and math.isfinite(stamp) and stamp >= 0:
        sec = int(stamp)
        nanosec = min(int(round((stamp - sec) * 1e9)), 999_999_999)
    else:
        raise ValueError(
            f'stamp must be a builtin_interfaces/Time, an rclpy Time or non-negative '
            f'seconds, got {stamp!r}')
    header.stamp.sec = sec
    header.stamp.nanosec = nanosec


def fill_image(msg, pixels, *, encoding: str, frame_id: Optional[str] = None,
               stamp=None):
    """
    Fill an Image-like message from a numpy array and return the message.

    ``pixels`` is HxW (or HxWx1) for one-channel encodings, HxWxC otherwise, of uint8 for
    8-bit and uint16 for 16-bit encodings, already in the channel order of ``encoding``.
    Rows are written without padding (step = width x bytes per pixel), little-endian
    (is_bigendian = 0). ``stamp`` may be a builtin_interfaces/Time, an rclpy Time or
    seconds; ``frame_id`` and ``stamp`` need a ``header`` on the message. yuv422 and bayer
    encodings take what decode_image gives back for them: HxWx3 BGR (uint16 for 16-bit
    bayer) or HxW gray, converted by OpenCV (yuv422) or sampled into the mosaic (bayer).
    """
    converted = CONVERTED_ENCODINGS.get(encoding) if isinstance(encoding, str) else None
    if converted is not None:
        return _fill_converted(msg, np.asarray(pixels), converted, frame_id, stamp)
    info = encoding_info(encoding)
    values = np.asarray(pixels)
    if values.dtype.kind != 'u' or values.dtype.itemsize * 8 != info.depth_bits:
        raise ImageFormatError(
            'bad_array', f'{encoding} needs uint{info.depth_bits} pixels, got {values.dtype}')
    if info.channels == 1 and values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    expected = 2 if info.channels == 1 else 3
    if values.ndim != expected or (expected == 3 and values.shape[2] != info.channels):
        wanted = 'HxW' if info.channels == 1 else f'HxWx{info.channels}'
        raise ImageFormatError(
            'bad_array', f'{encoding} needs an {wanted} array, got shape {values.shape}')
    height, width = values.shape[:2]
    if height == 0 or width == 0:
        raise ImageFormatError('empty', f'image is empty ({height}x{width} pixels)')
    step = width * info.bytes_per_pixel
    if step * height > _MAX_DATA_BYTES:
        raise ImageFormatError(
            'oversize', f'{height}x{width} {encoding} needs {step * height} bytes, more than '
                        f'a uint8[] holds ({_MAX_DATA_BYTES})')
    # Little-endian and C-contiguous; a no-op for the usual arrays on x86 and ARM.
    values = np.ascontiguousarray(values, dtype=info.dtype(big_endian=False))
    return _write(msg, values, encoding, step, frame_id, stamp)


def _write(msg, values: np.ndarray, encoding: str, step: int, frame_id, stamp):
    """Set the fields of msg from C-contiguous little-endian rows of ``step`` bytes."""
    if frame_id is not None or stamp is not None:
        header = msg.header
        if frame_id is not None:
            header.frame_id = str(frame_id)
        if stamp is not None:
            _set_stamp(header, stamp)
    msg.height = values.shape[0]
    msg.width = values.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    # rclpy stores uint8[] as array.array('B'); handing it one built with a single memcpy
    # is the fastest path (bench/bench_imaging.py); bytes are checked value by value when
    # ROS_PYTHON_CHECK_FIELDS=1.
    data = array.array('B')
    data.frombytes(values.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


def _fill_converted(msg, values: np.ndarray, info: ConvertedEncoding, frame_id, stamp):
    """BGR (or gray) pixels -> yuv422 by OpenCV, or -> a bayer mosaic by sampling."""
    dtype = np.uint8 if info.depth_bits == 8 else np.uint16
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    if values.dtype != dtype or values.ndim != 3 or values.shape[2] != 3:
        raise ImageFormatError(
            'bad_array', f'{info.name} is filled from HxWx3 {np.dtype(dtype).name} BGR (or HxW '
                         f'gray) pixels, got {values.dtype} of shape {values.shape}')
    height, width = values.shape[:2]
    if height == 0 or width == 0:
        raise ImageFormatError('empty', f'image is empty ({height}x{width} pixels)')
    if info.layout == 'yuv422':
        if width % 2:
            raise ImageFormatError('bad_geometry', f'{info.name} packs pixels in pairs: '
                                                   f'width must be even, got {width}')
        code = cv2.COLOR_BGR2YUV_UYVY if info.code == cv2.COLOR_YUV2BGR_UYVY \
            else cv2.COLOR_BGR2YUV_YUY2
        raw = cv2.cvtColor(np.ascontiguousarray(values), code)
    else:
        pattern = info.name[len('bayer_'):len('bayer_') + 4]
        raw = np.empty((height, width), dtype=dtype)
        for index, colour in enumerate(pattern):
            row, column = divmod(index, 2)
            raw[row::2, column::2] = values[row::2, column::2, 'bgr'.index(colour)]
    step = width * info.bytes_per_pixel
    return _write(msg, np.ascontiguousarray(raw, dtype=raw.dtype.newbyteorder('<')),
                  info.name, step, frame_id, stamp)
