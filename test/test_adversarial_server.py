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
from delen_ros.msg import InferenceResult
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
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


class Client(adversarial.ServerWatch):
    """Publishes to both tenants; keeps their statuses and answers."""

    def __init__(self):
        self.probe = Probe('adversarial_client')
        node = self.probe.node
        super().__init__(node, TENANTS)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         deadline=Duration(seconds=1))
        self.publishers = {t: node.create_publisher(Image, f'/adversarial/{t}/image', qos)
                           for t in TENANTS}
        self.lock = threading.Lock()
        self.answered = {t: set() for t in TENANTS}
        for tenant in TENANTS:
            node.create_subscription(InferenceResult, f'/delen/{tenant}/result',
                                     self._result_callback, 50)
        self.frames, _ = fashion_mnist.load('test')
        self.count = 0

    def _result_callback(self, msg):
        if msg.is_final:
            with self.lock:
                self.answered[msg.tenant].add(msg.header.frame_id)

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
    assert client.fresh_status('fast'), 'no TenantStatus'  # counts the frames sent so far
    for number, image_class in enumerate(classes):
        outcome = adversarial.send_class(
            image_class, client.frames[number], f'class|{number}',
            publish=client.publishers['fast'].publish,
            status=lambda: client.latest_status('fast'),
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
    descriptors = client.descriptors()
    writable = [n for n, d in descriptors.items() if not d.read_only]
    kinds = {descriptors[n].type for n in writable}
    assert {'fast.policy', 'fast.latency_ms', 'fast.queue_size'} <= set(writable)
    assert len(kinds) >= 3, f'expected double, integer and string parameters, got {kinds}'
    originals = client.call(GetParameters, GetParameters.Request(names=writable)).values
    requests = adversarial.fuzz_requests(descriptors, random.Random(11),
                                         per_parameter=FUZZ_VALUES_PER_PARAMETER)
    requests += [[(f'{tenant}.policy', policy)] for tenant in TENANTS for policy in KILLERS]
    for request in requests:
        answer = client.call(SetParameters, adversarial.set_request(request), process=process)
        assert answer is not None and process.poll() is None, \
            f'{request} killed the server:\n{log.read_text()[-3000:]}'
        for result in answer.results:
            assert result.successful or result.reason, f'{request} refused without a reason'
    restore = SetParameters.Request(parameters=[
        ParameterMsg(name=name, value=value) for name, value in zip(writable, originals)])
    assert all(r.successful for r in client.call(SetParameters, restore).results)
    for tenant in TENANTS:
        assert client.serves(tenant), f'{tenant} unserved after the fuzz'
