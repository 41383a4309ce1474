"""
The governor node: battery and temperature readings -> the serving node's per-tenant budgets.

A thin layer over ``delen_ros.governor`` (the rules, hysteresis and stale fallback live
there, see docs/governor.md). The node reads the tenants and their base budgets from the
server's ``get_parameters`` service, and sets ``<tenant>.latency_ms``, ``.min_accuracy`` and
``.energy_mj`` through its ``set_parameters`` service (what rqt does), only for values that
differ from what the server holds. Refused sets are reported in /diagnostics with the
server's reason and not repeated until the wanted value changes; an unreachable server is
retried. Base budgets are read once, and again whenever the server comes back after it went
away (a restarted server gets the governed values again); with ``resync_period_s`` > 0 also
that often, and a value that is not the one the governor set (changed in rqt) becomes the
new base. Decisions are taken every ``decision_period_s``; /diagnostics goes out every
``diagnostics_period_s`` (1 Hz).
"""

from dataclasses import dataclass, replace
import math
import threading
from typing import Dict, List, Mapping, Optional, Tuple

from delen_ros.governor import Adjustment, Budgets, Governor, GovernorConfig
from delen_ros.nodes.descriptors import (bool_parameter, float_parameter,
                                         string_array_parameter, string_parameter)
from delen_ros.nodes.spin import run_node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState, Temperature
from std_msgs.msg import Header

__all__ = ['BUDGET_FIELDS', 'GovernorNode', 'ServerRange', 'main', 'server_values',
           'to_budgets']

BUDGET_FIELDS = ('latency_ms', 'min_accuracy', 'energy_mj')
# Stand-in for a latency bound of 0 (the server takes the offered deadline QoS instead):
# the governor's rules need a positive number, and the node never writes it back.
_QOS_LATENCY_PLACEHOLDER_MS = 1.0
_REFUSALS_KEPT = 10
# A deadline this long (or DDS 'infinite') means the publisher offers none.
_NO_DEADLINE_NS = 10 ** 15


# -- ROS-free helpers: the server's parameter conventions <-> governor Budgets ---------------

def to_budgets(values: Mapping[str, float]) -> Tuple[Budgets, bool]:
    """
    Return Budgets from a tenant's server values, and whether its latency is from QoS.

    The server's conventions: latency_ms 0 is the deadline QoS its publishers offer (the
    governor leaves it alone), energy_mj 0 no bound (infinite), min_accuracy 0 no bound.
    """
    latency = float(values['latency_ms'])
    energy = float(values['energy_mj'])
    from_qos = not latency > 0
    return Budgets(latency_ms=_QOS_LATENCY_PLACEHOLDER_MS if from_qos else latency,
                   min_accuracy=float(values['min_accuracy']),
                   energy_mj=energy if energy > 0 else math.inf), from_qos


@dataclass(frozen=True)
class ServerRange:
    """A parameter's floating-point range as the server describes it (step 0: any)."""

    low: float
    high: float
    step: float = 0.0

    def snap(self, value: float) -> float:
        """Clamp to the range and round to a step; a positive value stays positive."""
        snapped = min(max(value, self.low), self.high)
        if self.step > 0:
            snapped = self.low + round((snapped - self.low) / self.step) * self.step
            if snapped > self.high:
                snapped -= self.step
            if value > 0 and snapped <= 0:  # a bound must not become 'no bound'
                snapped = self.low + self.step * max(1, math.ceil(-self.low / self.step + 1e-9))
        return round(snapped, 9)


def server_values(budgets: Budgets, latency_from_qos: bool,
                  ranges: Mapping[str, ServerRange]) -> Dict[str, float]:
    """Return the server parameter values of budgets (field -> value), within its ranges."""
    values = {'min_accuracy': budgets.min_accuracy,
              'energy_mj': 0.0 if math.isinf(budgets.energy_mj) else budgets.energy_mj}
    if not latency_from_qos:
        values['latency_ms'] = budgets.latency_ms
    result = {}
    for field, value in values.items():
        bounds = ranges.get(field)
        result[field] = bounds.snap(value) if bounds is not None and value != 0 else value
    return result


