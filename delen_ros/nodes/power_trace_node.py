"""
The power trace node: a scripted sensor_msgs/BatteryState and Temperature for the demo.

The shape (battery 90 % -> 10 %, 45 -> 80 C over ``duration_s``) comes from
``delen_ros.governor.power_trace``; this node only publishes it at ``rate_hz``.
"""


from delen_ros.governor.power_trace import PowerTrace
from delen_ros.nodes.descriptors import bool_parameter, float_parameter, string_parameter
from delen_ros.nodes.spin import run_node
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import BatteryState, Temperature
from std_msgs.msg import Header

__all__ = ['PowerTraceNode', 'main']

_NAN = float('nan')


class PowerTraceNode(Node):
    """Publish a scripted battery drain and heat-up, as a battery driver and sensor would."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_power_trace'), **kwargs)
        declare = self.declare_parameter
        declare('duration_s', 60.0, float_parameter(
            'seconds from the start values to the end values', 1.0, 86400.0, 0.1,
            read_only=True))
        declare('rate_hz', 5.0, float_parameter('messages per second on each topic',
                                                0.1, 100.0, 0.1, read_only=True))
        declare('start_soc', 0.9, float_parameter('battery charge at the start, 0..1',
                                                  0.0, 1.0, 0.01, read_only=True))
        declare('end_soc', 0.1, float_parameter('battery charge at the end, 0..1',
                                                0.0, 1.0, 0.01, read_only=True))
        declare('start_c', 45.0, float_parameter(
            'temperature at the start, degrees C', -40.0, 150.0, 0.1, read_only=True))
        declare('end_c', 80.0, float_parameter(
            'temperature at the end, degrees C', -40.0, 150.0, 0.1, read_only=True))
        declare('loop', False, bool_parameter(
            'start the trace again after duration_s (else hold the end values)',
            read_only=True))
        declare('battery_topic', '/battery_state', string_parameter(
            'sensor_msgs/BatteryState topic', read_only=True))
        declare('temperature_topic', '/cpu_temperature', string_parameter(
            'sensor_msgs/Temperature topic', read_only=True))
        declare('frame_id', 'base_link', string_parameter(
            'header.frame_id of both messages', read_only=True))
        value = self._value
        self._trace = PowerTrace(
            duration_s=value('duration_s'), soc_start=value('start_soc'),
            soc_end=value('end_soc'), temperature_start_c=value('start_c'),
            temperature_end_c=value('end_c'), loop=value('loop'))
        self._frame_id = str(value('frame_id'))
        self._battery = self.create_publisher(BatteryState, value('battery_topic'), 10)
        self._temperature = self.create_publisher(Temperature, value('temperature_topic'), 10)
        self._start_ns = self.get_clock().now().nanoseconds
        self.create_timer(1.0 / value('rate_hz'), self._timer_callback)
        trace = self._trace
        self.get_logger().info(
            f'power trace on {self._battery.topic_name} and {self._temperature.topic_name}: '
            f'battery {100 * trace.soc_start:.0f} -> {100 * trace.soc_end:.0f} %, '
            f'{trace.temperature_start_c:g} -> {trace.temperature_end_c:g} C over '
            f'{trace.duration_s:g} s{" (looping)" if trace.loop else ""}')

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _timer_callback(self) -> None:
        now = self.get_clock().now()
        sample = self._trace.sample((now.nanoseconds - self._start_ns) * 1e-9)
        header = Header(stamp=now.to_msg(), frame_id=self._frame_id)
        self._battery.publish(BatteryState(
            header=header, voltage=sample.voltage_v, temperature=_NAN, current=_NAN,
            charge=_NAN, capacity=_NAN, design_capacity=_NAN, percentage=sample.soc,
            power_supply_status=BatteryState.POWER_SUPPLY_STATUS_DISCHARGING,
            power_supply_health=BatteryState.POWER_SUPPLY_HEALTH_GOOD,
            power_supply_technology=BatteryState.POWER_SUPPLY_TECHNOLOGY_LION, present=True))
        self._temperature.publish(Temperature(header=header, temperature=sample.temperature_c,
                                              variance=0.0))


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros power_trace)."""
    return run_node(PowerTraceNode, name='delen_power_trace',
                    startup_errors=(ValueError, ParameterException), args=args)
