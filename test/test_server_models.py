"""The serving node with a family of models, across processes: pinning, reports, parameters."""

import threading

from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import InferenceResult
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

SMALL = 'fmnist_small_resnet'
ANYTIME = 'fmnist_compact_resnet'
TENANTS = ('pinned', 'free')


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp('models')
    params = folder / 'params.yaml'
    params.write_text(f"""delen_server:
  ros__parameters:
    tenants: [pinned, free]
    models: [{SMALL}]
    status_period_s: 0.2
    pinned.model: {SMALL}
    pinned.latency_ms: 200.0
    free.latency_ms: 200.0
""")
    log = folder / 'server.log'
    process = start_node('server', '--params-file', str(params), log_path=log)
    yield process, log
    code = stop_node(process)
    assert code == 0, f'server exited with {code}:\n{log.read_text()}'


class Client:
    """Streams Fashion-MNIST frames to both tenants and records answers and diagnostics."""

    def __init__(self):
        self.probe = Probe('models_test_client')
        node = self.probe.node
        self.publishers = {t: node.create_publisher(Image, f'/{t}/image',
                                                    qos_profile_sensor_data)
                           for t in TENANTS}
        self.results = {t: [] for t in TENANTS}
        self.diagnostics = []
        self.lock = threading.Lock()
        for tenant in TENANTS:
            node.create_subscription(InferenceResult, f'/delen/{tenant}/result',
                                     self._result_callback, 50)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback,
                                 10)
        self.set_client = node.create_client(SetParameters, '/delen_server/set_parameters')
        self.frames, _ = fashion_mnist.load('test')
        self.count = 0

    def _result_callback(self, msg):
        with self.lock:
            self.results[msg.tenant].append(msg)

    def _diagnostics_callback(self, msg):
        with self.lock:
            self.diagnostics.append(msg)

    def answered(self, tenant, predicate, timeout=60.0):
        """Keep streaming until an answer of ``tenant`` satisfies predicate; return it."""
        def found():
            msg = Image()
            fill_image(msg, self.frames[self.count % 100], encoding='mono8',
                       frame_id=f'frame_{self.count}',
                       stamp=self.probe.node.get_clock().now().to_msg())
            self.count += 1
            for publisher in self.publishers.values():
                publisher.publish(msg)
            with self.lock:
                return next((r for r in self.results[tenant] if predicate(r)), None)
        return wait_for(found, timeout, interval=0.05)

    def set_model(self, tenant, model):
        request = SetParameters.Request(parameters=[Parameter(
            name=f'{tenant}.model', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=model))])
        return self.probe.call(self.set_client, request).results[0]

    def server_values(self, name='delen_server'):
        with self.lock:
            for array_msg in reversed(self.diagnostics):
                for status in array_msg.status:
                    if status.name == name:
                        return {kv.key: kv.value for kv in status.values}
        return None


@pytest.fixture(scope='module')
def client(server):
    client = Client()
    yield client
    client.probe.close()


def test_a_pinned_tenant_is_answered_by_its_model_and_the_header_kept(client):
    answer = client.answered('pinned', lambda r: r.is_final)
    assert answer, 'no answer for the pinned tenant'
    assert answer.model == SMALL and answer.num_exits == 1 and answer.exit_index == 0
    assert answer.header.frame_id.startswith('frame_')
    free = client.answered('free', lambda r: r.is_final)
    assert free and free.model in (SMALL, ANYTIME)


def test_every_model_is_reported_at_start_up_and_in_diagnostics(server, client):
    _, log = server
    values = wait_for(client.server_values, 60.0, interval=0.1)
    assert values, 'no server diagnostics'
    assert 'traditional, 1 exit' in values[f'model {SMALL}']
    assert 'anytime, 4 exits' in values[f'model {ANYTIME}']
    pinned = wait_for(lambda: (client.server_values('delen_server: tenant pinned') or {}).get(
        'answers_by_model', '').startswith(f'{SMALL}: '), 60.0, interval=0.1)
    assert pinned, "no per-model answer count in the pinned tenant's diagnostics"
    text = log.read_text()
    for name in (SMALL, ANYTIME):
        line = next((line for line in text.splitlines() if f'model {name} (' in line), '')
        assert 'MiB, loaded in' in line, text


def test_the_pin_changes_at_run_time_and_an_unknown_model_is_refused(client):
    refused = client.set_model('free', 'no_such_model')
    assert not refused.successful and 'no_such_model' in refused.reason
    assert SMALL in refused.reason  # the known ones are named
    for model, exits in ((ANYTIME, 4), (SMALL, 1)):
        assert client.set_model('free', model).successful
        with client.lock:
            earlier = len(client.results['free'])
        assert client.answered('free', lambda r: (
            r.model == model and r.num_exits == exits
            and any(r is later for later in client.results['free'][earlier:])))
    assert client.set_model('free', '').successful
