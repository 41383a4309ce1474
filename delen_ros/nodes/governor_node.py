"""
The governor node: battery and temperature readings -> BudgetAdjustment messages.

A thin layer over ``delen_ros.governor.Governor`` (rules, hysteresis and staleness live
there, see docs/governor.md). Every ``decision_period_s`` it publishes the adjustment for
all tenants on ``delen/budget_adjustment`` (transient local, so a restarted server gets it;
the periodic message is also the heartbeat the server's ``adjustment_timeout_s`` watches).
The server applies it on top of its own parameters, which the governor never touches.
"""

from typing import Any, Dict

from delen_ros.governor import ALL_TENANTS, Governor, GovernorConfig
from delen_ros.msg import BudgetAdjustment
from delen_ros.nodes.budget_adjustments import adjustment_qos, ADJUSTMENT_TOPIC
from delen_ros.nodes.descriptors import bool_parameter, float_parameter, string_parameter
from delen_ros.nodes.spin import run_node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState, Temperature
from std_msgs.msg import Header

__all__ = ['GovernorNode', 'main']

# GovernorConfig fields as read-only parameters: (name, description, low, high, step).
_RULES = (
    ('saving_below_soc', 'saving power below this state of charge (0..1)', 0.01, 1.0, 0.01),
    ('critical_below_soc', 'critical power below this state of charge (0..1)', 0.01, 1.0,
     0.01),
    ('soc_hysteresis', 'a higher power state needs threshold + this', 0.0, 1.0, 0.01),
    ('energy_scale_normal', 'energy bound factor, normal power', 0.01, 100.0, 0.01),
    ('energy_scale_saving', 'energy bound factor, saving power', 0.01, 100.0, 0.01),
    ('energy_scale_critical', 'energy bound factor, critical power or stale battery', 0.01,
     100.0, 0.01),
    ('hot_above_c', 'hot at or above this temperature, C', -39.0, 149.0, 0.1),
    ('temperature_hysteresis_c', 'hot ends below hot_above_c minus this, C', 0.0, 100.0, 0.1),
    ('hot_latency_scale', 'latency bound factor while hot or temperature stale', 1.0, 100.0,
     0.01),
    ('hot_accuracy_drop', 'min_accuracy lowered by this while hot or temperature stale', 0.0,
     1.0, 0.005),
    ('stale_after_s', 'an input silent this long gets its safe adjustment, s', 0.1, 3600.0,
     0.1),
)
_FLAGS = (
    ('charging_is_normal', 'a charging or full battery counts as normal power'),
    ('battery_required', 'a stale battery counts as critical (false: as normal)'),
    ('temperature_required', 'a stale temperature counts as hot (false: as nominal)'),
)


