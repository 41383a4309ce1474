"""sensor_msgs/Image codec and model input transform, on real messages and real arrays."""

import array
import types

from delen_ros.imaging import (decode_image, DEFAULT_MAX_PIXELS, ENCODINGS, fill_image,
                               image_to_array, ImageFormatError, LUMA_WEIGHTS,
                               ModelInputTransform, REASONS)
import numpy as np
import pytest
import torch
from torch.nn import functional

msg_module = pytest.importorskip('sensor_msgs.msg')
Image = msg_module.Image
serialization = pytest.importorskip('rclpy.serialization')


def _random_pixels(encoding, height=5, width=7, seed=0):
    info = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return rng.integers(0, info.max_value + 1, size=shape).astype(info.dtype())


def _padded_message(pixels, encoding, padding, *, big_endian=False):
    """Build an Image by hand, each row followed by `padding` junk bytes."""
    info = ENCODINGS[encoding]
    height, width = pixels.shape[:2]
    row_bytes = width * info.bytes_per_pixel
    raw = np.ascontiguousarray(pixels, dtype=info.dtype(big_endian=big_endian))
    rows = raw.reshape(height, row_bytes // (info.depth_bits // 8)).view(np.uint8)
    junk = np.full((height, padding), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1).tobytes()
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                step=row_bytes + padding)
    msg.data = array.array('B', data)
    return msg


def _transform(channels, size=(28, 28), mean=0.5, std=0.25):
    return ModelInputTransform(input_size=size, in_channels=channels,
                               mean=(mean,) * channels, std=(std,) * channels)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_fill_then_decode_round_trips_without_copy(encoding):
    pixels = _random_pixels(encoding)
    msg = fill_image(Image(), pixels, encoding=encoding, frame_id='camera', stamp=12.25)
    info = ENCODINGS[encoding]
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step == 7 * info.bytes_per_pixel
    assert isinstance(msg.data, array.array) and len(msg.data) == msg.step * msg.height
    assert msg.header.frame_id == 'camera'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 250_000_000)
    decoded = image_to_array(msg)
    assert decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)
    # A view of the message buffer, read-only so the message cannot be edited through it.
    assert np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))
    assert not decoded.flags.writeable


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_decode_after_rclpy_serialization(encoding):
    pixels = _random_pixels(encoding, height=4, width=3, seed=1)
    wire = serialization.serialize_message(fill_image(Image(), pixels, encoding=encoding))
    received = serialization.deserialize_message(wire, Image)
    np.testing.assert_array_equal(image_to_array(received), pixels)


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8', 'bgra8', 'mono16', 'rgb16'])
@pytest.mark.parametrize('padding', [1, 3, 64])
def test_row_padding_is_skipped(encoding, padding):
    pixels = _random_pixels(encoding, height=6, width=9, seed=padding)
    decoded = image_to_array(_padded_message(pixels, encoding, padding))
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize('padding', [0, 1, 2])
def test_big_endian_mono16(padding):
    pixels = np.array([[0x0102, 0xFF00, 7], [65535, 0, 0x1234]], dtype=np.uint16)
    msg = _padded_message(pixels, 'mono16', padding, big_endian=True)
    assert bytes(msg.data[:2]) == b'\x01\x02'
    decoded = image_to_array(msg)
    assert decoded.dtype.byteorder == '>'
    np.testing.assert_array_equal(decoded, pixels)
    little = image_to_array(_padded_message(pixels, 'mono16', padding))
    np.testing.assert_array_equal(little, pixels)


def test_fill_accepts_hxwx1_and_big_endian_input_and_rclpy_stamp():
    from rclpy.time import Time

    mono = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    msg = fill_image(Image(), mono, encoding='mono8', stamp=Time(seconds=3, nanoseconds=5))
    np.testing.assert_array_equal(image_to_array(msg), mono[:, :, 0])
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 5)
    big = np.array([[1, 256, 65535]], dtype='>u2')
    msg = fill_image(Image(), big, encoding='mono16', stamp=msg.header.stamp)
    assert msg.is_bigendian == 0 and bytes(msg.data) == b'\x01\x00\x00\x01\xff\xff'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 5)


