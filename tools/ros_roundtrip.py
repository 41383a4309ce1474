#!/usr/bin/env python3
"""
Round trip of a delen_ros message between two processes over real rclpy and DDS.

publish: publish one sample message on TOPIC and wait until the same message comes
         back on TOPIC/echo (exit 0), a different one comes back (exit 2) or the
         timeout passes (exit 1).
demo:    start a `publish` process, receive its message, echo it, print it.

Both sides use reliable, transient-local QoS, so neither has to wait for the other
to be discovered before publishing: no fixed sleeps.
"""

import argparse
import math
import os
import subprocess
import sys
import time

from delen_ros.msg import InferenceResult, TenantStatus
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

MESSAGE_TYPES = {'InferenceResult': InferenceResult, 'TenantStatus': TenantStatus}

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL)


def sample_message(type_name):
    """Return a message of type_name with a value in every field (float32-exact)."""
    if type_name == 'InferenceResult':
        msg = InferenceResult(
            tenant='tenant_a', class_id=9, label='Ankle boot', confidence=0.875,
            exit_index=2, num_exits=4, is_final=True,
            latency_ms=12.5, queue_ms=0.25, compute_ms=11.75,
            energy_mj=3.25, energy_measured=False,
            deadline_ms=50.0, deadline_met=True,
            goal='min_energy', policy='confidence', num_threads=1)
    elif type_name == 'TenantStatus':
        msg = TenantStatus(
            tenant='tenant_b', goal='max_accuracy', policy='budget',
            frames_received=2**40 + 7, frames_served=1000, frames_dropped=3,
            frames_rejected=1, deadline_misses=12, deadline_met_ratio=0.984375,
            latency_mean_ms=8.5, latency_p99_ms=31.25, mean_exit=1.5,
            energy_mean_mj=2.125, energy_measured=True,
            accuracy=float('nan'), labelled_frames=0,
            latency_bound_ms=40.0, min_accuracy=0.75, energy_bound_mj=5.0)
    else:
        raise ValueError('unknown message type %r' % type_name)
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.header.frame_id = 'camera_optical_frame'
    return msg


def messages_equal(first, second):
    """Compare two ROS messages field by field; NaN equals NaN."""
    if type(first) is not type(second):
        return False
    if hasattr(first, 'get_fields_and_field_types'):
        return all(messages_equal(getattr(first, name), getattr(second, name))
                   for name in first.get_fields_and_field_types())
    if isinstance(first, float) and math.isnan(first):
        return math.isnan(second)
    return first == second


def spin_until(executor, done, timeout_s):
    """Spin until done() is true or timeout_s passes; return done()."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()


class Peer:
    """One rclpy context with one node, torn down by close()."""

    def __init__(self, node_name):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def publish_and_wait_for_echo(type_name, topic, timeout_s):
    """Publish a sample and wait for its echo (publisher side); return an exit code."""
    message_type = MESSAGE_TYPES[type_name]
    peer = Peer('delen_roundtrip_publisher_%d' % os.getpid())
    echoes = []
    try:
        peer.node.create_subscription(message_type, topic + '/echo', echoes.append, LATCHED_QOS)
        sent = sample_message(type_name)
        peer.node.create_publisher(message_type, topic, LATCHED_QOS).publish(sent)
        if not spin_until(peer.executor, lambda: echoes, timeout_s):
            print('no echo on %s/echo within %.0f s' % (topic, timeout_s), file=sys.stderr)
            return 1
        if not messages_equal(sent, echoes[0]):
            print('echo differs:\n sent %r\n got  %r' % (sent, echoes[0]), file=sys.stderr)
            return 2
        return 0
    finally:
        peer.close()


def receive_and_echo(type_name, topic, publisher_process, timeout_s):
    """Receive one message and echo it back; return it (None on timeout)."""
    message_type = MESSAGE_TYPES[type_name]
    peer = Peer('delen_roundtrip_echo_%d' % os.getpid())
    received = []
    try:
        peer.node.create_subscription(message_type, topic, received.append, LATCHED_QOS)
        echo = peer.node.create_publisher(message_type, topic + '/echo', LATCHED_QOS)
        if not spin_until(peer.executor, lambda: received, timeout_s):
            return None
        echo.publish(received[0])
        # Keep serving the latched echo until the publisher has seen it and left.
        spin_until(peer.executor, lambda: publisher_process.poll() is not None, timeout_s)
        return received[0]
    finally:
        peer.close()


def start_publisher(type_name, topic, timeout_s):
    """Start `publish` in a separate OS process."""
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), 'publish',
         '--type', type_name, '--topic', topic, '--timeout', str(timeout_s)])


def demo(timeout_s):
    """Print one InferenceResult that went to another process and back."""
    topic = '/delen_demo/result_%d' % os.getpid()
    started = time.monotonic()
    publisher = start_publisher('InferenceResult', topic, timeout_s)
    received = receive_and_echo('InferenceResult', topic, publisher, timeout_s)
    code = publisher.wait(timeout=timeout_s)
    if received is None or code != 0:
        print('round trip FAILED (received=%s, publisher exit code %s)'
              % (received is not None, code))
        return 1
    print('received from another process over %s:' % os.environ.get(
        'RMW_IMPLEMENTATION', 'the default RMW'))
    for name in received.get_fields_and_field_types():
        print('  %-16s %r' % (name, getattr(received, name)))
    print('round trip OK: %s and %s/echo in %.2f s (process start and discovery included)'
          % (topic, topic, time.monotonic() - started))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=['publish', 'demo'])
    parser.add_argument('--type', default='InferenceResult', choices=sorted(MESSAGE_TYPES))
    parser.add_argument('--topic', default='/delen_roundtrip/result')
    parser.add_argument('--timeout', type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.mode == 'publish':
        return publish_and_wait_for_echo(args.type, args.topic, args.timeout)
    return demo(args.timeout)


if __name__ == '__main__':
    sys.exit(main())