def _same(a: Optional[float], b: Optional[float]) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# -- the node --------------------------------------------------------------------------------

@dataclass
class _Request:
    kind: str
    future: object
    sent_s: float


class GovernorNode(Node):
    """Adapt the serving node's per-tenant budgets to battery and temperature."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_governor'), **kwargs)
        self._declare_parameters()
        value = self._value
        self._config = self._build_config()
        self._governor = Governor(self._config)
        self._safe_from_qos = {tenant: from_qos for tenant, (_, from_qos)
                               in self._safe_budgets.items()}
        server = str(value('server_node')).rstrip('/') or '/delen_server'
        self._server_name = server
        self._managed = [str(t) for t in value('tenants')]
        self._period_s = float(value('decision_period_s'))
        self._timeout_s = float(value('request_timeout_s'))
        self._resync_s = float(value('resync_period_s'))

        self._lock = threading.RLock()
        self._started_s = self._now_s()
        # What the server holds and what the governor wants, by full parameter name.
        self._tenants: List[str] = []
        self._base: Dict[str, Budgets] = {}
        self._base_from_qos: Dict[str, bool] = {}
        self._ranges: Dict[str, ServerRange] = {}
        self._server_has: Dict[str, float] = {}
        self._desired: Dict[str, float] = {}
        self._input_topics: Dict[str, str] = {}
        self._offered: Dict[str, Optional[float]] = {}
        self._refused: Dict[str, Tuple[float, str]] = {}
        self._refusals: List[str] = []
        self._last_read_s: Optional[float] = None
        self._reread = False  # the server was lost: read its budgets again when it is back
        self._request: Optional[_Request] = None
        self._server_state = 'not read yet'
        self._decision = None
        self._sets_sent = 0
        self._refused_sets = 0
        self._bad_messages = 0

        group = MutuallyExclusiveCallbackGroup()  # the Governor is not thread-safe
        self.create_subscription(BatteryState, value('battery_topic'), self._battery_callback,
                                 qos_profile_sensor_data, callback_group=group)
        self.create_subscription(Temperature, value('temperature_topic'),
                                 self._temperature_callback, qos_profile_sensor_data,
                                 callback_group=group)
        clients = MutuallyExclusiveCallbackGroup()
        self._get_client = self.create_client(GetParameters, f'{server}/get_parameters',
                                              callback_group=clients)
        self._describe_client = self.create_client(
            DescribeParameters, f'{server}/describe_parameters', callback_group=clients)
        self._set_client = self.create_client(SetParameters, f'{server}/set_parameters',
                                              callback_group=clients)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(self._period_s, self._timer_callback, callback_group=group)
        self.create_timer(float(value('diagnostics_period_s')), self._diagnostics_callback,
                          callback_group=group)
        self.get_logger().info(
            f'governing the budgets of {server} from {value("battery_topic")} and '
            f'{value("temperature_topic")} (stale after {self._config.stale_after_s:g} s)')

    # -- parameters --------------------------------------------------------------------------

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _declare_parameters(self) -> None:
        declare = self.declare_parameter
        defaults = GovernorConfig()
        declare('battery_topic', '/battery_state', string_parameter(
            'sensor_msgs/BatteryState topic (percentage 0..1)', read_only=True))
        declare('temperature_topic', '/cpu_temperature', string_parameter(
            'sensor_msgs/Temperature topic (degrees C)', read_only=True))
        declare('server_node', '/delen_server', string_parameter(
            'the serving node whose <tenant>.* budgets are governed', read_only=True))
        declare('tenants', [''], string_array_parameter(
            "tenants to govern; [''] (default): every tenant of the server", read_only=True))
        declare('decision_period_s', 1.0, float_parameter(
            'how often budgets are decided (and sent to the server when they change)', 0.05,
            60.0, 0.05, read_only=True))
        declare('diagnostics_period_s', 1.0, float_parameter(
            'period of the /diagnostics status', 0.1, 60.0, 0.1, read_only=True))
        declare('request_timeout_s', 5.0, float_parameter(
            'a server call without answer after this long is retried', 0.1, 120.0, 0.1,
            read_only=True))
        declare('resync_period_s', 0.0, float_parameter(
            "re-read the server's budgets this often (0: once, and when the server comes "
            'back); values changed by others become the new base', 0.0, 3600.0, 0.1,
            read_only=True))
        ratio = 'state of charge (0..1)'
        for name, text, low, high, step in (
                ('saving_below_soc', f'saving power below this {ratio}', 0.01, 1.0, 0.01),
                ('critical_below_soc', f'critical power below this {ratio}', 0.01, 1.0, 0.01),
                ('soc_hysteresis', 'a higher power state needs threshold + this', 0.0, 1.0,
                 0.01),
                ('energy_scale_normal', 'energy budget factor, normal power', 0.01, 10.0, 0.01),
                ('energy_scale_saving', 'energy budget factor, saving power', 0.01, 10.0, 0.01),
                ('energy_scale_critical', 'energy budget factor, critical power', 0.01, 10.0,
                 0.01),
                ('hot_above_c', 'hot at or above this temperature, C', -39.0, 149.0, 0.1),
                ('temperature_hysteresis_c', 'hot ends below hot_above_c minus this, C', 0.0,
                 100.0, 0.1),
                ('hot_latency_scale', 'latency bound factor while hot', 1.0, 10.0, 0.01),
                ('hot_accuracy_drop', 'min_accuracy lowered by this while hot', 0.0, 1.0,
                 0.005),
                ('plausible_min_c', 'colder readings are ignored, C', -100.0, 0.0, 0.1),
                ('plausible_max_c', 'hotter readings are ignored, C', 50.0, 300.0, 0.1),
                ('stale_after_s', 'an input silent this long puts the governor in fallback, s',
                 0.1, 3600.0, 0.1),
                ('fallback_energy_scale', 'energy budget factor in fallback', 0.01, 10.0, 0.01),
                ('fallback_latency_scale', 'latency bound factor in fallback', 0.01, 10.0,
                 0.01),
                ('fallback_accuracy_drop', 'min_accuracy lowered by this in fallback', 0.0,
                 1.0, 0.005)):
            if name.startswith('fallback_'):
                default = getattr(defaults.fallback_adjustment, name[len('fallback_'):])
            elif name.startswith('plausible_'):
                default = defaults.plausible_temperature_c[0 if name.endswith('min_c') else 1]
            else:
                default = getattr(defaults, name)
            declare(name, float(default), float_parameter(text, low, high, step,
                                                          read_only=True))
        for name, text in (
                ('charging_is_normal', 'a charging or full battery counts as normal power'),
                ('battery_required', 'a stale battery input causes the fallback (else: normal)'),
                ('temperature_required',
                 'a stale temperature input causes the fallback (else: nominal)')):
            declare(name, bool(getattr(defaults, name)), bool_parameter(text, read_only=True))
        declare('safe_tenants', [''], string_array_parameter(
            'tenants with fixed budgets in fallback, given as safe.<tenant>.latency_ms, '
            '.min_accuracy, .energy_mj (server conventions: 0 = QoS deadline / no bound)',
            read_only=True))
        self._safe_budgets: Dict[str, Tuple[Budgets, bool]] = {}
        for tenant in [str(t) for t in self._value('safe_tenants') if t]:
            values = {}
            for field, text, high, step in (
                    ('latency_ms', 'latency bound in fallback, ms (0: the offered deadline)',
                     1000.0, 0.5),
                    ('min_accuracy', 'accuracy target in fallback (0: none)', 1.0, 0.005),
                    ('energy_mj', 'energy bound in fallback, mJ (0: none)', 10000.0, 0.1)):
                name = f'safe.{tenant}.{field}'
                declare(name, 0.0, float_parameter(text, 0.0, high, step, read_only=True))
                values[field] = self._value(name)
            self._safe_budgets[tenant] = to_budgets(values)

    def _build_config(self) -> GovernorConfig:
        value = self._value
        fields = ('saving_below_soc', 'critical_below_soc', 'soc_hysteresis',
                  'energy_scale_normal', 'energy_scale_saving', 'energy_scale_critical',
                  'charging_is_normal', 'hot_above_c', 'temperature_hysteresis_c',
                  'hot_latency_scale', 'hot_accuracy_drop', 'stale_after_s',
                  'battery_required', 'temperature_required')
        return GovernorConfig(
            **{name: value(name) for name in fields},
            plausible_temperature_c=(value('plausible_min_c'), value('plausible_max_c')),
            fallback=Adjustment(energy_scale=value('fallback_energy_scale'),
                                latency_scale=value('fallback_latency_scale'),
                                accuracy_drop=value('fallback_accuracy_drop')),
            safe_budgets={t: budgets for t, (budgets, _) in self._safe_budgets.items()})

    # -- inputs ------------------------------------------------------------------------------

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _battery_callback(self, msg: BatteryState) -> None:
        try:
            with self._lock:
                self._governor.update_battery(
                    float(msg.percentage), stamp_s=self._now_s(),
                    power_supply_status=int(msg.power_supply_status))
        except Exception as error:  # noqa: B902 - a bad message must never stop the node
            self._bad_message('BatteryState', error)

    def _temperature_callback(self, msg: Temperature) -> None:
        try:
            with self._lock:
                self._governor.update_temperature(float(msg.temperature),
                                                  stamp_s=self._now_s())
        except Exception as error:  # noqa: B902
            self._bad_message('Temperature', error)

    def _bad_message(self, kind: str, error: Exception) -> None:
        self._bad_messages += 1
        self.get_logger().warning(f'{kind} ignored: {type(error).__name__}: {error}',
                                  throttle_duration_sec=10.0)

    # -- the decision loop -------------------------------------------------------------------

    def _timer_callback(self) -> None:
        try:
            with self._lock:
                now = self._now_s()
                self._expire_request(now)
                if self._base and not self._reread:
                    self._ready(self._set_client)  # notice a server that went away
                if self._base and self._inputs_ready(now):
                    self._decide(now)
                if self._request is None:
                    self._next_request(now)
        except Exception as error:  # noqa: B902 - keep governing after a surprise
            self.get_logger().error(f'governor step failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=10.0)

    def _diagnostics_callback(self) -> None:
        try:
            with self._lock:
                status = self._status(self._now_s())
        except Exception as error:  # noqa: B902 - a report must not stop the node
            self.get_logger().error(f'diagnostics failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=10.0)
            return
        self._diagnostics.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def _inputs_ready(self, now: float) -> bool:
        """After start, wait up to stale_after_s for the first readings before deciding."""
        governor, config = self._governor, self._config
        seen = ((governor.battery_stamp_s is not None or not config.battery_required)
                and (governor.temperature_stamp_s is not None
                     or not config.temperature_required))
        return seen or now - self._started_s >= config.stale_after_s

    def _decide(self, now: float) -> None:
        # A latency bound of 0 on the server is the deadline its camera offers; the rules
        # scale that offered deadline, and the node writes it only while it is scaled.
        base = {}
        for tenant, budgets in self._base.items():
            offered = self._offered_deadline_ms(tenant) if self._base_from_qos[tenant] \
                else None
            self._offered[tenant] = offered
            base[tenant] = budgets if offered is None else replace(budgets, latency_ms=offered)
        decision = self._governor.decide(now, base)
        self._decision = decision
        if decision.changed:
            self.get_logger().info('budgets: ' + '; '.join(decision.reasons))
        desired = {}
        for tenant, budgets in decision.budgets.items():
            if decision.fallback and tenant in self._safe_from_qos:
                from_qos = self._safe_from_qos[tenant]
            else:
                from_qos = self._base_from_qos[tenant] and (
                    self._offered[tenant] is None
                    or math.isclose(decision.adjustment.latency_scale, 1.0))
            ranges = {field: self._ranges[f'{tenant}.{field}'] for field in BUDGET_FIELDS
                      if f'{tenant}.{field}' in self._ranges}
            values = server_values(budgets, from_qos, ranges)
            if from_qos:
                values['latency_ms'] = 0.0
            for field, number in values.items():
                desired[f'{tenant}.{field}'] = number
        self._desired = desired
        # A refusal stands until the governor wants another value for that parameter.
        self._refused = {name: refusal for name, refusal in self._refused.items()
                         if _same(desired.get(name), refusal[0])}

    def _server_topic(self, topic: str) -> str:
        """Resolve a topic name of the server's parameters in the server's namespace."""
        if not topic or topic.startswith('/'):
            return topic
        server = self._server_name
        if not server.startswith('/'):
            server = self.get_namespace().rstrip('/') + '/' + server
        namespace = server.rpartition('/')[0]
        return f'{namespace}/{topic}'

    def _offered_deadline_ms(self, tenant: str) -> Optional[float]:
        """Return the tightest deadline QoS offered on a tenant's input topic (None: none)."""
        topic = self._input_topics.get(tenant)
        if not topic:
            return None
        try:
            infos = self.get_publishers_info_by_topic(topic)
        except Exception:  # noqa: B902 - graph queries fail during shutdown
            return None
        offered = [info.qos_profile.deadline.nanoseconds for info in infos]
        offered = [ns for ns in offered if 0 < ns < _NO_DEADLINE_NS]
        return min(offered) / 1e6 if offered else None

    def _pending_sets(self) -> Dict[str, float]:
        pending = {}
        for name, number in self._desired.items():
            if _same(self._server_has.get(name), number):
                continue
            refused = self._refused.get(name)
            if refused is not None and _same(refused[0], number):
                continue  # refused before: not again until the wanted value changes
            pending[name] = number
        return pending

    def _next_request(self, now: float) -> None:
        if self._last_read_s is None or self._reread or (
                self._resync_s > 0 and now - self._last_read_s >= self._resync_s):
            if self._ready(self._get_client):
                self._send('tenants', self._get_client, GetParameters.Request(names=['tenants']),
                           now)
            return
        pending = self._pending_sets()
        if pending and self._ready(self._set_client):
            request = SetParameters.Request(parameters=[
                Parameter(name=name, value=ParameterValue(
                    type=ParameterType.PARAMETER_DOUBLE, double_value=float(number)))
                for name, number in sorted(pending.items())])
            self._sets_sent += 1
            self._send('set', self._set_client, request, now, names=sorted(pending))

    def _ready(self, client) -> bool:
        if client.service_is_ready():
            return True
        self._server_state = f'unreachable: no {client.srv_name} service'
        self._reread = True  # it may come back restarted, with its configured budgets
        self.get_logger().warning(f'waiting for {client.srv_name}', throttle_duration_sec=10.0)
        return False

    def _send(self, kind: str, client, request, now: float, **context) -> None:
        future = client.call_async(request)
        self._request = _Request(kind=kind, future=future, sent_s=now)
        future.add_done_callback(
            lambda done: self._response_callback(kind, done, request, context))

    def _expire_request(self, now: float) -> None:
        request = self._request
        if request is None or now - request.sent_s < self._timeout_s:
            return
        for client in (self._get_client, self._describe_client, self._set_client):
            remove = getattr(client, 'remove_pending_request', None)
            if remove is not None:
                try:
                    remove(request.future)
                except Exception:  # noqa: B902 - not pending at this client
                    pass
        request.future.cancel()
        self._request = None
        self._reread = True
        self._server_state = f'unreachable: no answer to {request.kind} in {self._timeout_s:g} s'
        self.get_logger().warning(f'{self._server_name}: {self._server_state}; retrying',
                                  throttle_duration_sec=10.0)

    # -- server answers ----------------------------------------------------------------------

    def _response_callback(self, kind: str, future, request, context) -> None:
        with self._lock:
            if self._request is None or self._request.future is not future:
                return  # timed out and forgotten
            self._request = None
            try:
                response = future.result()
                if response is None:
                    raise RuntimeError('no response')
                now = self._now_s()
                if kind == 'tenants':
                    self._tenants_answer(response, now)
                elif kind == 'values':
                    self._values_answer(response, context['names'], now)
                elif kind == 'ranges':
                    self._ranges_answer(response, context['names'])
                else:
                    self._set_answer(response, request, context['names'])
            except Exception as error:  # noqa: B902 - a bad answer must not stop the node
                self._server_state = f'bad answer to {kind}: {type(error).__name__}: {error}'
                self.get_logger().warning(f'{self._server_name}: {self._server_state}',
                                          throttle_duration_sec=10.0)

    def _tenants_answer(self, response, now: float) -> None:
        value = response.values[0] if response.values else None
        if value is None or value.type != ParameterType.PARAMETER_STRING_ARRAY:
            raise ValueError(f'{self._server_name} has no string array parameter tenants')
        tenants = [str(t) for t in value.string_array_value]
        managed = [t for t in self._managed if t]
        if managed:
            unknown = sorted(set(managed) - set(tenants))
            if unknown:
                self.get_logger().warning(f'tenants {unknown} are not served by '
                                          f'{self._server_name}', throttle_duration_sec=60.0)
            tenants = [t for t in tenants if t in managed]
        self._tenants = tenants
        names = [f'{t}.{field}' for t in tenants for field in BUDGET_FIELDS]
        names += [f'{t}.input_topic' for t in tenants]
        self._send('values', self._get_client, GetParameters.Request(names=names), now,
                   names=names)

    def _values_answer(self, response, names: List[str], now: float) -> None:
        if len(response.values) != len(names):
            raise ValueError(f'asked for {len(names)} values, got {len(response.values)}')
        read = {}
        for name, value in zip(names, response.values):
            if name.endswith('.input_topic'):
                self._input_topics[name[:-len('.input_topic')]] = self._server_topic(
                    value.string_value if value.type == ParameterType.PARAMETER_STRING
                    else '')
            elif value.type == ParameterType.PARAMETER_DOUBLE:
                read[name] = float(value.double_value)
            elif value.type == ParameterType.PARAMETER_INTEGER:
                read[name] = float(value.integer_value)
            else:
                raise ValueError(f'{self._server_name} has no number parameter {name}')
        base, from_qos = {}, {}
        for tenant in self._tenants:
            values = {}
            for field in BUDGET_FIELDS:
                name = f'{tenant}.{field}'
                ours = self._server_has.get(name)
                if ours is not None and _same(ours, read[name]) and tenant in self._base:
                    # The value the governor set: the base stays what it was.
                    values[field] = self._base_value(tenant, field)
                else:
                    values[field] = read[name]  # first read, or changed by someone else
                    if ours is not None:
                        self.get_logger().info(f'{name} is {read[name]:g} on the server (not '
                                               f'the {ours:g} set here): new base')
            base[tenant], from_qos[tenant] = to_budgets(values)
        first = not self._base
        self._base, self._base_from_qos = base, from_qos
        self._server_has = read
        self._last_read_s = now
        self._reread = False
        self._server_state = 'connected'
        if first:
            self.get_logger().info(f'base budgets of {self._server_name}: ' + '; '.join(
                f'{t} latency {v["latency_ms"]:g} ms, min_accuracy {v["min_accuracy"]:g}, '
                f'energy {v["energy_mj"]:g} mJ'
                for t, v in ((t, {f: read[t + '.' + f] for f in BUDGET_FIELDS})
                             for t in self._tenants)))
        missing = [name for name in names
                   if name not in self._ranges and not name.endswith('.input_topic')]
        if missing:
            self._send('ranges', self._describe_client,
                       DescribeParameters.Request(names=missing), now, names=missing)

    def _base_value(self, tenant: str, field: str) -> float:
        budgets = self._base[tenant]
        if field == 'latency_ms':
            return 0.0 if self._base_from_qos[tenant] else budgets.latency_ms
        if field == 'energy_mj':
            return 0.0 if math.isinf(budgets.energy_mj) else budgets.energy_mj
        return budgets.min_accuracy

    def _ranges_answer(self, response, names: List[str]) -> None:
        for name, descriptor in zip(names, response.descriptors):
            if descriptor.floating_point_range:
                bounds = descriptor.floating_point_range[0]
                self._ranges[name] = ServerRange(
                    low=min(bounds.from_value, bounds.to_value),
                    high=max(bounds.from_value, bounds.to_value), step=bounds.step)
            else:
                self._ranges[name] = ServerRange(low=-math.inf, high=math.inf)

    def _set_answer(self, response, request, names: List[str]) -> None:
        sent = {p.name: p.value.double_value for p in request.parameters}
        for name, result in zip(names, response.results):
            if result.successful:
                self._server_has[name] = sent[name]
                self._refused.pop(name, None)
            else:
                reason = result.reason or 'no reason given'
                self._refused[name] = (sent[name], reason)
                self._refused_sets += 1
                text = f'{name} = {sent[name]:g} refused: {reason}'
                self._refusals = (self._refusals + [text])[-_REFUSALS_KEPT:]
                self.get_logger().warning(f'{self._server_name}: {text}')

    # -- diagnostics -------------------------------------------------------------------------

    def _status(self, now: float) -> DiagnosticStatus:
        governor, decision = self._governor, self._decision
        values = {
            'server': f'{self._server_name}: {self._server_state}',
            'tenants': ', '.join(self._tenants),
            'soc': '' if governor.soc is None else f'{governor.soc:.3f}',
            'charging': governor.charging,
            'temperature_c': '' if governor.temperature_c is None
            else f'{governor.temperature_c:.1f}',
            'power_state': '', 'thermal_state': '', 'fallback': '', 'stale_inputs': '',
            'decision': '', 'ignored_readings': ', '.join(
                f'{reason} {count}' for reason, count in governor.ignored.items()),
            'bad_messages': self._bad_messages,
            'pending_sets': ', '.join(f'{n}={v:g}' for n, v in sorted(
                self._pending_sets().items())),
            'refused': ' | '.join(f'{n} = {v:g} refused: {r}' for n, (v, r)
                                  in sorted(self._refused.items())),
            'recent_refusals': ' | '.join(self._refusals),
            'set_requests': self._sets_sent,
            'refused_sets': self._refused_sets,
        }
        level, problems = DiagnosticStatus.OK, []
        if decision is None:
            message = ('waiting for the server' if not self._base else
                       f'waiting for inputs (at most {self._config.stale_after_s:g} s)')
        else:
            values.update({
                'power_state': decision.power_state.value if decision.power_state else '',
                'thermal_state': decision.thermal_state.value if decision.thermal_state
                else '',
                'fallback': decision.fallback,
                'stale_inputs': ', '.join(decision.stale_inputs),
                'decision': '; '.join(decision.reasons),
            })
            for tenant in sorted(decision.budgets):
                text = ', '.join(
                    f'{field} {self._desired[f"{tenant}.{field}"]:g}' for field in BUDGET_FIELDS
                    if f'{tenant}.{field}' in self._desired)
                if self._offered.get(tenant) is not None:
                    text += f' (offered deadline {self._offered[tenant]:g} ms)'
                values[f'budgets.{tenant}'] = text
            if decision.fallback:
                level = DiagnosticStatus.WARN
                stale = [r for r in decision.reasons if 'stale' in r or 'no message' in r]
                message = 'fallback to safe budgets: ' + '; '.join(stale)
            else:
                power = decision.power_state.value if decision.power_state else 'unknown'
                thermal = decision.thermal_state.value if decision.thermal_state else 'unknown'
                message = f'power {power}, thermal {thermal}'
        if self._server_state != 'connected':
            level = DiagnosticStatus.WARN
            problems.append(f'server {self._server_state}')
        if self._refused:
            level = DiagnosticStatus.WARN
            problems.append(f'{len(self._refused)} budget values refused by the server')
        return DiagnosticStatus(
            level=level, name=self.get_name(), hardware_id=self.get_fully_qualified_name(),
            message='; '.join([message] + problems),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros governor)."""
    return run_node(GovernorNode, name='delen_governor',
                    startup_errors=(ValueError, ParameterException), args=args)