def test_non_contiguous_input_is_written_contiguously():
    pixels = _random_pixels('rgb8', height=8, width=10)[::2, ::-1]
    msg = fill_image(Image(), pixels, encoding='rgb8')
    np.testing.assert_array_equal(image_to_array(msg), pixels)


@pytest.mark.parametrize('wrap', [bytes, bytearray, memoryview,
                                  lambda b: array.array('B', b), list])
def test_duck_typed_data_buffers(wrap):
    # Not every caller holds an rclpy message (rosbag readers, tests of other nodes): any
    # object with the Image fields decodes, from any byte buffer or a list of ints.
    pixels = _random_pixels('bgr8', height=3, width=4)
    image = types.SimpleNamespace(height=3, width=4, encoding='bgr8', is_bigendian=0, step=12,
                                  data=wrap(pixels.tobytes()))
    np.testing.assert_array_equal(image_to_array(image), pixels)


def test_aliases_follow_opencv_channel_order():
    assert ENCODINGS['8UC3'].order == 'BGR' and ENCODINGS['8UC4'].order == 'BGRA'
    assert ENCODINGS['8UC1'].order == 'L' and ENCODINGS['16UC1'].depth_bits == 16


# --- malformed images ----------------------------------------------------------------------


def _image(**fields):
    msg = Image(height=28, width=28, encoding='mono8', is_bigendian=0, step=28)
    msg.data = array.array('B', bytes(28 * 28))
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize('fields,reason,words', [
    ({'encoding': 'nv12'}, 'unknown_encoding', ["'nv12'", 'mono8', 'yuv422', 'bayer_rggb8']),
    ({'encoding': ''}, 'unknown_encoding', ["''"]),
    ({'height': 0}, 'empty', ['0x28']),
    ({'width': 0, 'step': 0}, 'empty', ['28x0']),
    ({'step': 20}, 'step_too_small', ['step 20 < width 28 x 1 byte(s) per pixel', 'mono8']),
    ({'encoding': 'rgb8', 'step': 28}, 'step_too_small', ['step 28 < width 28 x 3']),
    ({'data': array.array('B', bytes(700))}, 'data_too_short',
     ['700 byte(s)', 'need 784', 'step 28 x height 28']),
    ({'data': array.array('B')}, 'data_too_short', ['0 byte(s)']),
    ({'height': 5000, 'width': 5000, 'step': 5000}, 'oversize',
     ['5000x5000', '25000000', str(DEFAULT_MAX_PIXELS)]),
    ({'height': 2, 'step': 4_000_000_000}, 'oversize', ['8000000000 bytes']),
    ({'encoding': 'mono16', 'step': 56, 'is_bigendian': 2}, 'bad_endianness',
     ['is_bigendian', 'mono16', '2']),
])
def test_malformed_images_name_the_problem(fields, reason, words):
    with pytest.raises(ImageFormatError) as caught:
        image_to_array(_image(**fields))
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value)


def test_mono8_ignores_is_bigendian():
    # Byte order means nothing for single-byte channels.
    assert image_to_array(_image(is_bigendian=7)).shape == (28, 28)


def test_max_pixels_is_configurable():
    with pytest.raises(ImageFormatError, match='784 pixels exceeds max_pixels 783') as caught:
        image_to_array(_image(), max_pixels=783)
    assert caught.value.reason == 'oversize'
    assert image_to_array(_image(), max_pixels=784).shape == (28, 28)
    with pytest.raises(ValueError, match='max_pixels must be a positive integer'):
        image_to_array(_image(), max_pixels=0)


