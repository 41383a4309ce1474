"""
The governor node against a real parameter server, across processes.

The server is the installed ``delen_server`` when there is one, else a plain rclpy node of
that name declaring the same per-tenant parameters. The test publishes BatteryState and
watches the server's budgets and the governor's /diagnostics.
"""

import math
import threading

from delen_ros.nodes.governor_node import server_values, ServerRange, to_budgets
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_harness import installed_executable, Probe, start_node, stop_node, wait_for
import pytest
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rcl_interfaces.srv import GetParameters
from sensor_msgs.msg import BatteryState

BUDGETS = ('latency_ms', 'min_accuracy', 'energy_mj')
SERVER_CONFIG = """delen_server:
  ros__parameters:
    tenants: [alpha, beta]
    alpha.goal: latency
    alpha.latency_ms: 100.0
    alpha.energy_mj: 20.0
    beta.goal: accuracy
    beta.min_accuracy: 0.9
"""


# -- ROS-free conversions ---------------------------------------------------------------------

def test_server_conventions_round_trip():
    budgets, from_qos = to_budgets({'latency_ms': 0.0, 'min_accuracy': 0.0, 'energy_mj': 0.0})
    assert from_qos and math.isinf(budgets.energy_mj)
    assert server_values(budgets, from_qos, {}) == {'min_accuracy': 0.0, 'energy_mj': 0.0}
    budgets, from_qos = to_budgets({'latency_ms': 50.0, 'min_accuracy': 0.8, 'energy_mj': 12})
    assert not from_qos
    assert server_values(budgets, from_qos, {}) == {'latency_ms': 50.0, 'min_accuracy': 0.8,
                                                    'energy_mj': 12.0}


def test_values_are_snapped_to_the_server_ranges():
    energy = ServerRange(low=0.0, high=10000.0, step=0.1)
    assert energy.snap(12 * 0.7) == 8.4
    assert energy.snap(3.33 * 0.7) == 2.3
    assert energy.snap(0.02) == 0.1  # a bound stays a bound
    assert ServerRange(low=0.0, high=1000.0, step=0.5).snap(900 * 1.5) == 1000.0
    assert ServerRange(low=0.0, high=1.0, step=0.005).snap(0.92 - 0.03) == 0.89


# -- the node ----------------------------------------------------------------------------------

class BatteryDriver:
    """The test side: publishes BatteryState at 10 Hz, reads the server and diagnostics."""

    def __init__(self):
        self.probe = Probe('governor_test_driver')
        node = self.probe.node
        self.lock = threading.Lock()
        self.soc = None  # None: publish nothing
        self.status = None
        self.battery = node.create_publisher(BatteryState, '/gov_test/battery', 10)
        node.create_timer(0.1, self._timer_callback)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback,
                                 50)
        self.get_client = node.create_client(GetParameters, '/delen_server/get_parameters')

    def _timer_callback(self):
        soc = self.soc
        if soc is not None:
            self.battery.publish(BatteryState(
                percentage=soc, present=True,
                power_supply_status=BatteryState.POWER_SUPPLY_STATUS_DISCHARGING))

    def _diagnostics_callback(self, msg):
        for status in msg.status:
            if status.name == 'delen_governor':
                with self.lock:
                    self.status = (status, {kv.key: kv.value for kv in status.values})

    def diagnostic(self, predicate):
        """Wait for a governor status whose values satisfy predicate; return (status, values)."""
        def found():
            with self.lock:
                current = self.status
            return current if current and predicate(current[1]) else None
        return wait_for(found, interval=0.05)

    def server_budgets(self):
        names = [f'{tenant}.{field}' for tenant in ('alpha', 'beta') for field in BUDGETS]
        response = self.probe.call(self.get_client, GetParameters.Request(names=names))
        return {name: value.double_value for name, value in zip(names, response.values)}

    def wait_budgets(self, **expected):
        """Wait until the server holds the expected values (alpha_energy_mj=8.0, ...)."""
        wanted = {key.replace('_', '.', 1): value for key, value in expected.items()}

        def holds():
            budgets = self.server_budgets()
            return all(math.isclose(budgets[k], v, abs_tol=1e-9) for k, v in wanted.items())
        if wait_for(holds, interval=0.1):
            return True
        raise AssertionError(f'server budgets {self.server_budgets()}, expected {wanted}; '
                             f'governor status {self.status and self.status[1]}')

    def close(self):
        self.probe.close()


