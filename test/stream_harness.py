"""A test-side image stream: publishes Fashion-MNIST frames, collects answers and statuses."""

import threading

from builtin_interfaces.msg import Time
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult, TenantStatus
from node_harness import TIMEOUT_S, wait_for
from sensor_msgs.msg import Image

_FRAMES = []


def fashion_test_frames():
    """Fashion-MNIST test images and labels (loaded once per session)."""
    if not _FRAMES:
        _FRAMES.extend(fashion_mnist.load('test'))
    return _FRAMES


class Stream:
    """One tenant seen from outside: an image publisher, its results and its statuses."""

    def __init__(self, node, image_topic, qos, result_topic, status_topic=None, tag='frame'):
        self.node = node
        self.tag = tag
        self.publisher = node.create_publisher(Image, image_topic, qos)
        self.lock = threading.Lock()
        self.results = []
        self.statuses = []
        self.sent = {}
        node.create_subscription(InferenceResult, result_topic, self._result_callback, 100)
        if status_topic:
            node.create_subscription(TenantStatus, status_topic, self._status_callback, 10)
        self.images, self.labels = fashion_test_frames()

    def _result_callback(self, msg):
        with self.lock:
            self.results.append(msg)

    def _status_callback(self, msg):
        with self.lock:
            self.statuses.append(msg)

    def connected(self, timeout=TIMEOUT_S):
        """Wait until the server's subscription has matched this publisher."""
        return wait_for(lambda: self.publisher.get_subscription_count() > 0, timeout)

    def publish(self, stamp=None):
        """Publish the next frame (stamped now unless ``stamp`` is given); return its frame_id."""
        index = len(self.sent)
        frame_id = f'{self.tag}_{index}'
        msg = Image()
        stamp = self.node.get_clock().now().to_msg() if stamp is None else stamp
        fill_image(msg, self.images[index % len(self.images)], encoding='mono8',
                   frame_id=frame_id, stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec))
        self.sent[frame_id] = (stamp.sec, stamp.nanosec)
        self.publisher.publish(msg)
        return frame_id

    def finals(self):
        """Return the final answers received so far, by frame_id (frames this stream sent)."""
        with self.lock:
            return {r.header.frame_id: r for r in self.results
                    if r.is_final and r.header.frame_id in self.sent}

    def matching_headers(self):
        """Return the final answers whose header is exactly that of the frame sent."""
        return [r for frame_id, r in self.finals().items()
                if (r.header.stamp.sec, r.header.stamp.nanosec) == self.sent[frame_id]]

    def latest_status(self, predicate=lambda s: True):
        """Newest TenantStatus that satisfies predicate (None: none yet)."""
        with self.lock:
            return next((s for s in reversed(self.statuses) if predicate(s)), None)

    def answer_until(self, predicate, timeout=60.0, **publish_args):
        """Keep publishing until an answer satisfies predicate; return that answer."""
        def found():
            self.publish(**publish_args)
            return next((r for r in self.finals().values() if predicate(r)), None)
        return wait_for(found, timeout, interval=0.05)
