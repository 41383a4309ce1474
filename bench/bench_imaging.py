#!/usr/bin/env python3
"""
Benchmark: image decode, model input transform, and ways of filling Image.data.

Images are real sensor_msgs/Image and CompressedImage messages that went through rclpy
serialization, as a subscriber receives them. Every case is timed per call (median and p99
in microseconds). The camera-size table times what the server does with each frame it
serves: decode (yuv422 / bayer conversion, JPEG / PNG decoding) plus resize to the model
input, for 640x480 and 1280x720 frames.
Usage: bench/bench_imaging.py [--runs N] [--threads T] [--only camera]
"""

import argparse
import array
import platform
import time

import cv2
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import (decode_compressed, fill_compressed, fill_image, image_to_array,
                               ModelInputTransform)
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
import torch

CASES = [
    # name, (height, width), encoding, model input (channels, height, width)
    ('28x28 mono8 -> 1x28x28', (28, 28), 'mono8', (1, 28, 28)),
    ('224x224 rgb8 -> 3x224x224', (224, 224), 'rgb8', (3, 224, 224)),
    ('640x480 bgr8 -> 3x224x224', (480, 640), 'bgr8', (3, 224, 224)),
    ('640x480 bgr8 -> 1x28x28', (480, 640), 'bgr8', (1, 28, 28)),
]


def _time_us(fn, runs, warmup=50):
    samples = []
    for run in range(runs + warmup):
        start = time.perf_counter_ns()
        fn()
        if run >= warmup:
            samples.append(time.perf_counter_ns() - start)
    values = np.array(samples, dtype=np.float64) / 1e3
    return float(np.median(values)), float(np.percentile(values, 99))


def _received(pixels, encoding):
    wire = serialize_message(fill_image(Image(), pixels, encoding=encoding))
    return deserialize_message(wire, Image)


def _camera_frame(size):
    """Fashion-MNIST test frames tiled into a colour picture of a camera's size (bgr8)."""
    images, _ = fashion_mnist.load('test')
    height, width = size
    rows, columns = -(-height // 56), -(-width // 56)
    tiles = [cv2.resize(images[i], (56, 56), interpolation=cv2.INTER_LINEAR)
             for i in range(rows * columns)]
    gray = np.vstack([np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)])
    gray = gray[:height, :width]
    tint = np.linspace(0.6, 1.0, width, dtype=np.float32)[None, :]
    # Smooth colour over the gray tiles, so that chroma is not flat.
    return np.dstack([gray * tint, gray, gray * tint[:, ::-1]]).astype(np.uint8)


CAMERA_STREAMS = [
    # label, builder of a received message from a bgr8 frame
    ('rgb8', lambda f: _received(np.ascontiguousarray(f[:, :, ::-1]), 'rgb8')),
    ('mono8', lambda f: _received(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), 'mono8')),
    ('yuv422 (UYVY)', lambda f: _received(f, 'yuv422')),
    ('yuv422_yuy2 (YUYV)', lambda f: _received(f, 'yuv422_yuy2')),
    ('bayer_rggb8', lambda f: _received(f, 'bayer_rggb8')),
    ('jpeg q90 (CompressedImage)', lambda f: deserialize_message(serialize_message(
        fill_compressed(CompressedImage(), f, encoding='bgr8', quality=90)), CompressedImage)),
    ('png (CompressedImage)', lambda f: deserialize_message(serialize_message(
        fill_compressed(CompressedImage(), f, encoding='bgr8', compression='png')),
        CompressedImage)),
]


def bench_camera_size(runs):
    """Rows (frame, model input, median us, p99 us) for decode + resize of camera frames."""
    rows = []
    for size in [(480, 640), (720, 1280)]:
        frame = _camera_frame(size)
        for label, build in CAMERA_STREAMS:
            msg = build(frame)
            for channels, height, width in [(1, 28, 28), (3, 224, 224)]:
                transform = ModelInputTransform(
                    input_size=(height, width), in_channels=channels,
                    mean=(0.5,) * channels, std=(0.25,) * channels)
                median, p99 = _time_us(lambda: transform.transform_message(msg), runs)
                rows.append((f'{size[1]}x{size[0]} {label}',
                             f'-> {channels}x{height}x{width}', median, p99))
            if label.startswith('jpeg'):
                # Reference: decoding the whole JPEG (what cv_bridge does) before resizing.
                median, p99 = _time_us(lambda: decode_compressed(msg), runs)
                rows.append((f'{size[1]}x{size[0]} {label}', 'full-size decode only (reference)',
                             median, p99))
    return rows


