#!/usr/bin/env python3
"""
The plain alternative to delen_server: a hand-written rclpy inference node (bench only).

What a ROS user writes without delen_ros: one node, one sensor-data subscription per image
topic, and in each image callback the whole network (``forward_final``) on the shipped
weights, then an ``InferenceResult`` with the source header. No queue, no exits, no policy.
``--threads 0`` leaves torch's default intra-op threads; ``--threads 1`` is the variant that
holds up under CPU contention (../shared/MEASURED.md). ``--no-network`` decodes each frame and
answers at once (class -1, num_exits 0): the floor of this path, the same messages with no compute.

Usage: bench/plain_peer_node.py --tenants t0 t1 [--threads N] [--model PATH] [--no-network]
Topics: /bench/<tenant>/image in, /delen/<tenant>/result out (what delen_server publishes).
"""

import argparse
import functools
import sys
import time

from delen_ros.engine import fashion_mnist, load_checkpoint
from delen_ros.imaging import ModelInputTransform
from delen_ros.msg import InferenceResult
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
import torch

POLICY = 'plain_peer'


def input_topic(tenant):
    """Name the image topic of a bench stream."""
    return f'/bench/{tenant}/image'


def result_topic(tenant):
    """Name the result topic of a bench stream as delen_server does by default."""
    return f'/delen/{tenant}/result'


class PlainPeer(Node):
    """Runs the whole network in each image callback and publishes the answer."""

    def __init__(self, model, tenants, *, run_network=True):
        super().__init__('plain_peer')
        self.network = model.network
        self.run_network = run_network
        self.model_name = model.path.name if model.path else ''
        self.transform = ModelInputTransform.from_spec(model.config.input_spec)
        for tenant in tenants:
            publisher = self.create_publisher(InferenceResult, result_topic(tenant), 10)
            self.create_subscription(
                Image, input_topic(tenant),
                functools.partial(self._image_callback, tenant, publisher),
                qos_profile_sensor_data)

    def _image_callback(self, tenant, publisher, msg):
        started = self.get_clock().now()
        x = self.transform.transform_message(msg)
        begin = time.perf_counter()
        if self.run_network:
            with torch.inference_mode():
                probabilities = torch.softmax(self.network.forward_final(x), dim=1)[0]
            confidence, class_id = (float(v) for v in probabilities.max(dim=0))
            exit_index, num_exits = self.network.num_exits - 1, self.network.num_exits
        else:
            confidence, class_id, exit_index, num_exits = 0.0, -1, 0, 0
        compute_ms = (time.perf_counter() - begin) * 1e3
        stamp_ns = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
        now = self.get_clock().now()
        result = InferenceResult(
            header=msg.header, tenant=tenant, class_id=int(class_id),
            label=fashion_mnist.CLASS_NAMES[int(class_id)] if class_id >= 0 else '',
            confidence=confidence, exit_index=exit_index, num_exits=num_exits,
            is_final=True, latency_ms=(now.nanoseconds - stamp_ns) / 1e6,
            queue_ms=(started.nanoseconds - stamp_ns) / 1e6, compute_ms=compute_ms,
            deadline_met=True, policy=POLICY, num_threads=torch.get_num_threads(),
            model=self.model_name)
        publisher.publish(result)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tenants', nargs='+', required=True, help='one stream per tenant')
    parser.add_argument('--threads', type=int, default=0,
                        help="torch intra-op threads; 0: torch's default")
    parser.add_argument('--model', default=None, help='checkpoint; default: the shipped model')
    parser.add_argument('--no-network', action='store_true',
                        help='answer each frame at once, without the network (the floor)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model)
    rclpy.init()
    node = PlainPeer(model, args.tenants, run_network=not args.no_network)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
