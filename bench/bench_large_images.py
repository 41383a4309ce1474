#!/usr/bin/env python3
"""
Benchmark: camera-size images from another process to the server, with and without the profile.

For each transport setting (the shipped config/fastdds.xml, then Fast DDS's defaults) the
installed `server` runs with one tenant, and a camera process streams rgb8 frames best effort
(sensor-data QoS) at each size and rate of --streams. Per stream: frames sent, frames the server
received (TenantStatus.frames_received), frames DDS reported lost (the message-lost event,
TenantStatus.frames_lost), frames the server counted as never taken (TenantStatus.frames_missed,
from gaps in the publisher's sequence numbers: the lost ones plus those overwritten in the
subscription's history), and the rest: frames that vanished uncounted. Beside each stream a
second tenant takes a small 28x28 rgb8 stream at --side-hz (50) from a second camera process:
while one tenant streams camera-size frames, the other must lose nothing.

Usage: bench/bench_large_images.py [--seconds S] [--streams 640x480@30 1280x720@15]
       [--queue-size N]
Run it where rclpy is importable: `source tools/env.sh` first.
"""

import argparse
import array
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import threading
import time

from ament_index_python.packages import get_package_prefix
from delen_ros.msg import TenantStatus
from delen_ros.nodes.dds_profile import default_profiles_file, PROFILE_VARIABLES
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

TENANT = 'camera'
TOPIC = '/bench_large/image'
SIDE_TENANT = 'side'
SIDE_TOPIC = '/bench_large/side'
START_TIMEOUT_S = 120.0


def run_camera(width, height, rate_hz, seconds, *, topic=TOPIC, reliable=False):
    """Camera process: wait for the server and a go on stdin, stream, print the frames sent."""
    rclpy.init()
    node = rclpy.create_node('bench_large_camera')
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable \
        else qos_profile_sensor_data
    publisher = node.create_publisher(Image, topic, qos)
    while publisher.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    print('matched', flush=True)
    sys.stdin.readline()
    data = array.array('B', bytes(width * height * 3))
    count = int(rate_hz * seconds)
    start = time.monotonic()
    for index in range(count):
        msg = Image(height=height, width=width, encoding='rgb8', step=width * 3, data=data)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = f'frame_{index}'
        publisher.publish(msg)
        time.sleep(max(0.0, start + (index + 1) / rate_hz - time.monotonic()))
    print(count, flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


class Status:
    """The latest TenantStatus of a tenant."""

    def __init__(self, node, tenant=TENANT):
        self.msg = None
        self.lock = threading.Lock()
        node.create_subscription(TenantStatus, f'/delen/{tenant}/status', self._callback, 10)

    def _callback(self, msg):
        with self.lock:
            self.msg = msg

    def counts(self):
        with self.lock:
            msg = self.msg
        return ((0, 0, 0) if msg is None
                else (msg.frames_received, msg.frames_lost, msg.frames_missed))


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _environment(profile, folder):
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    # A file whose one profile is not the default: Fast DDS's defaults, and the executables
    # keep it (they add the shipped profile only where no file is named).
    empty = folder / 'fast_dds_defaults.xml'
    empty.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                     '<dds xmlns="http://www.eprosima.com"><profiles>'
                     '<participant profile_name="unused"><rtps/></participant>'
                     '</profiles></dds>\n')
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(default_profiles_file() if profile else empty)
    return env


