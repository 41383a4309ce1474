"""
The fast subset of bench/bench_soak.py against a live server in another process.

Every image class of test/adversarial.py once, and every writable parameter with a few fuzz
values (each kind: double, integer, string, policy string); the server must count and
handle each image as its class says, stay up, and serve both tenants afterwards.
"""

import random
import threading

import adversarial
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult, TenantStatus
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

TENANTS = ('fast', 'careful')
FUZZ_VALUES_PER_PARAMETER = 3
KILLERS = ('static:exit_index=99', 'static:exit_index=-99', 'budget:threads=1024')

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp('adversarial')
    params = folder / 'params.yaml'
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [{', '.join(TENANTS)}]
    status_period_s: 0.1
    fast.input_topic: /adversarial/fast/image
    fast.latency_ms: 500.0
    fast.queue_size: 4
    fast.on_infeasible: serve_first_exit
    careful.input_topic: /adversarial/careful/image
    careful.goal: accuracy
    careful.min_accuracy: 0.9
""")
    log = folder / 'server.log'
    process = start_node('server', '--params-file', str(params), log_path=log)
    yield process, log
    stop_node(process)


class Client:
    """Publishes to both tenants; keeps their statuses and answers."""

    def __init__(self):
        self.probe = Probe('adversarial_client')
        node = self.probe.node
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         deadline=Duration(seconds=1))
        self.publishers = {t: node.create_publisher(Image, f'/adversarial/{t}/image', qos)
                           for t in TENANTS}
        self.lock = threading.Lock()
        self.answered = {t: set() for t in TENANTS}
        self.status_count = dict.fromkeys(TENANTS, 0)
        self.status = {}
        for tenant in TENANTS:
            node.create_subscription(InferenceResult, f'/delen/{tenant}/result',
                                     self._result_callback, 50)
            node.create_subscription(TenantStatus, f'/delen/{tenant}/status',
                                     self._status_callback, 10)
        self.clients = {kind: node.create_client(kind, f'/delen_server/{name}')
                        for kind, name in ((SetParameters, 'set_parameters'),
                                           (GetParameters, 'get_parameters'),
                                           (ListParameters, 'list_parameters'),
                                           (DescribeParameters, 'describe_parameters'))}
        self.frames, _ = fashion_mnist.load('test')
        self.count = 0

    def _result_callback(self, msg):
        if msg.is_final:
            with self.lock:
                self.answered[msg.tenant].add(msg.header.frame_id)

    def _status_callback(self, msg):
        with self.lock:
            self.status[msg.tenant] = msg
            self.status_count[msg.tenant] += 1

    def fresh_status(self, tenant, timeout=10.0):
        with self.lock:
            seen = self.status_count[tenant]
        fresh = wait_for(lambda: self.status_count[tenant] > seen + 1, timeout)
        with self.lock:
            return self.status[tenant] if fresh else None

    def call(self, kind, request, process=None):
        """Call a parameter service; None if the server process ends first."""
        client = self.clients[kind]
        assert client.wait_for_service(timeout_sec=60.0), f'{client.srv_name} not available'
        future = client.call_async(request)
        wait_for(lambda: future.done() or (process is not None and process.poll() is not None))
        return future.result() if future.done() else None

    def now(self):
        return self.probe.node.get_clock().now().to_msg()

    def serves(self, tenant, timeout=30.0):
        """Publish good frames until one is answered."""
        def answered():
            self.count += 1
            frame_id = f'good_{self.count}'
            msg = Image()
            fill_image(msg, self.frames[self.count % 100], encoding='mono8',
                       frame_id=frame_id, stamp=self.now())
            self.publishers[tenant].publish(msg)
            return wait_for(lambda: frame_id in self.answered[tenant], 0.5)
        return wait_for(answered, timeout, interval=0.0)

    def close(self):
        self.probe.close()


@pytest.fixture(scope='module')
def client(server):
    client = Client()
    assert all(client.serves(t, timeout=60.0) for t in TENANTS), 'server never answered'
    yield client
    client.close()


def test_every_image_class_once(server, client):
    process, log = server
    classes = adversarial.image_classes()
    assert len(classes) >= 35
    wrong = []
    for number, image_class in enumerate(classes):
        outcome = adversarial.send_class(
            image_class, client.frames[number], f'class|{number}',
            publish=client.publishers['fast'].publish,
            fresh_status=lambda: client.fresh_status('fast'),
            answered=lambda frame_id: frame_id in client.answered['fast'],
            stamp=client.now)
        assert process.poll() is None, f'{image_class.name} killed the server:\n' \
                                       f'{log.read_text()[-3000:]}'
        if outcome != image_class.expect:
            wrong.append(f'{image_class.name}: expected {image_class.expect}, got {outcome}')
    assert not wrong, '\n'.join(wrong)
    assert all(client.serves(t) for t in TENANTS)


def test_every_parameter_kind_once(server, client):
    process, log = server
    names = client.call(ListParameters, ListParameters.Request()).result.names
    descriptors = {d.name: d for d in client.call(
        DescribeParameters, DescribeParameters.Request(names=list(names))).descriptors}
    writable = [n for n, d in descriptors.items() if not d.read_only]
    kinds = {descriptors[n].type for n in writable}
    assert {'fast.policy', 'fast.latency_ms', 'fast.queue_size'} <= set(writable)
    assert len(kinds) >= 3, f'expected double, integer and string parameters, got {kinds}'
    originals = client.call(GetParameters, GetParameters.Request(names=writable)).values
    requests = adversarial.fuzz_requests(descriptors, random.Random(11),
                                         per_parameter=FUZZ_VALUES_PER_PARAMETER)
    requests += [[(f'{tenant}.policy', policy)] for tenant in TENANTS for policy in KILLERS]
    for request in requests:
        answer = client.call(SetParameters, adversarial.set_request(request), process)
        assert answer is not None and process.poll() is None, \
            f'{request} killed the server:\n{log.read_text()[-3000:]}'
        for result in answer.results:
            assert result.successful or result.reason, f'{request} refused without a reason'
    restore = SetParameters.Request(parameters=[
        ParameterMsg(name=name, value=value) for name, value in zip(writable, originals)])
    assert all(r.successful for r in client.call(SetParameters, restore).results)
    for tenant in TENANTS:
        assert client.serves(tenant), f'{tenant} unserved after the fuzz'
