"""~/classify, ~/add_tenant and ~/remove_tenant, called from another process."""

import array
import threading

from delen_ros.imaging import fill_image
from delen_ros.msg import TenantStatus
from delen_ros.srv import AddTenant, Classify, RemoveTenant
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from stream_harness import fashion_test_frames, Stream

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp('services')
    log = folder / 'server.log'
    process = start_node('server', '-p', 'tenants:=[camera]', '-p', 'camera.latency_ms:=40.0',
                         log_path=log)
    probe = Probe('services_test_client')
    clients = {name: probe.node.create_client(kind, f'/delen_server/{name}')
               for name, kind in (('classify', Classify), ('add_tenant', AddTenant),
                                  ('remove_tenant', RemoveTenant),
                                  ('get_parameters', GetParameters),
                                  ('list_parameters', ListParameters))}
    yield probe, clients
    probe.close()
    code = stop_node(process)
    assert code == 0, f'server exited with {code}:\n{log.read_text()}'


def _classify(probe, clients, image, goal='', tenant=''):
    return probe.call(clients['classify'], Classify.Request(image=image, goal=goal,
                                                            tenant=tenant))


def _image(index, frame_id='request'):
    images, _ = fashion_test_frames()
    return fill_image(Image(), images[index], encoding='mono8', frame_id=frame_id)


def test_classify_answers_the_right_class_under_the_requested_goal(served):
    probe, clients = served
    _, labels = fashion_test_frames()
    correct = 0
    for index in range(20):
        response = _classify(probe, clients, _image(index, f'request_{index}'),
                             goal='accuracy:0.9')
        assert response.success, response.message
        result = response.result
        assert result.header.frame_id == f'request_{index}' and result.is_final
        assert result.goal.startswith('accuracy') and result.tenant == 'classify'
        correct += result.class_id == int(labels[index])
    assert correct >= 16, f'{correct} of 20 test images classified right'
    tight = _classify(probe, clients, _image(0), goal='latency:1000')
    assert tight.success and tight.result.deadline_ms == 1000.0 and tight.result.deadline_met


def test_classify_for_a_tenant_takes_its_goal(served):
    probe, clients = served
    response = _classify(probe, clients, _image(1), tenant='camera')
    assert response.success and response.result.tenant == 'camera'
    assert response.result.deadline_ms == 40.0


@pytest.mark.parametrize('image,goal,tenant,words', [
    (None, 'latency:abc', '', 'latency'),
    (None, 'speed:3', '', 'unknown goal kind'),
    (None, 'accuracy:0.999', '', 'accuracy'),
    (Image(height=2, width=2, encoding='yuv9', step=2, data=array.array('B', bytes(4))), '',
     '', 'yuv9'),
    (Image(height=28, width=28, encoding='mono8', step=28, data=array.array('B', bytes(10))),
     '', '', 'data'),
    (Image(), '', '', 'empty'),
    (None, '', 'nobody', 'unknown tenant'),
])
def test_bad_requests_get_a_clear_error_not_a_hang(served, image, goal, tenant, words):
    probe, clients = served
    response = _classify(probe, clients, image if image is not None else _image(2), goal,
                         tenant)
    assert not response.success and words in response.message, response.message


def _parameter(name, value):
    if isinstance(value, float):
        return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                         double_value=value))
    if isinstance(value, int):
        return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                         integer_value=value))
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                     string_value=value))


def _names(probe, clients, prefix):
    request = ListParameters.Request(prefixes=[prefix], depth=0)
    return sorted(probe.call(clients['list_parameters'], request).result.names)


def _add(probe, clients, name, **values):
    request = AddTenant.Request(name=name, parameters=[_parameter(k, v)
                                                       for k, v in values.items()])
    return probe.call(clients['add_tenant'], request)


@pytest.mark.parametrize('name,values,words', [
    ('camera', {}, 'already exists'),
    ('2cams', {}, 'ROS name token'),
    ('bad', {'latency_ms': 'fast'}, 'latency_ms must be a number'),
    ('bad', {'latency_ms': 5000.0}, 'latency_ms must be within'),
    ('bad', {'speed': 1.0}, 'unknown tenant parameter'),
    ('bad', {'goal': 'accuracy'}, 'min_accuracy'),
    ('bad', {'policy': 'no_such_policy'}, 'no_such_policy'),
])
def test_add_tenant_refuses_what_start_up_refuses_and_leaves_nothing(served, name, values,
                                                                     words):
    probe, clients = served
    response = _add(probe, clients, name, **values)
    assert not response.success and words in response.message, response.message
    assert _names(probe, clients, 'bad') == []


def test_tenants_come_and_go_at_run_time(served):
    probe, clients = served
    added = _add(probe, clients, 'extra', input_topic='/extra/cam', latency_ms=80.0,
                 queue_size=3)
    assert added.success, added.message
    assert 'extra.latency_ms' in _names(probe, clients, 'extra')
    tenants = probe.call(clients['get_parameters'], GetParameters.Request(names=['tenants']))
    assert list(tenants.values[0].string_array_value) == ['camera'], 'tenants is the start-up list'
    stream = Stream(probe.node, '/extra/cam', QoSProfile(depth=10), '/delen/extra/result',
                    tag='extra')
    assert stream.connected()
    answer = stream.answer_until(lambda r: r.tenant == 'extra')
    assert answer and answer.deadline_ms == 80.0
    removed = probe.call(clients['remove_tenant'], RemoveTenant.Request(name='extra'))
    assert removed.success, removed.message
    status = removed.final_status
    assert status.tenant == 'extra' and status.frames_served >= 1
    assert status.frames_received >= status.frames_served
    assert _names(probe, clients, 'extra') == []
    assert wait_for(lambda: stream.publisher.get_subscription_count() == 0, 20.0), \
        'the image subscription outlived its tenant'
    again = probe.call(clients['remove_tenant'], RemoveTenant.Request(name='extra'))
    assert not again.success and 'unknown tenant' in again.message
    assert _add(probe, clients, 'extra', input_topic='/extra/cam').success, \
        'a removed tenant can be added again'


def test_status_reports_come_one_at_a_time_and_follow_the_tenants(served):
    probe, clients = served
    lock = threading.Lock()
    arrays, statuses = [], []

    def keep(into, msg):
        with lock:
            into.append(msg)

    probe.node.create_subscription(DiagnosticArray, '/diagnostics',
                                   lambda msg: keep(arrays, msg), 50)
    probe.node.create_subscription(TenantStatus, '/delen/watched/status',
                                   lambda msg: keep(statuses, msg), 10)
    assert _add(probe, clients, 'watched', input_topic='/watched/cam').success

    def reported():
        with lock:
            names = {s.name for a in arrays for s in a.status}
        return {'delen_server', 'delen_server: tenant camera',
                'delen_server: tenant watched'} <= names and bool(statuses)
    try:
        assert wait_for(reported, 30.0), 'an added tenant was not reported'
        with lock:
            ours = [a for a in arrays if any(s.name.startswith('delen_server') for s in a.status)]
        # One report at a time, between frames: never every tenant's at once.
        assert ours and all(len(a.status) == 1 for a in ours), [len(a.status) for a in ours]
        server = [{kv.key: kv.value for kv in s.values}
                  for a in ours for s in a.status if s.name == 'delen_server']
        assert server and server[-1]['idle_task_errors'] == '0', 'reports failed on the worker'
    finally:
        assert probe.call(clients['remove_tenant'], RemoveTenant.Request(name='watched')).success