class PlainServer:
    """A plain rclpy node named delen_server with the serving node's budget parameters."""

    def __init__(self):
        self.probe = Probe('delen_server')
        node = self.probe.node
        node.declare_parameter('tenants', ['alpha', 'beta'])
        ranges = {'latency_ms': (1000.0, 0.5), 'min_accuracy': (1.0, 0.005),
                  'energy_mj': (10000.0, 0.1)}
        initial = {'alpha': (100.0, 0.0, 20.0), 'beta': (0.0, 0.9, 0.0)}
        for tenant, values in initial.items():
            node.declare_parameter(f'{tenant}.input_topic', f'/{tenant}/image')
            for field, value in zip(BUDGETS, values):
                high, step = ranges[field]
                node.declare_parameter(f'{tenant}.{field}', value, ParameterDescriptor(
                    floating_point_range=[FloatingPointRange(from_value=0.0, to_value=high,
                                                             step=step)]))
        node.add_on_set_parameters_callback(self._parameters_callback)

    @staticmethod
    def _parameters_callback(parameters):
        # The serving node's rule for a model whose best exit reaches 93.76 %.
        for parameter in parameters:
            if parameter.name.endswith('.min_accuracy') and parameter.value > 0.9376:
                return SetParametersResult(
                    successful=False,
                    reason=f'min_accuracy {parameter.value} is above what the model reaches')
        return SetParametersResult(successful=True)

    def close(self):
        self.probe.close()


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
    """Governor first (it must wait for the server), then the server, then the driver."""
    folder = tmp_path_factory.mktemp('governor')
    governor = start_node(
        'governor', '-p', 'battery_topic:=/gov_test/battery', '-p', 'stale_after_s:=2.0',
        '-p', 'decision_period_s:=0.2', '-p', 'diagnostics_period_s:=0.2',
        '-p', 'temperature_required:=false',
        '-p', 'request_timeout_s:=5.0', '-p', 'resync_period_s:=0.0',
        '-p', 'safe_tenants:=[beta]', '-p', 'safe.beta.latency_ms:=300.0',
        '-p', 'safe.beta.min_accuracy:=0.99', '-p', 'safe.beta.energy_mj:=0.0',
        log_path=folder / 'governor.log')
    try:
        installed_executable('server')
        params = folder / 'server.yaml'
        params.write_text(SERVER_CONFIG)
        server = start_node('server', '--params-file', str(params),
                            log_path=folder / 'server.log')
    except FileNotFoundError:
        server = PlainServer()
    driver = BatteryDriver()
    yield driver, governor, server
    driver.close()
    code = stop_node(governor)
    if isinstance(server, PlainServer):
        server.close()
    else:
        assert stop_node(server) == 0, (folder / 'server.log').read_text()
    assert code == 0, f'governor exited with {code}:\n' + (folder / 'governor.log').read_text()


def test_energy_budgets_follow_the_battery_with_hysteresis(stack):
    driver, governor, _ = stack
    driver.soc = 0.9
    assert driver.diagnostic(lambda v: v['power_state'] == 'normal' and v['fallback'] == 'False')
    driver.wait_budgets(alpha_energy_mj=20.0, alpha_latency_ms=100.0, beta_min_accuracy=0.9)

    driver.soc = 0.3
    driver.wait_budgets(alpha_energy_mj=14.0)
    driver.soc = 0.1
    driver.wait_budgets(alpha_energy_mj=8.0)
    # Above the critical threshold (0.2) but below threshold + margin (0.25): still critical.
    driver.soc = 0.22
    assert driver.diagnostic(lambda v: v['soc'] == '0.220' and v['power_state'] == 'critical')
    assert driver.server_budgets()['alpha.energy_mj'] == 8.0
    driver.soc = 0.26
    driver.wait_budgets(alpha_energy_mj=14.0)
    driver.soc = 0.52  # above 0.5 but below 0.55: still saving
    assert driver.diagnostic(lambda v: v['soc'] == '0.520' and v['power_state'] == 'saving')
    assert driver.server_budgets()['alpha.energy_mj'] == 14.0
    driver.soc = 0.56
    driver.wait_budgets(alpha_energy_mj=20.0)
    assert governor.poll() is None


def test_bad_battery_messages_are_ignored(stack):
    driver, governor, _ = stack
    driver.soc = float('nan')
    assert driver.diagnostic(lambda v: 'battery_nan' in v['ignored_readings'])
    driver.soc = 57.0  # a driver publishing percent instead of 0..1
    assert driver.diagnostic(lambda v: 'battery_out_of_range' in v['ignored_readings'])
    driver.soc = 0.6
    assert driver.diagnostic(lambda v: v['soc'] == '0.600' and v['fallback'] == 'False')
    assert governor.poll() is None


def test_fallback_when_the_battery_goes_silent_and_recovery(stack):
    driver, governor, _ = stack
    driver.soc = 0.9
    assert driver.diagnostic(lambda v: v['soc'] == '0.900' and v['fallback'] == 'False')
    driver.soc = None
    found = driver.diagnostic(lambda v: v['fallback'] == 'True')
    assert found, 'no fallback in /diagnostics after the battery went silent'
    status, values = found
    assert 'fallback' in status.message and 'battery' in values['stale_inputs']
    # alpha: base budgets adjusted by the fallback (energy x0.4, latency x1.5); beta: its
    # safe budgets, whose min_accuracy 0.99 the server refuses with a reason.
    driver.wait_budgets(alpha_energy_mj=8.0, alpha_latency_ms=150.0, beta_latency_ms=300.0)
    refused = driver.diagnostic(lambda v: 'beta.min_accuracy' in v['refused'])
    assert refused and 'min_accuracy' in refused[1]['refused'].split('refused:')[1]
    assert refused[0].level != DiagnosticStatus.OK
    assert int(refused[1]['refused_sets']) >= 1
    assert driver.server_budgets()['beta.min_accuracy'] == 0.9

    driver.soc = 0.9
    assert driver.diagnostic(lambda v: v['fallback'] == 'False')
    driver.wait_budgets(alpha_energy_mj=20.0, alpha_latency_ms=100.0, beta_latency_ms=0.0,
                        beta_min_accuracy=0.9)
    assert driver.diagnostic(lambda v: not v['refused'])
    assert driver.diagnostic(lambda v: v['server'] == '/delen_server: connected')
    assert governor.poll() is None
