"""
The real governor against the real serving node, across processes.

The test publishes a battery drain and a heat-up, and Fashion-MNIST frames for one tenant; it
watches the server's TenantStatus (base and effective bounds), the results' deadline_ms and
parameters, sets a budget by hand in the middle, and stops the governor.
"""

import math
import threading

from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_image
from delen_ros.msg import BudgetAdjustment, InferenceResult, TenantStatus
from delen_ros.nodes.budget_adjustments import adjustment_qos
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import BatteryState, Image, Temperature

pytestmark = pytest.mark.ros

STARTUP_TIMEOUT_S = 180.0

SERVER_CONFIG = """delen_server:
  ros__parameters:
    tenants: [alpha, beta]
    status_period_s: 0.2
    adjustment_timeout_s: 1.5
    alpha.input_topic: /gov_test/alpha/image
    alpha.output_topic: /gov_test/alpha/result
    alpha.status_topic: /gov_test/alpha/status
    alpha.goal: latency
    alpha.latency_ms: 100.0
    alpha.energy_mj: 20.0
    alpha.on_infeasible: serve_first_exit
    alpha.input_deadline_ms: 0.0
    beta.input_topic: /gov_test/beta/image
    beta.output_topic: /gov_test/beta/result
    beta.status_topic: /gov_test/beta/status
    beta.goal: accuracy
    beta.min_accuracy: 0.9
"""


class Robot:
    """The test side: battery, temperature and camera publishers; status and result readers."""

    def __init__(self):
        self.probe = Probe('governor_test_robot')
        node = self.probe.node
        self.lock = threading.Lock()
        self.soc = None  # None: publish nothing
        self.celsius = None
        self.status = {}
        self.results = []
        self.adjustments = 0
        self.governor_status = {}
        self.battery = node.create_publisher(BatteryState, '/gov_test/battery', 10)
        self.temperature = node.create_publisher(Temperature, '/gov_test/temperature', 10)
        self.images = node.create_publisher(Image, '/gov_test/alpha/image', 4)
        self.frames, _ = fashion_mnist.load('test')
        self.count = 0
        node.create_timer(0.1, self._timer_callback)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for tenant in ('alpha', 'beta'):
            node.create_subscription(TenantStatus, f'/gov_test/{tenant}/status',
                                     self._status_callback, reliable)
        node.create_subscription(InferenceResult, '/gov_test/alpha/result',
                                 self._result_callback, reliable)
        node.create_subscription(BudgetAdjustment, '/delen/budget_adjustment',
                                 self._adjustment_callback, adjustment_qos(depth=10))
        self.adjustment = node.create_publisher(BudgetAdjustment, '/delen/budget_adjustment',
                                                adjustment_qos())
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback,
                                 50)
        self.get_client = node.create_client(GetParameters, '/delen_server/get_parameters')
        self.set_client = node.create_client(SetParameters, '/delen_server/set_parameters')

    def _timer_callback(self):
        if self.soc is not None:
            self.battery.publish(BatteryState(
                percentage=self.soc, present=True,
                power_supply_status=BatteryState.POWER_SUPPLY_STATUS_DISCHARGING))
        if self.celsius is not None:
            self.temperature.publish(Temperature(temperature=self.celsius))
        msg = Image()
        fill_image(msg, self.frames[self.count % 100], encoding='mono8', frame_id='alpha_camera',
                   stamp=self.probe.node.get_clock().now().to_msg())
        self.images.publish(msg)
        self.count += 1

    def _status_callback(self, msg):
        with self.lock:
            self.status[msg.tenant] = msg

    def _result_callback(self, msg):
        with self.lock:
            self.results.append(msg)

    def _adjustment_callback(self, msg):
        with self.lock:
            self.adjustments += 1

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name in ('delen_governor', 'delen_server'):
                with self.lock:
                    self.governor_status[status.name] = {kv.key: kv.value for kv in status.values}

    def wait_status(self, tenant, **expected):
        """Wait for a TenantStatus of tenant with the expected fields (floats approximately)."""
        def matches():
            with self.lock:
                status = self.status.get(tenant)
            return status is not None and all(
                math.isclose(getattr(status, k), v, rel_tol=1e-5) if isinstance(v, float)
                else getattr(status, k) == v for k, v in expected.items())
        if not wait_for(matches, interval=0.05):
            raise AssertionError(f'{tenant} status {self.status.get(tenant)}, expected '
                                 f'{expected}; diagnostics {self.governor_status}')
        return self.status[tenant]

    def wait_deadline(self, deadline_ms):
        """Wait for a result from now on served under the given deadline; return it."""
        with self.lock:
            start = len(self.results)

        def found():
            with self.lock:
                return next((r for r in self.results[start:]
                             if math.isclose(r.deadline_ms, deadline_ms, rel_tol=1e-5)), None)
        result = wait_for(found, interval=0.05)
        assert result, f'no result with deadline_ms {deadline_ms}; last ' \
                       f'{self.results[-1].deadline_ms if self.results else None}'
        return result

    def wait_diagnostic(self, name, predicate):
        def found():
            with self.lock:
                values = self.governor_status.get(name)
            return values if values and predicate(values) else None
        values = wait_for(found, interval=0.05)
        assert values, f'{name} diagnostics: {self.governor_status.get(name)}'
        return values

    def parameter(self, name):
        response = self.probe.call(self.get_client, GetParameters.Request(names=[name]))
        return response.values[0].double_value

    def set_parameter(self, name, value):
        request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
        return self.probe.call(self.set_client, request).results[0]

    def close(self):
        self.probe.close()


