"""CompressedImage (jpeg, png), yuv422 and bayer through the codec, on real messages."""

import array

import cv2
from delen_ros.engine import exit_logits, fashion_mnist, load_checkpoint
from delen_ros.imaging import (compression_of, COMPRESSIONS, CONVERTED_ENCODINGS,
                               decode_compressed, decode_image, fill_compressed, fill_image,
                               ImageFormatError, ModelInputTransform)
from hypothesis import given, settings, strategies
import numpy as np
import pytest
import torch

msg_module = pytest.importorskip('sensor_msgs.msg')
Image, CompressedImage = msg_module.Image, msg_module.CompressedImage
serialization = pytest.importorskip('rclpy.serialization')

YUV = ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv')
BAYER8 = ('bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8', 'bayer_grbg8')
BAYER16 = tuple(name.replace('8', '16') for name in BAYER8)


def _received(msg):
    """Pass the message through rclpy serialization, as a subscriber gets it."""
    return serialization.deserialize_message(serialization.serialize_message(msg), type(msg))


def _smooth_bgr(height, width, seed=0):
    """Make a colour picture with edges and gradients (what cameras see), uint8 BGR."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)


def _padded(msg, padding):
    """Copy an Image with `padding` junk bytes after every row."""
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    junk = np.full((msg.height, padding), 0xAB, np.uint8)
    padded = Image(height=msg.height, width=msg.width, encoding=msg.encoding,
                   is_bigendian=msg.is_bigendian, step=msg.step + padding)
    padded.data = array.array('B', np.concatenate([rows, junk], axis=1).tobytes())
    return padded


# --- yuv422 and bayer ----------------------------------------------------------------------


def test_converted_encodings_are_the_ros_names():
    assert set(YUV + BAYER8 + BAYER16) == set(CONVERTED_ENCODINGS)
    for name in YUV + BAYER8:
        assert CONVERTED_ENCODINGS[name].output == 'bgr8'
    for name in BAYER16:
        assert CONVERTED_ENCODINGS[name].output == 'bgr16'


@pytest.mark.parametrize('encoding', YUV)
def test_yuv422_round_trips_through_opencv(encoding):
    bgr = _smooth_bgr(48, 64)
    msg = _received(fill_image(Image(), bgr, encoding=encoding, frame_id='cam', stamp=3.5))
    assert (msg.step, msg.encoding, len(msg.data)) == (128, encoding, 128 * 48)
    assert msg.header.frame_id == 'cam'
    decoded = decode_image(msg)
    assert decoded.encoding == 'bgr8' and decoded.pixels.shape == (48, 64, 3)
    # 4:2:2 shares chroma between two pixels: close, not equal, on a smooth picture.
    error = np.abs(decoded.pixels.astype(int) - bgr).mean()
    assert error < 4.0, error
    gray = bgr[:, :, 1]
    decoded = decode_image(fill_image(Image(), gray, encoding=encoding))
    assert np.abs(decoded.pixels.astype(int) - gray[:, :, None]).max() <= 1


def test_uyvy_and_yuyv_byte_orders_differ_as_named():
    pixels = np.full((2, 2, 3), (40, 90, 200), np.uint8)
    uyvy = fill_image(Image(), pixels, encoding='uyvy')
    yuyv = fill_image(Image(), pixels, encoding='yuyv')
    assert bytes(uyvy.data[1:2]) == bytes(yuyv.data[0:1])  # Y is second in UYVY, first in YUYV
    # Read with the other order, the colour is wrong: the two are not interchangeable.
    uyvy.encoding = 'yuyv'
    assert np.abs(decode_image(uyvy).pixels.astype(int) - pixels).max() > 20
    yuyv.encoding = 'yuv422_yuy2'
    assert np.abs(decode_image(yuyv).pixels.astype(int) - pixels).max() <= 2


@pytest.mark.parametrize('encoding', BAYER8 + BAYER16)
def test_bayer_patterns_demosaic_to_the_right_colour(encoding):
    deep = encoding.endswith('16')
    colour = np.array((50, 100, 200), dtype=np.uint16 if deep else np.uint8)  # B, G, R
    if deep:
        colour = colour * 300
    pixels = np.broadcast_to(colour, (12, 16, 3))
    msg = _received(fill_image(Image(), pixels, encoding=encoding))
    assert msg.step == 16 * (2 if deep else 1)
    decoded = decode_image(msg)
    assert decoded.encoding == ('bgr16' if deep else 'bgr8')
    assert decoded.pixels.dtype == colour.dtype
    # Interior pixels of a flat colour come back exactly, whatever the pattern.
    np.testing.assert_array_equal(decoded.pixels[2:-2, 2:-2], pixels[2:-2, 2:-2])


def test_bayer16_big_endian_is_read_in_its_byte_order():
    pixels = np.broadcast_to(np.array((1000, 20000, 60000), np.uint16), (8, 8, 3))
    little = fill_image(Image(), pixels, encoding='bayer_grbg16')
    raw = np.frombuffer(little.data, '<u2').astype('>u2')
    big = Image(height=8, width=8, encoding='bayer_grbg16', is_bigendian=1, step=16)
    big.data = array.array('B', raw.tobytes())
    np.testing.assert_array_equal(decode_image(big).pixels, decode_image(little).pixels)
    big.is_bigendian = 3
    with pytest.raises(ImageFormatError) as caught:
        decode_image(big)
    assert caught.value.reason == 'bad_endianness'


@pytest.mark.parametrize('encoding', ['yuv422', 'yuyv', 'bayer_bggr8', 'bayer_rggb16'])
@pytest.mark.parametrize('padding', [1, 6])
def test_converted_encodings_respect_step(encoding, padding):
    pixels = _smooth_bgr(10, 14, seed=3)
    if encoding.endswith('16'):
        pixels = pixels.astype(np.uint16) * 257
    msg = fill_image(Image(), pixels, encoding=encoding)
    padded = _received(_padded(msg, padding))
    np.testing.assert_array_equal(decode_image(padded).pixels, decode_image(msg).pixels)


@pytest.mark.parametrize('fields,reason,words', [
    ({'width': 27, 'step': 54}, 'bad_geometry', ['yuv422', 'even', '27']),
    ({'step': 40}, 'step_too_small', ['step 40 < width 28 x 2', 'yuv422']),
    ({'data': array.array('B', bytes(100))}, 'data_too_short', ['100 byte(s)', 'need 1568']),
    ({'height': 0}, 'empty', ['0x28']),
    ({'height': 5000, 'width': 5000, 'step': 10000}, 'oversize', ['5000x5000']),
])
def test_malformed_yuv422_names_the_problem(fields, reason, words):
    msg = Image(height=28, width=28, encoding='yuv422', step=56)
    msg.data = array.array('B', bytes(56 * 28))
    for name, value in fields.items():
        setattr(msg, name, value)
    with pytest.raises(ImageFormatError) as caught:
        decode_image(msg)
    assert caught.value.reason == reason
    for word in words:
        assert word in str(caught.value)


def test_malformed_bayer_names_the_problem():
    msg = Image(height=4, width=4, encoding='bayer_rggb16', step=6)
    msg.data = array.array('B', bytes(32))
    with pytest.raises(ImageFormatError, match='step 6 < width 4 x 2') as caught:
        decode_image(msg)
    assert caught.value.reason == 'step_too_small'
    msg.step = 8
    msg.data = array.array('B', bytes(31))
    with pytest.raises(ImageFormatError) as caught:
        decode_image(msg)
    assert caught.value.reason == 'data_too_short'


def test_fill_refuses_what_yuv422_and_bayer_cannot_hold():
    with pytest.raises(ImageFormatError) as caught:
        fill_image(Image(), np.zeros((4, 5, 3), np.uint8), encoding='uyvy')
    assert caught.value.reason == 'bad_geometry'
    with pytest.raises(ImageFormatError) as caught:
        fill_image(Image(), np.zeros((4, 4, 3), np.uint8), encoding='bayer_rggb16')
    assert caught.value.reason == 'bad_array'


# --- CompressedImage -----------------------------------------------------------------------


@pytest.mark.parametrize('format_string,expected', [
    ('rgb8; jpeg compressed bgr8', 'jpeg'),
    ('mono8; jpeg compressed mono8', 'jpeg'),
    ('bgr8; png compressed bgr8', 'png'),
    ('mono16; png compressed mono16', 'png'),
    ('jpeg', 'jpeg'), ('jpg', 'jpeg'), ('png', 'png'), ('JPEG', 'jpeg'), ('', None),
])
def test_format_strings_as_image_transport_and_cv_bridge_write_them(format_string, expected):
    assert compression_of(format_string) == expected


@pytest.mark.parametrize('format_string,words', [
    ('16UC1; compressedDepth png', ['compressed_depth']),
    ('bmp', ['names no codec', 'jpeg or png']),
    ('rgb8; jpeg compressed png', ['more than one codec']),
])
def test_unsupported_format_strings_are_refused(format_string, words):
    with pytest.raises(ImageFormatError) as caught:
        compression_of(format_string)
    assert caught.value.reason == 'bad_format'
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize('encoding,compression', [
    ('mono8', 'png'), ('bgr8', 'png'), ('rgb8', 'png'), ('mono16', 'png'),
    ('mono8', 'jpeg'), ('bgr8', 'jpeg'), ('rgb8', 'jpeg')])
def test_compressed_round_trips(encoding, compression):
    bgr = _smooth_bgr(40, 56, seed=1)
    pixels = {'mono8': bgr[:, :, 1], 'bgr8': bgr, 'rgb8': bgr[:, :, ::-1],
              'mono16': bgr[:, :, 1].astype(np.uint16) * 257}[encoding]
    msg = _received(fill_compressed(CompressedImage(), pixels, encoding=encoding,
                                    compression=compression, quality=95, frame_id='cam',
                                    stamp=7.0))
    target = 'bgr8' if encoding == 'rgb8' else encoding
    assert msg.format == f'{encoding}; {compression} compressed {target}'
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 7
    decoded = decode_compressed(msg)
    expected = bgr if encoding == 'rgb8' else pixels
    assert decoded.encoding == target and decoded.pixels.shape == expected.shape
    if compression == 'png':
        np.testing.assert_array_equal(decoded.pixels, expected)
    else:
        assert np.abs(decoded.pixels.astype(int) - expected).mean() < 3.0


def test_empty_format_is_told_by_the_data():
    msg = fill_compressed(CompressedImage(), _smooth_bgr(16, 16), encoding='bgr8',
                          compression='png')
    msg.format = ''
    assert decode_compressed(msg).pixels.shape == (16, 16, 3)


@pytest.mark.parametrize('size,min_size,gray,shape,encoding', [
    ((480, 640), (28, 28), True, (60, 80), 'mono8'),
    ((480, 640), (224, 224), False, (240, 320, 3), 'bgr8'),
    ((480, 640), (100, 300), False, (240, 320, 3), 'bgr8'),
    ((720, 1280), (28, 28), False, (90, 160, 3), 'bgr8'),
    ((28, 28), (28, 28), True, (28, 28), 'mono8'),
    ((481, 641), (28, 28), True, (61, 81), 'mono8'),
])
def test_jpeg_decodes_as_small_as_the_model_input_allows(size, min_size, gray, shape,
                                                         encoding):
    bgr = _smooth_bgr(*size, seed=2)
    msg = fill_compressed(CompressedImage(), bgr, encoding='bgr8', quality=90)
    decoded = decode_compressed(msg, min_size=min_size, gray=gray)
    assert decoded.pixels.shape == shape and decoded.encoding == encoding
    if size[0] % shape[0]:
        return  # the last row of blocks is partial: a size check only
    # The reduced decode is the picture at that scale.
    reference = cv2.resize(bgr, shape[1::-1], interpolation=cv2.INTER_AREA)
    if gray:
        reference = cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY)
    assert np.abs(decoded.pixels.astype(int) - reference).mean() < 4.0


def test_model_input_from_jpeg_matches_the_raw_frame():
    bgr = _smooth_bgr(480, 640, seed=4)
    for channels, size in [(1, (28, 28)), (3, (224, 224))]:
        transform = ModelInputTransform(input_size=size, in_channels=channels,
                                        mean=(0.5,) * channels, std=(0.25,) * channels)
        raw = transform.transform_message(fill_image(Image(), bgr, encoding='bgr8'))
        jpeg = transform.transform_message(
            _received(fill_compressed(CompressedImage(), bgr, encoding='bgr8', quality=90)))
        assert jpeg.shape == raw.shape == (1, channels, *size)
        # Normalized units: 1 / 255 / 0.25 is one grey level.
        assert (jpeg - raw).abs().mean() < 3 / 255 / 0.25


def _jpeg(size=(32, 48)):
    return fill_compressed(CompressedImage(), _smooth_bgr(*size), encoding='bgr8')


def _with_data(msg, data, format_string=None):
    msg.data = array.array('B', bytes(data))
    if format_string is not None:
        msg.format = format_string
    return msg


def _truncated(msg):
    return _with_data(msg, bytes(msg.data)[:len(msg.data) // 2])


def _header_only_huge():
    data = bytearray(bytes(_jpeg().data))
    start = data.index(b'\xff\xc0')
    data[start + 5:start + 9] = (30000).to_bytes(2, 'big') + (30000).to_bytes(2, 'big')
    return _with_data(_jpeg(), data)


def _png_says_jpeg():
    png = fill_compressed(CompressedImage(), _smooth_bgr(8, 8), encoding='bgr8',
                          compression='png')
    return _with_data(png, bytes(png.data), 'rgb8; jpeg compressed bgr8')


def _corrupt_scan():
    data = bytearray(bytes(_jpeg().data))
    scan = data.index(b'\xff\xda')
    data[scan + 2:-2] = b'\xff' * (len(data) - scan - 4)
    return _with_data(_jpeg(), data)


@pytest.mark.parametrize('build,reason,words', [
    (lambda: _with_data(_jpeg(), b''), 'empty', ['empty']),
    (lambda: _with_data(_jpeg(), b'not an image at all'), 'corrupt', ['neither JPEG nor PNG']),
    (lambda: _truncated(_jpeg()), 'corrupt', ['truncated']),
    (lambda: _truncated(fill_compressed(CompressedImage(), _smooth_bgr(64, 64),
                                        encoding='bgr8', compression='png')),
     'corrupt', ['truncated']),
    (lambda: _with_data(_jpeg(), b'\xff\xd8\xff\xd9'), 'corrupt', ['no readable frame header']),
    (_corrupt_scan, 'corrupt', ['does not decode']),
    (_header_only_huge, 'oversize', ['30000x30000']),
    (_png_says_jpeg, 'bad_format', ['says jpeg', 'data is png']),
    (lambda: _with_data(_jpeg(), bytes(_jpeg().data), 'theora'), 'bad_format', ['theora']),
])
def test_bad_compressed_images_name_the_problem(build, reason, words):
    msg = _received(build())
    with pytest.raises(ImageFormatError) as caught:
        decode_compressed(msg)
    assert caught.value.reason == reason
    for word in words:
        assert word in str(caught.value)
    transform = ModelInputTransform(input_size=(28, 28), in_channels=1, mean=(0.5,),
                                    std=(0.25,))
    with pytest.raises(ImageFormatError):
        transform.transform_message(msg)


def test_fill_compressed_refuses_bad_arguments():
    with pytest.raises(ValueError, match='compression must be one of'):
        fill_compressed(CompressedImage(), np.zeros((4, 4), np.uint8), encoding='mono8',
                        compression='webp')
    with pytest.raises(ValueError, match='quality'):
        fill_compressed(CompressedImage(), np.zeros((4, 4), np.uint8), encoding='mono8',
                        quality=0)
    with pytest.raises(ImageFormatError) as caught:
        fill_compressed(CompressedImage(), np.zeros((4, 4), np.uint16), encoding='mono16')
    assert caught.value.reason == 'unknown_encoding'
    with pytest.raises(ImageFormatError) as caught:
        fill_compressed(CompressedImage(), np.zeros((4, 4), np.uint8), encoding='bgr8')
    assert caught.value.reason == 'bad_array'
    assert COMPRESSIONS == ('jpeg', 'png')


_VALID_JPEG = bytes(fill_compressed(CompressedImage(), np.full((16, 24, 3), 90, np.uint8),
                                    encoding='bgr8').data)


@settings(max_examples=150, deadline=None)
@given(strategies.lists(strategies.tuples(strategies.integers(0, len(_VALID_JPEG) - 1),
                                          strategies.integers(0, 255)), max_size=8),
       strategies.integers(1, len(_VALID_JPEG)),
       strategies.sampled_from(['jpeg', 'png', '', 'rgb8; jpeg compressed bgr8']))
def test_mangled_jpeg_decodes_or_raises_image_format_error(edits, length, format_string):
    data = bytearray(_VALID_JPEG)
    for index, value in edits:
        data[index] = value
    msg = CompressedImage(format=format_string)
    msg.data = array.array('B', bytes(data[:length]))
    try:
        decoded = decode_compressed(msg, max_pixels=64 * 64)
    except ImageFormatError as error:
        assert error.reason in {'corrupt', 'bad_format', 'empty', 'oversize'}
    else:
        assert decoded.pixels.ndim in (2, 3) and decoded.pixels.size > 0


# --- accuracy through the codec, on the Fashion-MNIST test set -----------------------------


@pytest.fixture(scope='module')
def model():
    return load_checkpoint()


def _camera_size(frame, size, interpolation=cv2.INTER_LINEAR):
    """Scale a Fashion-MNIST frame up to bgr8 of a camera's size."""
    big = cv2.resize(frame, (size[1], size[0]), interpolation=interpolation)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


