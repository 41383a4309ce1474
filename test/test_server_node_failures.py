"""A crash while serving, in a live node: logged to rosout, counted, in /diagnostics."""

import threading

from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import TenantStatus
from delen_ros.nodes.server_node import ServerNode
from delen_ros.runtime import Policy
from delen_ros.runtime.policies import register_policy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_harness import Probe, wait_for
import pytest
from rcl_interfaces.msg import Log
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros


@register_policy
class CrashingPolicy(Policy):
    """A policy with a bug: planning raises for every frame."""

    name = 'test_node_crashing'

    def plan(self, context):
        raise RuntimeError('policy bug')

    def should_stop(self, status):
        return True


class Watcher:
    """Collects rosout, TenantStatus and /diagnostics; publishes images to both tenants."""

    def __init__(self):
        self.probe = Probe('failure_watcher')
        node = self.probe.node
        self.lock = threading.Lock()
        self.logs, self.statuses, self.diagnostics = [], [], []
        node.create_subscription(Log, '/rosout', self._append(self.logs), 100)
        node.create_subscription(TenantStatus, '/delen/buggy/status',
                                 self._append(self.statuses), 10)
        node.create_subscription(DiagnosticArray, '/diagnostics',
                                 self._append(self.diagnostics), 10)
        qos = QoSProfile(depth=4, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.images = {t: node.create_publisher(Image, f'/{t}/image', qos)
                       for t in ('buggy', 'fine')}
        self.frame = fashion_mnist.load('test')[0][0]

    def _append(self, into):
        def callback(msg):
            with self.lock:
                into.append(msg)
        return callback

    def publish(self):
        for publisher in self.images.values():
            msg = Image()
            fill_image(msg, self.frame, encoding='mono8', frame_id='cam',
                       stamp=self.probe.node.get_clock().now().to_msg())
            publisher.publish(msg)

    def server_status(self):
        with self.lock:
            arrays = list(self.diagnostics)
        return [s for a in arrays for s in a.status if s.name == 'delen_server']


def test_a_crash_while_serving_is_logged_counted_and_serving_goes_on():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = ServerNode(context=context, parameter_overrides=[
        Parameter('tenants', value=['buggy', 'fine']),
        Parameter('status_period_s', value=0.2),
        Parameter('buggy.policy', value='test_node_crashing'),
        Parameter('buggy.latency_ms', value=500.0),
        Parameter('fine.latency_ms', value=500.0),
        Parameter('buggy.input_deadline_ms', value=0.0),
        Parameter('fine.input_deadline_ms', value=0.0)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    watcher = Watcher()
    try:
        def failed_and_served():
            watcher.publish()
            stats = node._server.stats()
            return stats['buggy'].failed >= 1 and stats['fine'].served >= 1
        assert wait_for(failed_and_served, 60.0, interval=0.05)
        assert wait_for(lambda: any('policy bug' in m.msg for m in list(watcher.logs)), 30.0)
        assert wait_for(lambda: any(s.frames_failed >= 1 for s in list(watcher.statuses)), 30.0)
        assert wait_for(lambda: any(
            s.level == DiagnosticStatus.OK and any(kv.key == 'frames_failed' and kv.value != '0'
                                                   for kv in s.values)
            for s in watcher.server_status()), 30.0)
        node._server.stop(timeout=10.0)  # serving stops: the server's status says ERROR
        assert wait_for(lambda: any(s.level == DiagnosticStatus.ERROR
                                    for s in watcher.server_status()), 30.0)
    finally:
        watcher.probe.close()
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)