@pytest.fixture
def stack(tmp_path):
    params = tmp_path / 'server.yaml'
    params.write_text(SERVER_CONFIG)
    server = start_node('server', '--params-file', str(params),
                        log_path=tmp_path / 'server.log')
    governor = start_node(
        'governor', '-p', 'battery_topic:=/gov_test/battery',
        '-p', 'temperature_topic:=/gov_test/temperature', '-p', 'stale_after_s:=60.0',
        '-p', 'decision_period_s:=0.2', '-p', 'diagnostics_period_s:=0.2',
        log_path=tmp_path / 'governor.log')
    robot = Robot()
    # Both processes up (importing torch takes a while on a busy machine), then the test.
    # (no assertion here: the test's own waits report, and the teardown below always runs)
    wait_for(lambda: len(robot.status) == 2 and 'delen_governor' in robot.governor_status,
             timeout=STARTUP_TIMEOUT_S)
    yield robot, governor, tmp_path
    robot.close()
    governor_code = stop_node(governor)
    server_code = stop_node(server)
    assert server_code == 0, (tmp_path / 'server.log').read_text()
    assert governor_code == 0, (tmp_path / 'governor.log').read_text()


def test_governor_adjusts_on_top_of_the_servers_budgets(stack):
    robot, governor, folder = stack
    # No battery or temperature yet (a NaN charge is no reading): nothing is adjusted.
    robot.soc = float('nan')
    robot.wait_diagnostic('delen_governor', lambda v: 'battery_nan' in v['ignored_readings']
                          and v.get('unheard_inputs') == 'battery, temperature')
    robot.wait_status('alpha', latency_bound_ms=100.0, base_latency_bound_ms=100.0,
                      energy_bound_mj=20.0, base_energy_bound_mj=20.0, adjustment_reason='')
    robot.wait_deadline(100.0)

    # Battery drain: the energy bound shrinks on top of the base, which stays 20.
    robot.soc = 0.3
    robot.wait_status('alpha', energy_bound_mj=14.0, base_energy_bound_mj=20.0)
    robot.soc = 0.1
    status = robot.wait_status('alpha', energy_bound_mj=8.0, base_energy_bound_mj=20.0,
                               latency_bound_ms=100.0)
    assert 'critical power' in status.adjustment_reason

    # Heat-up: latency bounds relax, accuracy targets drop.
    robot.celsius = 50.0
    robot.wait_diagnostic('delen_governor', lambda v: v.get('thermal_state') == 'nominal')
    robot.celsius = 80.0
    robot.wait_status('alpha', latency_bound_ms=150.0, base_latency_bound_ms=100.0,
                      energy_bound_mj=8.0)
    status = robot.wait_status('beta', min_accuracy=0.87, base_min_accuracy=0.9)
    assert 'hot' in status.adjustment_reason
    robot.wait_deadline(150.0)

    # A budget set by hand: the new base, adjusted on top, and never overwritten.
    assert robot.set_parameter('alpha.latency_ms', 60.0).successful
    robot.wait_status('alpha', latency_bound_ms=90.0, base_latency_bound_ms=60.0)
    robot.wait_deadline(90.0)
    seen = robot.adjustments
    assert wait_for(lambda: robot.adjustments >= seen + 5), 'the governor stopped publishing'
    assert robot.parameter('alpha.latency_ms') == 60.0
    assert robot.parameter('alpha.energy_mj') == 20.0
    assert robot.parameter('beta.min_accuracy') == 0.9
    robot.wait_status('alpha', latency_bound_ms=90.0, base_latency_bound_ms=60.0)

    # The governor goes: after adjustment_timeout_s the base budgets return.
    assert stop_node(governor) == 0, (folder / 'governor.log').read_text()
    robot.wait_status('alpha', latency_bound_ms=60.0, energy_bound_mj=20.0,
                      adjustment_reason='')
    robot.wait_status('beta', min_accuracy=0.9, adjustment_reason='')
    robot.wait_deadline(60.0)
    values = robot.wait_diagnostic('delen_server', lambda v: 'lapsed' in v['budget_adjustment']
                                   and v['adjustment_expiry_timer'] == 'idle')
    assert 'base budgets' in values['budget_adjustment']

    # Another publisher: an adjustment for one tenant applies to it alone; a bad one is refused.
    robot.adjustment.publish(BudgetAdjustment(tenant='beta', latency_scale=1.0,
                                              accuracy_relaxation=0.1, energy_scale=1.0))
    robot.wait_status('beta', min_accuracy=0.8, base_min_accuracy=0.9,
                      adjustment_reason='min_accuracy -0.1')
    assert robot.status['alpha'].latency_bound_ms == 60.0
    robot.adjustment.publish(BudgetAdjustment(tenant='alpha', latency_scale=0.0,
                                              accuracy_relaxation=0.0, energy_scale=1.0))
    values = robot.wait_diagnostic('delen_server', lambda v: v['adjustments_rejected'] == '1')
    assert 'latency_scale must be in [0.01, 100], got 0' in values['last_adjustment_rejection']
    robot.wait_status('beta', min_accuracy=0.9, adjustment_reason='')  # lapsed again
    robot.wait_deadline(60.0)
    log = (folder / 'governor.log').read_text()
    # State changes are logged once each, not at every decision.
    assert log.count('battery: none heard yet') == 1, log
    assert log.count('temperature 80.0 C: hot') == 1, log