STREAMS = {
    'jpeg q90 mono8': lambda f: fill_compressed(CompressedImage(), f, encoding='mono8',
                                                quality=90),
    'yuv422': lambda f: fill_image(Image(), f, encoding='yuv422'),
    'yuv422_yuy2': lambda f: fill_image(Image(), f, encoding='yuv422_yuy2'),
    # A bayer sensor sees each frame pixel through one 2x2 cell of its mosaic (at 28x28
    # itself, bilinear demosaicing blurs the frame enough to cost about 3 points).
    **{name: (lambda f, name=name: fill_image(
        Image(), _camera_size(f, (56, 56), cv2.INTER_NEAREST), encoding=name))
       for name in ('bayer_rggb8', 'bayer_gbrg8')},
}


def test_accuracy_through_every_codec_is_within_one_point_of_raw_mono8(model):
    images, labels = fashion_mnist.load('test')
    count = 1000  # each stream costs one pass of the network over these
    frames, truth = images[:count], torch.from_numpy(labels[:count].astype(np.int64))
    transform = ModelInputTransform.from_spec(model.config.input_spec)

    def accuracy(messages):
        batch = torch.cat([transform.transform_message(m) for m in messages])
        with torch.inference_mode():
            final = exit_logits(model.network, batch)[-1]
        return float((final.argmax(1) == truth).float().mean())

    raw = accuracy([fill_image(Image(), f, encoding='mono8') for f in frames])
    assert raw > 0.85
    for name, build in STREAMS.items():
        measured = accuracy([build(f) for f in frames])
        assert abs(measured - raw) <= 0.01, f'{name}: {measured:.4f} vs raw mono8 {raw:.4f}'
    # Camera-size frames: scaling up and back down costs accuracy of its own, so the JPEG
    # (decoded at 1/8 scale) is compared with the same frames sent raw.
    big = [_camera_size(f, (480, 640)) for f in frames]
    raw_big = accuracy([fill_image(Image(), f, encoding='bgr8') for f in big])
    jpeg_big = accuracy([fill_compressed(CompressedImage(), f, encoding='bgr8', quality=90)
                         for f in big])
    assert abs(jpeg_big - raw_big) <= 0.01, f'640x480 jpeg {jpeg_big:.4f} vs raw {raw_big:.4f}'