def _start_camera(stream, seconds, env, topic):
    width, height, rate = stream
    camera = subprocess.Popen(
        [sys.executable, __file__, '--camera', f'{width}x{height}@{rate:g}',
         '--seconds', str(seconds), '--topic', topic],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if camera.stdout.readline().strip() != 'matched':
        camera.kill()
        raise RuntimeError('the camera process did not start')
    return camera


def _counts_after(status, before, sent):
    """(received, lost, missed) since ``before``, once the last frames and statuses are in."""
    last, quiet_since = None, time.monotonic()
    while True:
        delta = tuple(now - then for now, then in zip(status.counts(), before))
        received, _, missed = delta
        if received + missed >= sent or time.monotonic() - quiet_since >= 3.0:
            return delta
        if delta != last:
            last, quiet_since = delta, time.monotonic()
        time.sleep(0.1)


def measure(statuses, stream, seconds, env, side_hz):
    """Stream from a camera process (and the side stream); return the counts of both."""
    cameras = []
    try:
        cameras.append(_start_camera(stream, seconds, env, TOPIC))
        cameras.append(_start_camera((28, 28, side_hz), seconds, env, SIDE_TOPIC))
        before = [status.counts() for status in statuses]
        for camera in cameras:
            camera.stdin.write('go\n')
            camera.stdin.flush()
        sent = [int(camera.stdout.readline()) for camera in cameras]
        for camera in cameras:
            camera.wait(timeout=START_TIMEOUT_S)
    finally:
        for camera in cameras:
            if camera.poll() is None:
                camera.kill()
                camera.wait()
    return [(count, *_counts_after(status, then, count))
            for status, then, count in zip(statuses, before, sent)]


def run_setting(statuses, profile, streams, seconds, folder, queue_size, side_hz):
    """Start the server with or without the profile; measure every stream."""
    env = _environment(profile, folder)
    params = folder / 'params.yaml'
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [{TENANT}, {SIDE_TENANT}]
    status_period_s: 0.2
    {TENANT}.input_topic: {TOPIC}
    {TENANT}.input_deadline_ms: 0.0
    {TENANT}.latency_ms: 500.0
    {TENANT}.queue_size: {queue_size}
    {SIDE_TENANT}.input_topic: {SIDE_TOPIC}
    {SIDE_TENANT}.latency_ms: 20.0
""")
    server = subprocess.Popen(
        [str(Path(get_package_prefix('delen_ros')) / 'lib' / 'delen_ros' / 'server'),
         '--ros-args', '--params-file', str(params)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        if not _wait(lambda: all(s.msg is not None for s in statuses), START_TIMEOUT_S):
            raise RuntimeError('the server did not start')
        for stream in streams:
            rows.append((profile, stream, *measure(statuses, stream, seconds, env, side_hz)))
    finally:
        server.send_signal(2)
        server.wait(timeout=60)
        for status in statuses:
            status.msg = None
    return rows


def _stream(text):
    size, _, rate = text.partition('@')
    width, _, height = size.partition('x')
    return int(width), int(height), float(rate)


def main():
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--streams', nargs='+', type=_stream,
                        default=[(640, 480, 30.0), (1280, 720, 15.0)])
    parser.add_argument('--queue-size', type=int, default=2,
                        help="the tenant's queue_size, also its subscription's history depth")
    parser.add_argument('--side-hz', type=float, default=50.0,
                        help="rate of the second tenant's 28x28 stream beside each stream")
    parser.add_argument('--camera', type=_stream, help=argparse.SUPPRESS)
    parser.add_argument('--topic', default=TOPIC, help=argparse.SUPPRESS)
    parser.add_argument('--reliable', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.camera:
        run_camera(*args.camera, args.seconds, topic=args.topic, reliable=args.reliable)
        return
    rclpy.init()
    node = rclpy.create_node('bench_large_images')
    statuses = [Status(node, TENANT), Status(node, SIDE_TENANT)]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for profile in (True, False):
            rows += run_setting(statuses, profile, args.streams, args.seconds, Path(folder),
                                args.queue_size, args.side_hz)
    print(f'# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load average '
          f'{os.getloadavg()[0]:.1f} at the end, {args.seconds:g} s per stream, best effort, '
          f'camera in another process, queue_size {args.queue_size}\n')
    print('| transport | stream | sent | received | missed (counted) | of them lost in DDS '
          f'| uncounted | received % | side {args.side_hz:g} Hz: sent / received / missed |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---|')
    for profile, (width, height, rate), main_counts, side_counts in rows:
        sent, received, lost, missed = main_counts
        name = 'config/fastdds.xml' if profile else 'Fast DDS defaults'
        print(f'| {name} | {width}x{height} rgb8 @ {rate:g} Hz | {sent} | {received} | {missed} '
              f'| {lost} | {max(0, sent - received - missed)} | {100.0 * received / sent:.1f} '
              f'| {side_counts[0]} / {side_counts[1]} / {side_counts[3]} |')
    executor.shutdown()
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