def _pixels(size, encoding, rng):
    channels = 1 if encoding.startswith('mono') else 3
    shape = size if channels == 1 else size + (channels,)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def bench_decode_and_transform(runs):
    """Rows (case, step, median us, p99 us) for decode, transform and both."""
    rng = np.random.default_rng(0)
    rows = []
    for name, size, encoding, (channels, height, width) in CASES:
        msg = _received(_pixels(size, encoding, rng), encoding)
        transform = ModelInputTransform(input_size=(height, width), in_channels=channels,
                                        mean=(0.5,) * channels, std=(0.25,) * channels)
        pixels = image_to_array(msg)
        mean = torch.full((1, channels, 1, 1), 0.5)
        std = torch.full((1, channels, 1, 1), 0.25)

        def copying_decode():
            # What a first attempt does: copy the buffer, then reshape.
            return np.frombuffer(bytes(msg.data), np.uint8).reshape(pixels.shape)

        def plain_torch():
            # Reference: straightforward torch ops on the decoded array (no lookup table).
            x = torch.from_numpy(pixels.copy()).float().div_(255.0)
            x = x.unsqueeze(0).unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)[None]
            if channels == 3 and encoding == 'bgr8':
                x = x.flip(1)
            if channels == 1 and x.shape[1] == 3:
                w = torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
            if tuple(x.shape[-2:]) != (height, width):
                x = torch.nn.functional.interpolate(x, size=(height, width), mode='bilinear',
                                                    antialias=True)
            return (x - mean) / std

        steps = [
            ('decode (image_to_array)', lambda: image_to_array(msg)),
            ('decode, copying reference', copying_decode),
            ('transform (ModelInputTransform)', lambda: transform(pixels, encoding)),
            ('transform, plain torch reference', plain_torch),
            ('decode + transform (transform_message)',
             lambda: transform.transform_message(msg)),
        ]
        for label, fn in steps:
            median, p99 = _time_us(fn, runs)
            rows.append((name, label, median, p99))
    return rows


def bench_fill(runs):
    """Rows (image, strategy, median us, p99 us) for ways of setting Image.data."""
    rng = np.random.default_rng(1)
    rows = []
    for name, size, encoding in [('28x28 mono8', (28, 28), 'mono8'),
                                 ('224x224 rgb8', (224, 224), 'rgb8'),
                                 ('640x480 bgr8', (480, 640), 'bgr8')]:
        pixels = _pixels(size, encoding, rng)
        for checked in (False, True):
            msg = Image(check_fields=checked)

            def frombytes():
                data = array.array('B')
                data.frombytes(pixels.reshape(-1))
                msg.data = data

            def tobytes():
                msg.data = pixels.tobytes()

            def array_of_bytes():
                msg.data = array.array('B', pixels.tobytes())

            strategies = [
                ('fill_image (array.frombytes)', lambda: fill_image(msg, pixels,
                                                                    encoding=encoding)),
                ('data = array.array(); frombytes(pixels)', frombytes),
                ('data = pixels.tobytes()', tobytes),
                ("data = array.array('B', pixels.tobytes())", array_of_bytes),
            ]
            for label, fn in strategies:
                # Field checks walk bytes value by value: far fewer runs are plenty there.
                slow = checked and label == 'data = pixels.tobytes()'
                median, p99 = _time_us(fn, max(5, runs // 100) if slow else runs,
                                       warmup=2 if slow else 50)
                mode = 'check_fields' if checked else 'default'
                rows.append((name, f'{label} [{mode}]', median, p99))
    return rows


def _print_table(title, header, rows):
    print(f'\n{title}\n')
    print(f'| {header[0]} | {header[1]} | median us | p99 us |')
    print('| --- | --- | ---: | ---: |')
    for first, second, median, p99 in rows:
        print(f'| {first} | {second} | {median:.1f} | {p99:.1f} |')


def main():
    """Print the decode/transform and fill tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--runs', type=int, default=1000)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--only', choices=('camera',), default=None,
                        help='only the camera-size decode + resize table')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}'
          f', {args.threads} torch thread(s), {args.runs} runs per case, '
          f'{platform.machine()} {platform.processor() or ""}'.rstrip())
    print(f'opencv {cv2.__version__}, {cv2.getNumThreads()} OpenCV thread(s)')
    with torch.inference_mode():
        _print_table('Camera-size frames: decode + resize to the model input, per served frame',
                     ('frame', 'model input'), bench_camera_size(args.runs))
        if args.only == 'camera':
            return
        _print_table('Decode and model input transform (received Image messages)',
                     ('image -> model input', 'step'), bench_decode_and_transform(args.runs))
    _print_table('Filling Image.data (rclpy sensor_msgs/Image)', ('image', 'strategy'),
                 bench_fill(args.runs))


if __name__ == '__main__':
    main()