@pytest.mark.parametrize('fields,reason,words', [
    ({'height': -1}, 'bad_field', ['height', '-1']),
    ({'width': 2.5}, 'bad_field', ['width', '2.5']),
    ({'data': ['a', 'b']}, 'bad_data', ['flat sequence of bytes']),
    ({'data': [300] * 784}, 'bad_data', ['0..255', '300']),
])
def test_duck_typed_garbage_fields(fields, reason, words):
    image = types.SimpleNamespace(height=28, width=28, encoding='mono8', is_bigendian=0,
                                  step=28, data=bytes(784))
    for name, value in fields.items():
        setattr(image, name, value)
    with pytest.raises(ImageFormatError) as caught:
        image_to_array(image)
    assert caught.value.reason == reason
    for word in words:
        assert word in str(caught.value)


def test_missing_field_is_named():
    image = types.SimpleNamespace(height=1, width=1, encoding='mono8', is_bigendian=0, data=b'x')
    with pytest.raises(ImageFormatError, match="no 'step' field"):
        image_to_array(image)


def test_every_reason_is_documented():
    assert set(REASONS) >= {'unknown_encoding', 'empty', 'step_too_small', 'data_too_short',
                            'oversize', 'bad_endianness'}
    with pytest.raises(ValueError, match='unknown ImageFormatError reason'):
        ImageFormatError('mystery', 'x')


@pytest.mark.parametrize('pixels,encoding,words', [
    (np.zeros((4, 4), np.float32), 'mono8', ['uint8', 'float32']),
    (np.zeros((4, 4), np.uint8), 'mono16', ['uint16', 'uint8']),
    (np.zeros((4, 4), np.uint8), 'rgb8', ['HxWx3', '(4, 4)']),
    (np.zeros((4, 4, 4), np.uint8), 'rgb8', ['HxWx3', '(4, 4, 4)']),
    (np.zeros((4,), np.uint8), 'mono8', ['HxW', '(4,)']),
])
def test_fill_refuses_arrays_that_do_not_fit(pixels, encoding, words):
    with pytest.raises(ImageFormatError) as caught:
        fill_image(Image(), pixels, encoding=encoding)
    assert caught.value.reason == 'bad_array'
    for word in words:
        assert word in str(caught.value)


def test_fill_refuses_unknown_encoding_empty_array_and_bad_stamp():
    with pytest.raises(ImageFormatError) as caught:
        fill_image(Image(), np.zeros((2, 2), np.uint8), encoding='jpeg')
    assert caught.value.reason == 'unknown_encoding'
    with pytest.raises(ImageFormatError) as caught:
        fill_image(Image(), np.zeros((0, 2), np.uint8), encoding='mono8')
    assert caught.value.reason == 'empty'
    with pytest.raises(ValueError, match='stamp must be'):
        fill_image(Image(), np.zeros((2, 2), np.uint8), encoding='mono8', stamp=float('nan'))