class GovernorNode(Node):
    """Publish the budget adjustment that battery and temperature call for."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_governor'), **kwargs)
        value = self._declare_parameters()
        self._governor = Governor(GovernorConfig(
            **{name: value[name] for name, *_ in _RULES + _FLAGS},
            plausible_temperature_c=(value['plausible_min_c'], value['plausible_max_c'])))
        self._decision = None
        self._bad_messages = 0
        group = MutuallyExclusiveCallbackGroup()  # the Governor is not thread-safe
        self.create_subscription(BatteryState, value['battery_topic'], self._battery_callback,
                                 qos_profile_sensor_data, callback_group=group)
        self.create_subscription(Temperature, value['temperature_topic'],
                                 self._temperature_callback, qos_profile_sensor_data,
                                 callback_group=group)
        self._adjustments = self.create_publisher(BudgetAdjustment, ADJUSTMENT_TOPIC,
                                                  adjustment_qos())
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(value['decision_period_s'], self._decision_callback,
                          callback_group=group)
        self.create_timer(value['diagnostics_period_s'], self._diagnostics_callback,
                          callback_group=group)
        self.get_logger().info(
            f"adjusting budgets from {value['battery_topic']} and {value['temperature_topic']} "
            f'on {self._adjustments.topic_name} (stale after '
            f'{self._governor.config.stale_after_s:g} s)')

    def _declare_parameters(self) -> Dict[str, Any]:
        """Declare every parameter; return their values by name."""
        values = {}

        def declare(name, default, descriptor):
            values[name] = self.declare_parameter(name, default, descriptor).value

        defaults = GovernorConfig()
        declare('battery_topic', '/battery_state', string_parameter(
            'sensor_msgs/BatteryState topic (percentage 0..1)', read_only=True))
        declare('temperature_topic', '/cpu_temperature', string_parameter(
            'sensor_msgs/Temperature topic (degrees C)', read_only=True))
        declare('decision_period_s', 1.0, float_parameter(
            'how often the adjustment is decided and published (the heartbeat the server '
            "watches: keep it well under the server's adjustment_timeout_s)", 0.05, 60.0, 0.05,
            read_only=True))
        declare('diagnostics_period_s', 1.0, float_parameter(
            'period of the /diagnostics status', 0.1, 60.0, 0.1, read_only=True))
        for name, text, low, high, step in _RULES:
            declare(name, float(getattr(defaults, name)),
                    float_parameter(text, low, high, step, read_only=True))
        low, high = defaults.plausible_temperature_c
        declare('plausible_min_c', low, float_parameter(
            'colder readings are ignored, C', -100.0, 0.0, 0.1, read_only=True))
        declare('plausible_max_c', high, float_parameter(
            'hotter readings are ignored, C', 50.0, 300.0, 0.1, read_only=True))
        for name, text in _FLAGS:
            declare(name, bool(getattr(defaults, name)), bool_parameter(text, read_only=True))
        return values

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # Receive time, not header.stamp: many battery drivers leave the stamp at zero.
    def _battery_callback(self, msg: BatteryState) -> None:
        try:
            self._governor.update_battery(float(msg.percentage), stamp_s=self._now_s(),
                                          power_supply_status=int(msg.power_supply_status))
        except Exception as error:  # noqa: B902 - a bad message must never stop the node
            self._bad_message('BatteryState', error)

    def _temperature_callback(self, msg: Temperature) -> None:
        try:
            self._governor.update_temperature(float(msg.temperature), stamp_s=self._now_s())
        except Exception as error:  # noqa: B902
            self._bad_message('Temperature', error)

    def _bad_message(self, kind: str, error: Exception) -> None:
        self._bad_messages += 1
        self.get_logger().warning(f'{kind} ignored: {type(error).__name__}: {error}',
                                  throttle_duration_sec=10.0)

    def _decision_callback(self) -> None:
        decision = self._governor.decide(self._now_s())
        self._decision = decision
        adjustment = decision.adjustment
        self._adjustments.publish(BudgetAdjustment(
            header=Header(stamp=self.get_clock().now().to_msg()), tenant=ALL_TENANTS,
            latency_scale=adjustment.latency_scale, accuracy_relaxation=adjustment.accuracy_drop,
            energy_scale=adjustment.energy_scale, reason=decision.reason))
        if decision.changed:  # once per change of state, not every period
            self.get_logger().info(f'{adjustment.describe()}: ' + '; '.join(decision.reasons))

    def _diagnostics_callback(self) -> None:
        self._diagnostics.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[self._status()]))

    def _status(self) -> DiagnosticStatus:
        governor, decision = self._governor, self._decision
        level, message = DiagnosticStatus.OK, 'no decision yet'
        values = {
            'soc': '' if governor.soc is None else f'{governor.soc:.3f}',
            'charging': governor.charging,
            'temperature_c': '' if governor.temperature_c is None
            else f'{governor.temperature_c:.1f}',
            'ignored_readings': ', '.join(
                f'{reason} {count}' for reason, count in governor.ignored.items()),
            'bad_messages': self._bad_messages,
        }
        if decision is not None:
            message = decision.adjustment.describe()
            values.update({
                'power_state': decision.power_state.value if decision.power_state else '',
                'thermal_state': decision.thermal_state.value if decision.thermal_state
                else '',
                'adjustment': decision.adjustment.describe(),
                'stale_inputs': ', '.join(decision.stale_inputs),
                'unheard_inputs': ', '.join(decision.unheard_inputs),
                'decision': '; '.join(decision.reasons),
            })
            if decision.stale_inputs:
                level = DiagnosticStatus.WARN
                message += f' (safe adjustment: {", ".join(decision.stale_inputs)} stale)'
            elif len(decision.unheard_inputs) == 2:
                message += ': no battery or temperature heard yet'
        return DiagnosticStatus(
            level=level, name=self.get_name(), hardware_id=self.get_fully_qualified_name(),
            message=message, values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros governor)."""
    return run_node(GovernorNode, name='delen_governor',
                    startup_errors=(ValueError, ParameterException), args=args)