# --- cv_bridge, where it is installed ------------------------------------------------------


def _cv_bridge():
    try:
        from cv_bridge import CvBridge, CvBridgeError
    except ImportError as error:
        pytest.skip(f'cv_bridge is not importable here ({error}); ROS 2 cv_bridge is not on '
                    f'PyPI, so this runs only in a ROS workspace that has it')
    return CvBridge(), CvBridgeError


def test_codec_arrays_equal_cv_bridge_for_every_shared_encoding():
    bridge, bridge_error = _cv_bridge()
    bgr = _smooth_bgr(24, 32, seed=5)
    compared = []
    raw_cases = [(name, bgr) for name in YUV + BAYER8]
    raw_cases += [(name, bgr.astype(np.uint16) * 257) for name in BAYER16]
    raw_cases += [('mono8', bgr[:, :, 0]), ('mono16', bgr[:, :, 0].astype(np.uint16) * 3),
                  ('bgr8', bgr), ('rgb8', bgr), ('bgra8', np.dstack([bgr, bgr[:, :, :1]])),
                  ('rgba8', np.dstack([bgr, bgr[:, :, :1]])), ('8UC3', bgr)]
    for encoding, pixels in raw_cases:
        msg = _received(_padded(fill_image(Image(), pixels, encoding=encoding), 4))
        decoded = decode_image(msg)
        desired = 'passthrough' if encoding not in CONVERTED_ENCODINGS else decoded.encoding
        try:
            expected = bridge.imgmsg_to_cv2(msg, desired_encoding=desired)
        except (bridge_error, TypeError, ValueError, KeyError):
            continue  # not an encoding this cv_bridge knows
        np.testing.assert_array_equal(decoded.pixels, expected, err_msg=encoding)
        compared.append(encoding)
    for encoding, compression in [('mono8', 'jpeg'), ('bgr8', 'jpeg'), ('mono8', 'png'),
                                  ('bgr8', 'png'), ('mono16', 'png')]:
        pixels = bgr if encoding == 'bgr8' else bgr[:, :, 0]
        if encoding == 'mono16':
            pixels = pixels.astype(np.uint16) * 257
        msg = _received(fill_compressed(CompressedImage(), pixels, encoding=encoding,
                                        compression=compression))
        expected = bridge.compressed_imgmsg_to_cv2(msg)
        np.testing.assert_array_equal(decode_compressed(msg).pixels, expected,
                                      err_msg=f'{encoding} {compression}')
        compared.append(f'{encoding} {compression}')
    assert {'yuv422', 'bayer_rggb8', 'mono8'} <= set(compared), compared
