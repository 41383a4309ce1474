"""The managed server's lifecycle transitions, driven from another process."""

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.srv import ListParameters
from rclpy.qos import QoSProfile
from stream_harness import Stream

pytestmark = pytest.mark.ros


def test_configure_activate_deactivate_cleanup(tmp_path):
    log = tmp_path / 'server.log'
    process = start_node('managed_server', '-p', 'tenants:=[cam]', log_path=log)
    probe = Probe('lifecycle_test_client')
    node = probe.node
    change = node.create_client(ChangeState, '/delen_server/change_state')
    get = node.create_client(GetState, '/delen_server/get_state')
    parameters = node.create_client(ListParameters, '/delen_server/list_parameters')
    stream = Stream(node, '/cam/image', QoSProfile(depth=10), '/delen/cam/result', tag='cam')

    def state():
        return probe.call(get, GetState.Request()).current_state.id

    def transition(transition_id):
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return probe.call(change, request).success

    def tenant_parameters():
        request = ListParameters.Request(prefixes=['cam'], depth=0)
        return probe.call(parameters, request).result.names

    try:
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert tenant_parameters() == [] and stream.publisher.get_subscription_count() == 0
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert 'cam.latency_ms' in tenant_parameters()
        assert stream.publisher.get_subscription_count() == 0, 'inactive yet subscribed'
        assert transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        assert stream.connected() and stream.answer_until(lambda r: r.tenant == 'cam')
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert wait_for(lambda: stream.publisher.get_subscription_count() == 0, 20.0)
        assert 'cam.latency_ms' in tenant_parameters(), 'deactivate keeps the configuration'
        assert transition(Transition.TRANSITION_ACTIVATE), 'activate again after deactivate'
        stream.sent.clear()
        assert stream.connected() and stream.answer_until(lambda r: r.tenant == 'cam')
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert tenant_parameters() == []
        assert transition(Transition.TRANSITION_CONFIGURE), 'configure again after cleanup'
    finally:
        probe.close()
        code = stop_node(process)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, text


def test_a_bad_model_fails_configure_with_one_line(tmp_path):
    log = tmp_path / 'server.log'
    missing = tmp_path / 'missing.pt'
    process = start_node('managed_server', '-p', f'model:={missing}', log_path=log)
    probe = Probe('lifecycle_bad_client')
    change = probe.node.create_client(ChangeState, '/delen_server/change_state')
    try:
        request = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
        assert not probe.call(change, request).success
    finally:
        probe.close()
        code = stop_node(process)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, text
    assert f'configure failed: {missing}: model file not found' in text