def _demosaic_rggb8(msg):
    """Nearest-neighbour RGGB mosaic -> bgr8: each 2x2 cell becomes one colour."""
    raw = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]
    red, blue = raw[0::2, 0::2], raw[1::2, 1::2]
    green = ((raw[0::2, 1::2].astype(np.uint16) + raw[1::2, 0::2]) // 2).astype(np.uint8)
    cells = np.stack([blue, green, red], axis=-1)
    return cells.repeat(2, axis=0).repeat(2, axis=1)


def test_decode_image_reports_the_encoding():
    msg = fill_image(Image(), _random_pixels('8UC3'), encoding='8UC3')
    decoded = decode_image(msg)
    assert decoded.encoding == '8UC3' and decoded.pixels.shape == (5, 7, 3)
    with pytest.raises(ImageFormatError) as caught:
        decode_image(_image(encoding='vendor_rggb8'))
    assert caught.value.reason == 'unknown_encoding'


def test_fallback_decoder_handles_other_encodings():
    bayer = np.array([[10, 20, 11, 21], [22, 30, 23, 31]], dtype=np.uint8)
    msg = fill_image(Image(), bayer, encoding='mono8')
    msg.encoding = 'vendor_rggb8'
    decoded = decode_image(msg, fallback=_demosaic_rggb8)
    assert decoded.encoding == 'bgr8'
    np.testing.assert_array_equal(decoded.pixels[0, 0], [30, 21, 10])
    np.testing.assert_array_equal(decoded.pixels[1, 3], [31, 22, 11])
    tensor = _transform(1, size=(2, 4)).transform_message(msg, fallback=_demosaic_rggb8)
    assert tensor.shape == (1, 1, 2, 4)
    # Known encodings never reach the fallback; size checks run before it.
    plain = fill_image(Image(), bayer, encoding='mono8')
    assert decode_image(plain, fallback=_demosaic_rggb8).encoding == 'mono8'
    with pytest.raises(ImageFormatError) as caught:
        decode_image(msg, max_pixels=4, fallback=_demosaic_rggb8)
    assert caught.value.reason == 'oversize'


def test_fallback_decoder_failures_are_image_format_errors():
    msg = _image(encoding='nv12')

    def refuse(_msg):
        raise RuntimeError('no converter for nv12')

    with pytest.raises(ImageFormatError, match='RuntimeError: no converter') as caught:
        decode_image(msg, fallback=refuse)
    assert caught.value.reason == 'unknown_encoding'
    with pytest.raises(ImageFormatError, match='must return 28x28x3 uint8') as caught:
        decode_image(msg, fallback=lambda m: np.zeros((28, 28), np.uint8))
    assert caught.value.reason == 'bad_array'


# --- model input ---------------------------------------------------------------------------


def test_mono8_into_gray_model_normalizes_each_value():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tensor = _transform(1, size=(16, 16), mean=0.2860, std=0.3530)(pixels, 'mono8')
    assert tensor.shape == (1, 1, 16, 16) and tensor.dtype == torch.float32
    expected = (np.arange(256).reshape(16, 16) / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(tensor[0, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert tensor.is_contiguous()


def test_known_pixel_value():
    pixels = np.full((28, 28), 204, dtype=np.uint8)  # 204 / 255 = 0.8
    tensor = _transform(1)(pixels, 'mono8')
    assert torch.allclose(tensor, torch.full((1, 1, 28, 28), (0.8 - 0.5) / 0.25))


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3', '8UC4'])
def test_colour_into_gray_model_uses_bt601_luma(encoding):
    rgb = _random_pixels('rgb8', height=6, width=8, seed=3)
    order = ENCODINGS[encoding].order
    planes = {'R': rgb[..., 0], 'G': rgb[..., 1], 'B': rgb[..., 2],
              'A': np.full(rgb.shape[:2], 17, np.uint8)}
    pixels = np.stack([planes[c] for c in order], axis=-1)
    tensor = _transform(1, size=(6, 8), mean=0.0, std=1.0)(pixels, encoding)
    luma = sum(LUMA_WEIGHTS[c] * planes[c].astype(np.float64) for c in 'RGB') / 255.0
    np.testing.assert_allclose(tensor[0, 0].numpy(), luma, atol=1e-6)


def test_bgr_and_rgb_give_the_same_tensor():
    rgb = _random_pixels('rgb8', height=10, width=12, seed=4)
    bgr = rgb[..., ::-1]
    for channels in (1, 3):
        transform = _transform(channels, size=(10, 12))
        torch.testing.assert_close(transform(rgb, 'rgb8'), transform(bgr, 'bgr8'),
                                   rtol=0, atol=0)
    rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=-1)
    torch.testing.assert_close(_transform(3, size=(10, 12))(rgba, 'rgba8'),
                               _transform(3, size=(10, 12))(rgb, 'rgb8'), rtol=0, atol=0)


def test_colour_model_gets_rgb_planes_with_per_channel_normalization():
    rgb = _random_pixels('rgb8', height=4, width=4, seed=5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = ModelInputTransform(input_size=(4, 4), in_channels=3, mean=mean, std=std)
    tensor = transform(rgb[..., ::-1], 'bgr8')
    expected = (rgb.transpose(2, 0, 1) / 255.0 - np.array(mean)[:, None, None]) \
        / np.array(std)[:, None, None]
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=1e-5)


def test_gray_into_colour_model_repeats_the_plane():
    gray = _random_pixels('mono8', height=5, width=5)
    tensor = _transform(3, size=(5, 5))(gray, 'mono8')
    assert tensor.shape == (1, 3, 5, 5)
    assert torch.equal(tensor[0, 0], tensor[0, 1]) and torch.equal(tensor[0, 0], tensor[0, 2])


def test_sixteen_bit_scales_by_65535_in_either_byte_order():
    values = np.array([[0, 65535, 13107]], dtype=np.uint16)  # 13107 / 65535 = 0.2
    transform = _transform(1, size=(1, 3), mean=0.0, std=1.0)
    little = transform(values, 'mono16')
    np.testing.assert_allclose(little[0, 0, 0].numpy(), [0.0, 1.0, 0.2], atol=1e-6)
    big = transform(values.astype('>u2'), 'mono16')
    torch.testing.assert_close(little, big)
    rgb16 = np.stack([values, values, values], axis=-1)
    np.testing.assert_allclose(transform(rgb16, 'bgr16')[0, 0, 0].numpy(), [0.0, 1.0, 0.2],
                               atol=1e-6)


def _normalized_reference(pixels, maximum=255.0):
    return (torch.from_numpy(pixels.astype(np.float32)) / maximum - 0.5) / 0.25


def _bilinear(x, size, antialias):
    return functional.interpolate(x, size=size, mode='bilinear', align_corners=False,
                                  antialias=antialias)


def test_8bit_downscale_resizes_bytes_then_normalizes():
    pixels = _random_pixels('mono8', height=42, width=42, seed=6)
    tensor = _transform(1)(pixels, 'mono8')
    assert tensor.shape == (1, 1, 28, 28)
    # Exactly: torch's antialiased uint8 resize, then the normalization.
    resized = _bilinear(torch.from_numpy(pixels)[None, None], (28, 28), True)
    torch.testing.assert_close(tensor, _normalized_reference(resized.numpy()), rtol=0,
                               atol=1e-6)
    # And within one grey level of resizing in float.
    in_float = _bilinear(_normalized_reference(pixels)[None, None], (28, 28), True)
    assert (tensor - in_float).abs().max() <= 1.0 / 255 / 0.25 + 1e-6


@pytest.mark.parametrize('encoding,factor', [('mono8', 2), ('bgr8', 4), ('rgba8', 8)])
def test_8bit_downscale_by_powers_of_two_averages_exactly(encoding, factor):
    # A frame scaled up by pixel repetition comes back as it was (bilinear would blur it).
    small = _random_pixels(encoding, height=28, width=28, seed=11)
    big = small.repeat(factor, axis=0).repeat(factor, axis=1)
    channels = 1 if encoding == 'mono8' else 3
    torch.testing.assert_close(_transform(channels)(big, encoding),
                               _transform(channels)(small, encoding), rtol=0, atol=0)
    # Odd sizes are not halved: one bilinear pass, constant images stay constant.
    flat = np.full((90, 90, *small.shape[2:]), 77, np.uint8)
    tensor = _transform(channels)(flat, encoding)
    assert torch.allclose(tensor, torch.full_like(tensor, (77 / 255 - 0.5) / 0.25), atol=1e-5)


def test_colour_downscale_matches_float_within_one_level():
    bgr = _random_pixels('bgr8', height=100, width=70, seed=8)  # odd half: not halved
    tensor = _transform(3, size=(30, 40))(bgr, 'bgr8')
    rgb = _normalized_reference(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)[None]
    in_float = _bilinear(rgb, (30, 40), True)
    assert tensor.shape == (1, 3, 30, 40)
    assert (tensor - in_float).abs().max() <= 1.0 / 255 / 0.25 + 1e-6


def test_16bit_downscale_and_8bit_upscale_resize_in_float():
    deep = _random_pixels('mono16', height=56, width=42, seed=9)
    tensor = _transform(1)(deep, 'mono16')
    expected = _bilinear(_normalized_reference(deep, 65535.0)[None, None], (28, 28), True)
    torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-5)
    small = _random_pixels('mono8', height=14, width=10, seed=10)
    tensor = _transform(1)(small, 'mono8')
    expected = _bilinear(_normalized_reference(small)[None, None], (28, 28), False)
    torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-5)


def test_upscale_and_mixed_resize_keep_constant_images_constant():
    for shape in [(14, 14), (20, 60), (640, 480)]:
        pixels = np.full(shape, 204, dtype=np.uint8)
        tensor = _transform(1)(pixels, 'mono8')
        assert tensor.shape == (1, 1, 28, 28)
        assert torch.allclose(tensor, torch.full_like(tensor, 1.2), atol=1e-5)


def test_transform_message_decodes_and_resizes():
    bgr = _random_pixels('bgr8', height=48, width=64, seed=7)
    msg = _padded_message(bgr, 'bgr8', padding=16)
    tensor = _transform(3, size=(24, 32)).transform_message(msg)
    assert tensor.shape == (1, 3, 24, 32)
    direct = _transform(3, size=(24, 32))(bgr, 'bgr8')
    torch.testing.assert_close(tensor, direct, rtol=0, atol=0)


def test_from_engine_input_spec_feeds_a_multi_exit_network():
    from delen_ros.engine import build_multi_exit, InputSpec, MultiExitConfig

    spec = InputSpec(height=28, width=28, channels=1, mean=(0.2860,), std=(0.3530,))
    transform = ModelInputTransform.from_spec(spec)
    assert transform.input_size == (28, 28) and transform.in_channels == 1
    network = build_multi_exit(MultiExitConfig(
        arch='compact_resnet', num_classes=10, input_spec=spec, head_channels=8,
        options={'widths': [8, 8, 16, 16]})).eval()
    camera = fill_image(Image(), _random_pixels('bgr8', height=480, width=640),
                        encoding='bgr8')
    with torch.inference_mode():
        logits = network(transform.transform_message(camera))
    assert len(logits) == network.num_exits
    assert all(exit_logits.shape == (1, 10) for exit_logits in logits)
    colour = ModelInputTransform.from_spec(InputSpec(
        height=32, width=32, channels=3, mean=(0.5,) * 3, std=(0.2,) * 3))
    assert colour(np.zeros((32, 32), np.uint8), 'mono8').shape == (1, 3, 32, 32)


@pytest.mark.parametrize('kwargs,words', [
    ({'input_size': (28,)}, ['input_size', '(height, width)']),
    ({'input_size': (0, 28)}, ['input_size']),
    ({'input_size': 28}, ['input_size']),
    ({'in_channels': 2}, ['in_channels must be 1 or 3', '2']),
    ({'mean': (0.5, 0.5)}, ['mean', 'one value per input channel (1)']),
    ({'std': (0.0,)}, ['std must be positive']),
    ({'std': (float('nan'),)}, ['std must be finite']),
    ({'std': (1e-40,)}, ['overflow float32']),
    ({'mean': 'abc'}, ['mean must be a sequence of numbers']),
])
def test_transform_refuses_bad_specs(kwargs, words):
    arguments = {'input_size': (28, 28), 'in_channels': 1, 'mean': (0.5,), 'std': (0.25,)}
    arguments.update(kwargs)
    with pytest.raises(ValueError) as caught:
        ModelInputTransform(**arguments)
    for word in words:
        assert word in str(caught.value)


def test_transform_refuses_pixels_that_do_not_fit_the_encoding():
    transform = _transform(1)
    for pixels, encoding, reason in [
            (np.zeros((28, 28, 3), np.uint8), 'mono8', 'bad_array'),
            (np.zeros((28, 28), np.uint8), 'bgr8', 'bad_array'),
            (np.zeros((28, 28), np.float32), 'mono8', 'bad_array'),
            (np.zeros((28, 28), np.uint16), 'mono8', 'bad_array'),
            (np.zeros((0, 28), np.uint8), 'mono8', 'empty'),
            (np.zeros((28, 28), np.uint8), 'jpeg', 'unknown_encoding')]:
        with pytest.raises(ImageFormatError) as caught:
            transform(pixels, encoding)
        assert caught.value.reason == reason
