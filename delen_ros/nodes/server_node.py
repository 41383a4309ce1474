"""
The serving node: images in, InferenceResults out, a family of models shared by the tenants.

A thin layer over ``delen_ros.runtime.InferenceServer``: parameters, QoS, callbacks. The
runtime's worker takes the images itself (``ImageIntake``: the image subscriptions are not
the executor's), decodes, serves and publishes on one thread, and between frames makes the
status reports; parameters and timers stay on the executor, so inference never blocks them.
"""

import collections
import functools
import threading
import time
from typing import Dict, List, Optional

from builtin_interfaces.msg import Time
from delen_ros.engine import CheckpointError
from delen_ros.engine.profiling import ProfileError
from delen_ros.imaging import ImageFormatError
from delen_ros.msg import InferenceResult, TenantStatus
from delen_ros.nodes.budget_adjustments import BudgetAdjustments
from delen_ros.nodes.descriptors import (bool_parameter, float_parameter, int_parameter,
                                         string_array_parameter, string_parameter)
from delen_ros.nodes.frame_time import FrameClock
from delen_ros.nodes.image_input import image_input
from delen_ros.nodes.image_intake import ImageIntake
from delen_ros.nodes.parameters import (check_tenant, check_tenant_name, check_tenant_names,
                                        SERVER_PARAMETERS, tenant_defaults, tenant_parameter,
                                        TENANT_PARAMETERS, unmeetable_bounds)
from delen_ros.nodes.server_services import ServerServices, undeclare_parameter
from delen_ros.nodes.spin import run_node
from delen_ros.nodes.tenant_values import tenant_values
from delen_ros.runtime import available_policies, InferenceServer, InputError
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
try:  # added with the camera node; the server works without ground truth
    from delen_ros.msg import GroundTruth
except ImportError:  # pragma: no cover - older builds
    GroundTruth = None

__all__ = ['ServerNode', 'main']

_STAMP_WARNINGS = {
    'zero': 'images with a zero stamp are taken as stamped on arrival',
    'future': 'image stamps lie in the future (clock skew between hosts?); clamped to now',
    'stale': 'image stamps are already older than the latency bound on arrival; answered '
             'late (clock skew, or a slow link?)',
}
# A deadline this long (or DDS 'infinite') means the publisher offers none.
_NO_DEADLINE_NS = 10 ** 15


def descriptor(spec) -> ParameterDescriptor:
    """Describe a parameter of the table for rqt: description, read-only flag, range with step."""
    if spec.kind == 'double':
        return float_parameter(spec.description, spec.minimum, spec.maximum, spec.step or 0.0,
                               read_only=spec.read_only)
    if spec.kind == 'integer':
        return int_parameter(spec.description, int(spec.minimum), int(spec.maximum),
                             int(spec.step or 1), read_only=spec.read_only)
    if spec.kind == 'string_array':
        return string_array_parameter(spec.description, read_only=spec.read_only)
    if spec.kind == 'bool':
        return bool_parameter(spec.description, read_only=spec.read_only)
    return string_parameter(spec.description, choices=spec.choices, read_only=spec.read_only)


class _TenantIo:
    """One tenant's topics and QoS event counts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: Dict[str, object] = {}
        self.qos_deadline_ms: Optional[float] = None
        self.publisher_gids: tuple = ()
        self.deadline_missed = 0
        self.incompatible_qos = 0
        self.last_rejection = ''
        self.frame_clock = FrameClock()
        self.stamp_warned: set = set()
        self.unmeetable: tuple = ()
        self.frames_lost = 0
        self.frames_missed = 0
        self.reliable = False
        self.image_subscription = None
        self.callback_group = None
        self.result_publisher = None
        self.status_publisher = None
        self.subscriptions: list = []
        self.input = None  # an image_input.ImageInput: message type, topic, decode function
        self.model_spec = None  # the input its decoder makes (its model's InputSpec)


class ServingCore:
    """
    What the server does, on the node it is given: the model family for every tenant.

    Shared by the plain node (ServerNode: configured and active from construction) and the
    managed one (ManagedServerNode: each step a lifecycle transition). ``configure`` loads the
    model and declares the tenants; ``activate`` opens their topics, the services and the
    timers and starts serving; ``deactivate`` closes them and keeps the configuration;
    ``cleanup`` undeclares the tenants and frees the model.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        for spec in SERVER_PARAMETERS:
            self._declare(spec.name, spec.default, spec)
        self._server: Optional[InferenceServer] = None
        self._intake: Optional[ImageIntake] = None
        self._budgets: Optional[BudgetAdjustments] = None
        self._tenants: Dict[str, _TenantIo] = {}
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._server_services: Optional[ServerServices] = None
        self._diagnostics = None
        self._timers: list = []
        self._report_lock = threading.Lock()
        self._status_due: collections.deque = collections.deque()  # tenants left this cycle
        self._cycle_open = False
        self._cycle_due_s = 0.0  # time.monotonic() when the next report cycle is due
        self._status_period_s = 1.0
        self._max_pixels = self._value('max_image_pixels')
        self._fallback_latency_ms = self._value('fallback_latency_ms')
        self._policies = available_policies()
        node.add_on_set_parameters_callback(self._parameters_callback)

    @property
    def configured(self) -> bool:
        """Return True between configure and cleanup (the model is loaded)."""
        return self._server is not None

    @property
    def active(self) -> bool:
        """Return True between activate and deactivate (serving)."""
        return self._server_services is not None

    def configure(self) -> None:
        """Load the model and declare the tenants (CheckpointError, ProfileError, ValueError)."""
        value = self._value
        self._server = InferenceServer.from_checkpoint(
            path=value('model') or None, profile=value('profile') or None,
            models=_entries(value('models')),
            platform=value('platform') or None, threads=value('threads'),
            clock=time.monotonic, on_result=self._result_callback,
            max_batch=value('max_batch'), cpu_priority=value('cpu_priority'),
            workers=value('workers'), warm_up=value('warm_up'),
            on_event=self._runtime_event_callback)
        self._intake = ImageIntake(self.node)
        self._server.attach_source(self._intake)
        self._budgets = BudgetAdjustments(self.node, self._server,
                                          timeout_parameter='adjustment_timeout_s')
        try:
            for name in check_tenant_names(value('tenants')):
                self._add_tenant(name)
            self._check_models_used()
        except Exception:
            self.cleanup()
            raise
        for info in self._server.models():
            self.node.get_logger().info(f'model {info.describe()}')
        report = self._server.warm_up() if value('warm_up') else None
        if report:
            self.node.get_logger().info(report)

    def _check_models_used(self) -> None:
        """Refuse a model whose input or classes differ from the first unless a tenant pins it."""
        first = self._server.served_model()
        pinned = {str(io.values['model']) for io in self._tenants.values()}
        for info in self._server.models():
            served = self._server.served_model(info.name)
            difference = served.difference(first)
            if difference and info.name not in pinned:
                raise ValueError(
                    f'model {info.path}: {difference} than the first model ({first.name}); '
                    f'only tenants that pin it (<tenant>.model: {info.name}) can use it')

    def activate(self) -> None:
        """Open every tenant's topics, the services and the timers; start serving."""
        node = self.node
        for io in self._tenants.values():
            self._open_tenant(io)
        self._server_services = ServerServices(self, callback_group=self._timer_group)
        self._diagnostics = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Steady timers: with use_sim_time and no (or a slow) /clock, reports keep coming.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._status_due.clear()
        self._cycle_open = False
        self._cycle_due_s = time.monotonic()
        self._status_period_s = self._value('status_period_s')
        self._server.set_idle_task(self._idle_report)
        self._timers = [
            node.create_timer(self._status_period_s, self._status_callback,
                              callback_group=self._timer_group, clock=steady),
            node.create_timer(0.5, self._graph_callback,
                              callback_group=self._timer_group, clock=steady)]
        self._server.start()
        meter = self._server.meter
        node.get_logger().info(
            f'serving {self._server.model.path} ({self._server.num_exits} exits) to '
            f'{", ".join(self._tenants) or "no tenants"}; energy '
            f'{"measured" if meter.measured else "estimated"} ({meter.source})')

    def deactivate(self) -> None:
        """Stop serving (queued frames count as dropped at shutdown); keep the configuration."""
        if not self.active:
            return
        node = self.node
        self._server.stop(timeout=5.0)
        for timer in self._timers:
            node.destroy_timer(timer)
        self._timers = []
        self._server.set_idle_task(None)
        node.destroy_publisher(self._diagnostics)
        self._server_services.destroy()
        self._server_services = None
        for io in self._tenants.values():
            self._close_tenant(io)

    def cleanup(self) -> None:
        """Undeclare the tenants and free the model (deactivating first when active)."""
        self.deactivate()
        for io in list(self._tenants.values()):
            self._forget_tenant(io)
        if self._server is not None:
            self._server.stop(timeout=5.0)
            self._intake.destroy()
        if self._budgets is not None:
            self._budgets.destroy()
        self._server = self._intake = self._budgets = None

    # -- what the services use -----------------------------------------------------------------

    @property
    def runtime(self) -> InferenceServer:
        """Return the InferenceServer behind this node."""
        return self._server

    @property
    def fallback_latency_ms(self) -> float:
        """Return the latency bound of requests without one."""
        return self._fallback_latency_ms

    @property
    def max_image_pixels(self) -> int:
        """Return the most pixels an image may have."""
        return self._max_pixels

    def tenant_names(self) -> List[str]:
        """Return the names of the tenants served now."""
        return list(self._tenants)

    def tenant_goal(self, name: str):
        """Return the goal in force for a tenant."""
        return self._goal_of(name)

    # -- set-up ------------------------------------------------------------------------------

    def _declare(self, name: str, default, spec) -> None:
        described = descriptor(spec)
        if spec.kind == 'string_array' and not default:
            # An empty list would type as bytes, and a typed but unset parameter breaks
            # get_parameters (ros2 param get/dump): '' or a list, both meaning the entries.
            default = ''
            described.type = ParameterType.PARAMETER_NOT_SET
            described.dynamic_typing = True
        try:
            self.node.declare_parameter(name, default, described)
        except InvalidParameterTypeException as error:
            hint = ' (YAML reads 50 as an integer: write 50.0)' if spec.kind == 'double' else ''
            raise ValueError(f'parameter {name} must be a {spec.kind}{hint}: {error}') from None

    def _value(self, name: str):
        try:
            return self.node.get_parameter(name).value
        except ParameterUninitializedException:  # an empty YAML list has no type: []
            return []

    def _add_tenant(self, name: str, values: Optional[Dict[str, object]] = None,
                    io: Optional[_TenantIo] = None) -> None:
        io = io or _TenantIo(name)
        defaults = values or tenant_defaults(name)
        for spec in TENANT_PARAMETERS:
            full = tenant_parameter(name, spec.name)
            self._declare(full, defaults[spec.name], spec)
            io.values[spec.name] = self._value(full)
        try:
            model = self._model_of(io.values)
            goal = self._check_tenant(io.values, qos_deadline_ms=None,
                                      fallback_latency_ms=self._fallback_latency_ms)
            io.input = image_input(io.values['input_topic'], io.values['transport'], model.spec)
            io.model_spec = model.spec
        except (KeyError, ValueError) as error:
            raise ValueError(f'tenant {name}: {error}') from None
        self._note_unmeetable(io, goal)
        self._server.add_tenant(name, goal=goal, policy=str(io.values['policy']),
                                queue_size=int(io.values['queue_size']),
                                on_infeasible=str(io.values['on_infeasible']),
                                share=float(io.values['share']),
                                model=str(io.values['model']))
        self._budgets.set_base(name, goal)
        self._tenants[name] = io

    def _model_of(self, values: Dict[str, object]):
        """Return the tenant's pinned model, or the first (KeyError names the known ones)."""
        return self._server.served_model(str(values['model']))

    def _check_tenant(self, values: Dict[str, object], **bounds):
        """Check a tenant's parameters against its model(s); return its goal (ValueError)."""
        model = self._model_of(values)
        pinned = bool(values['model'])
        best = model.profile.max_accuracy if pinned else max(
            self._server.served_model(info.name).profile.max_accuracy
            for info in self._server.models())
        return check_tenant(values, max_accuracy=best, policies=self._policies,
                            profile=model.profile, **bounds)

    def _open_tenant(self, io: _TenantIo) -> None:
        """Create a tenant's publishers and subscriptions."""
        node = self.node
        io.result_publisher = node.create_publisher(
            InferenceResult, io.values['output_topic'], 10)
        io.status_publisher = node.create_publisher(TenantStatus, io.values['status_topic'], 10)
        group = io.callback_group = MutuallyExclusiveCallbackGroup()
        self._subscribe_images(io, reliable=False)
        if GroundTruth is not None:
            io.subscriptions.append(node.create_subscription(
                GroundTruth, io.input.base_topic + '/ground_truth',
                functools.partial(self._ground_truth_callback, io),
                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                callback_group=group))

    def _close_tenant(self, io: _TenantIo) -> None:
        """Destroy a tenant's publishers and subscriptions."""
        node = self.node
        for subscription in io.subscriptions:
            self._intake.remove(subscription)
            node.destroy_subscription(subscription)
        io.subscriptions = []
        io.image_subscription = None
        io.publisher_gids, io.reliable = (), False  # matched again when reopened
        for publisher in (io.result_publisher, io.status_publisher):
            if publisher is not None:
                node.destroy_publisher(publisher)
        io.result_publisher = io.status_publisher = None

    # -- tenants at run time (~/add_tenant, ~/remove_tenant) ---------------------------------

    def add_tenant(self, name: str, given: Dict[str, object]) -> str:
        """Add a tenant: the parameters and checks of a start-up one; ValueError says why not."""
        values = tenant_values(check_tenant_name(name, existing=self._tenants), given)
        io = _TenantIo(name)
        try:
            self._add_tenant(name, values, io)
            self._open_tenant(io)
        except Exception:
            self._forget_tenant(io)
            raise
        self._graph_callback()
        return (f'tenant {name}: {self._goal_of(name)} on {io.subscriptions[0].topic_name} -> '
                f'{io.result_publisher.topic_name}')

    def remove_tenant(self, name: str) -> TenantStatus:
        """Remove a tenant: topics and parameters go; return its final statistics."""
        io = self._tenants.get(name)
        if io is None:
            raise KeyError(f'unknown tenant {name!r} (tenants: {", ".join(self._tenants)})')
        status = self._tenant_status(self.node.get_clock().now().to_msg(), io,
                                     self._server.stats(name), self._goal_of(name))
        self._forget_tenant(io)  # its adjusted goals too: the report is made first
        return status

    def _forget_tenant(self, io: _TenantIo) -> None:
        name = io.name
        self._tenants.pop(name, None)
        if self._server is not None and any(t.name == name for t in self._server.tenants()):
            self._server.remove_tenant(name)
        if self._budgets is not None:
            self._budgets.goals.remove(name)
        self._close_tenant(io)
        for spec in TENANT_PARAMETERS:
            undeclare_parameter(self.node, tenant_parameter(name, spec.name))

    def _subscribe_images(self, io: _TenantIo, *, reliable: bool) -> None:
        """(Re)create a tenant's image subscription: best effort, or reliable to match."""
        if io.image_subscription is not None:
            self._intake.remove(io.image_subscription)
            io.subscriptions.remove(io.image_subscription)
            self.node.destroy_subscription(io.image_subscription)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(io.values['queue_size']),
                         reliability=(ReliabilityPolicy.RELIABLE if reliable
                                      else qos_profile_sensor_data.reliability))
        if io.values['input_deadline_ms'] > 0:
            qos.deadline = Duration(nanoseconds=int(io.values['input_deadline_ms'] * 1e6))
        events = SubscriptionEventCallbacks(
            deadline=functools.partial(self._deadline_missed_callback, io),
            incompatible_qos=functools.partial(self._incompatible_qos_callback, io),
            message_lost=functools.partial(self._message_lost_callback, io))
        callback = functools.partial(self._image_callback, io)
        subscription = self.node.create_subscription(
            io.input.message_type, io.input.topic, callback, qos, event_callbacks=events,
            callback_group=self._intake.group)
        for handler in subscription.event_handlers:  # taken by ImageIntake.take_events
            handler.callback_group = self._intake.group
            self._intake.group.add_entity(handler)
        self._intake.add(subscription, callback,
                         on_missed=functools.partial(self._frames_missed_callback, io))
        io.subscriptions.append(subscription)
        io.image_subscription = subscription
        io.reliable = reliable

    # -- callbacks ---------------------------------------------------------------------------

    def _image_callback(self, io: _TenantIo, msg, transport_ms: Optional[float] = None,
                        wake_ms: Optional[float] = None) -> None:
        """Decode and queue one Image or CompressedImage (on the runtime's worker)."""
        try:
            arrival = self._arrival(io, msg.header.stamp)  # before decoding: it counts too
            decoded = io.input.decode(msg, max_pixels=self._max_pixels)
            self._server.submit(io.name, decoded.pixels, stamp_s=arrival.runtime_stamp_s,
                                frame_id=msg.header.frame_id, encoding=decoded.encoding,
                                label=arrival.label, token=msg.header,
                                transport_ms=transport_ms, wake_ms=wake_ms)
        except ImageFormatError as error:
            self._server.record_rejected(io.name)
            self._reject(io, f'{error.reason}: {error}')
        except InputError as error:  # counted as rejected by the runtime
            self._reject(io, f'bad_input: {error}')
        except Exception as error:  # noqa: B902 - a bad frame must never stop the node
            self._server.record_rejected(io.name)
            self._reject(io, f'unexpected: {type(error).__name__}: {error}')

    def _arrival(self, io: _TenantIo, stamp: Time):
        """Place a source stamp on the runtime's clock; warn once per kind of odd stamp."""
        arrival = io.frame_clock.arrival(
            stamp.sec * 10 ** 9 + stamp.nanosec, self.node.get_clock().now().nanoseconds,
            bound_ms=self._goal_of(io.name).latency_ms)
        if arrival.check and arrival.check not in io.stamp_warned:
            io.stamp_warned.add(arrival.check)
            self.node.get_logger().warning(f'tenant {io.name}: {_STAMP_WARNINGS[arrival.check]} '
                                           f'(warned once; counted in stamps_{arrival.check})')
        return arrival

    def _reject(self, io: _TenantIo, text: str) -> None:
        io.last_rejection = text
        self.node.get_logger().warning(f'tenant {io.name}: rejected image: {text}',
                                       throttle_duration_sec=2.0)

    def _ground_truth_callback(self, io: _TenantIo, msg) -> None:
        try:
            stamp = msg.header.stamp
            runtime_stamp = io.frame_clock.label(stamp.sec * 10 ** 9 + stamp.nanosec,
                                                 msg.class_id)
            if runtime_stamp is not None:
                self._server.record_label(io.name, runtime_stamp, msg.class_id)
        except Exception as error:  # noqa: B902
            self.node.get_logger().warning(f'tenant {io.name}: bad ground truth: {error}',
                                           throttle_duration_sec=5.0)

    def _deadline_missed_callback(self, io: _TenantIo, event) -> None:
        io.deadline_missed = int(event.total_count)

    def _message_lost_callback(self, io: _TenantIo, event) -> None:
        # Frames DDS gave up on before they reached this process (fragments lost, mostly).
        io.frames_lost += int(event.total_count_change)

    def _frames_missed_callback(self, io: _TenantIo, count: int) -> None:
        io.frames_missed += count  # on the worker; read by the status timer

    def _incompatible_qos_callback(self, io: _TenantIo, event) -> None:
        io.incompatible_qos = int(event.total_count)
        self.node.get_logger().warning(
            f'tenant {io.name}: a publisher on {io.input.topic} offers an incompatible '
            f'QoS (policy id {event.last_policy_kind}); this node requests a deadline of '
            f'{io.values["input_deadline_ms"]} ms (input_deadline_ms; 0 requests none)',
            throttle_duration_sec=10.0)

    def _result_callback(self, result) -> None:
        """Publish one answer; called from the runtime's worker thread."""
        io = self._tenants.get(result.tenant)
        if io is None:
            return
        try:
            io.result_publisher.publish(self.result_message(result))
        except Exception:  # noqa: B902
            if self.node.context.ok() and result.tenant in self._tenants:
                raise
            # Ctrl-C shut the context down, or the tenant was removed: nowhere to go.

    def result_message(self, result) -> InferenceResult:
        """Return the InferenceResult message of a runtime result (header: its token)."""
        msg = InferenceResult()
        if result.token is not None:  # the source image's header, travelled with the frame
            msg.header = result.token
        else:
            msg.header.frame_id = result.frame_id
            msg.header.stamp.sec = int(result.stamp_s)
            msg.header.stamp.nanosec = int(round((result.stamp_s % 1.0) * 1e9)) % 1000000000
        msg.tenant = result.tenant
        msg.class_id = int(result.class_id)
        msg.label = result.label
        msg.confidence = float(result.confidence)
        msg.exit_index = int(result.exit_index)
        msg.num_exits = int(result.num_exits)
        msg.is_final = bool(result.is_final)
        msg.latency_ms = float(result.latency_ms)
        msg.queue_ms = float(result.queue_ms)
        msg.compute_ms = float(result.compute_ms)
        msg.energy_mj = float(result.energy_mj)
        msg.energy_measured = bool(result.energy_measured)
        msg.deadline_ms = float(result.deadline_ms or 0.0)
        msg.deadline_met = bool(result.deadline_met)
        msg.goal = result.goal
        msg.policy = result.policy
        msg.num_threads = int(result.threads)
        msg.delivery_ms = float(result.delivery_ms)
        msg.model = result.model
        return msg

    def _runtime_event_callback(self, kind: str, text: str) -> None:
        """Errors of the serving loop and the priority it got, to rosout (worker thread)."""
        logger = self.node.get_logger()
        if kind == 'error':
            logger.error(text, throttle_duration_sec=1.0)
        elif 'not applied' in text:
            logger.warning(text)
        else:
            logger.info(text)

    def _parameters_callback(self, parameters) -> SetParametersResult:
        """Refuse invalid or inconsistent settings with a reason; apply the others at once."""
        try:
            return self._set_parameters(parameters)
        except Exception as error:  # noqa: B902 - a parameter write must never stop the node
            self.node.get_logger().error(
                f'setting parameters failed: {type(error).__name__}: {error}')
            return SetParametersResult(successful=False,
                                       reason=f'internal error: {type(error).__name__}: {error}')

    def _set_parameters(self, parameters) -> SetParametersResult:
        changes: Dict[str, Dict[str, object]] = {}
        server: Dict[str, object] = {}
        for parameter in parameters:
            tenant, _, field = parameter.name.partition('.')
            if tenant in self._tenants and field:
                changes.setdefault(tenant, {})[field] = parameter.value
            elif parameter.name in ('max_image_pixels', 'fallback_latency_ms'):
                server[parameter.name] = parameter.value
        fallback = float(server.get('fallback_latency_ms', self._fallback_latency_ms))
        if 'fallback_latency_ms' in server:  # tenants without a bound follow it
            for tenant in self._tenants:
                changes.setdefault(tenant, {})
        goals = {}
        for tenant, fields in changes.items():
            io = self._tenants[tenant]
            try:
                if 'model' in fields:
                    model = self._model_of(fields)
                    if model.spec != io.model_spec:
                        raise ValueError(f'model {model.name} takes another input than this '
                                         "tenant's decoder was made for; pin it at start-up")
                goals[tenant] = self._check_tenant(
                    {**io.values, **fields}, qos_deadline_ms=io.qos_deadline_ms,
                    fallback_latency_ms=fallback)
            except (KeyError, ValueError) as error:
                reason = error.args[0] if isinstance(error, KeyError) else error
                return SetParametersResult(successful=False, reason=f'{tenant}: {reason}')
        self._max_pixels = int(server.get('max_image_pixels', self._max_pixels))
        self._fallback_latency_ms = fallback
        for tenant, fields in changes.items():
            io = self._tenants[tenant]
            old_policy, old_queue = io.values['policy'], io.values['queue_size']
            old_model = io.values['model']
            io.values.update(fields)
            self._set_goal(io, goals[tenant])
            if io.values['model'] != old_model:  # checked with the new policy, set with it
                self._server.set_model(tenant, str(io.values['model']),
                                       policy=str(io.values['policy']))
            elif io.values['policy'] != old_policy:
                self._server.set_policy(tenant, str(io.values['policy']))
            if io.values['queue_size'] != old_queue:
                self._server.set_queue_size(tenant, int(io.values['queue_size']))
            self._server.set_share(tenant, float(io.values['share']))
        return SetParametersResult(successful=True)

    def _set_goal(self, io: _TenantIo, goal) -> None:
        self._budgets.set_base(io.name, goal)
        self._note_unmeetable(io, goal)

    def _note_unmeetable(self, io: _TenantIo, goal) -> None:
        """Warn once about legal bounds no exit can meet; /diagnostics shows them meanwhile."""
        problems = unmeetable_bounds(goal, self._server.cost)
        if problems and problems != io.unmeetable:
            self.node.get_logger().warning(
                f'tenant {io.name}: {"; ".join(problems)}: its frames will be '
                f'{"dropped" if io.values["on_infeasible"] == "drop" else "answered late"}')
        io.unmeetable = problems

    def _graph_callback(self) -> None:
        """Take the image subscriptions' QoS events; follow the publishers of each input."""
        self._intake.take_events()
        for io in self._tenants.values():
            try:
                infos = self.node.get_publishers_info_by_topic(io.input.topic)
            except Exception as error:  # noqa: B902 - graph queries fail during shutdown
                self.node.get_logger().debug(f'publisher query failed: {error}')
                continue
            gids = tuple(sorted(bytes(info.endpoint_gid) for info in infos))
            if gids == io.publisher_gids:
                continue
            io.publisher_gids = gids
            # As ros2 bag record does: reliable only when every publisher is.
            reliable = bool(infos) and all(
                info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in infos)
            if infos and reliable != io.reliable:
                self._subscribe_images(io, reliable=reliable)
                self.node.get_logger().info(
                    f'tenant {io.name}: {io.values["input_topic"]} now '
                    f'{"reliable" if reliable else "best effort"}, as its publishers')
            offered = [info.qos_profile.deadline.nanoseconds for info in infos]
            offered = [ns for ns in offered if 0 < ns < _NO_DEADLINE_NS]
            deadline = min(offered) / 1e6 if offered else None
            if deadline == io.qos_deadline_ms:
                continue
            io.qos_deadline_ms = deadline
            self._apply_qos_deadline(io)

    def _apply_qos_deadline(self, io: _TenantIo) -> None:
        try:
            goal = self._check_tenant(io.values, qos_deadline_ms=io.qos_deadline_ms,
                                      fallback_latency_ms=self._fallback_latency_ms)
        except ValueError as error:
            self.node.get_logger().error(f'tenant {io.name}: offered deadline '
                                         f'{io.qos_deadline_ms} ms gives no valid goal: {error}')
            return
        self._set_goal(io, goal)
        self.node.get_logger().info(f'tenant {io.name}: base goal {goal} (offered deadline '
                                    f'{io.qos_deadline_ms} ms)')

    def _idle_report(self) -> Optional[float]:
        """
        Make one status report while no frame waits (the runtime's idle task, on its worker).

        A cycle reports each tenant (TenantStatus and its /diagnostics entry), then the server,
        one per call, once every ``status_period_s``. On the worker, between frames, a report
        never takes the GIL from a frame; the executor, reporting all at once, held it for
        4-9 ms with eight tenants (docs/serving_path.md). Returns the seconds to the next one.
        """
        with self._report_lock:
            now = time.monotonic()
            if not self._cycle_open and now < self._cycle_due_s:
                return self._cycle_due_s - now
            try:
                self._report_step()
            except Exception:  # noqa: B902
                if self.node.context.ok():
                    raise
                return None  # Ctrl-C shut the context down: nowhere to report
            return 0.0 if self._cycle_open else self._cycle_due_s - now

    def _status_callback(self) -> None:
        """Finish a report cycle overdue by a period: the worker is too busy to make it."""
        with self._report_lock:
            if time.monotonic() - self._cycle_due_s < self._status_period_s:
                return
            self._report_step()
            while self._cycle_open:
                self._report_step()

    def _report_step(self) -> None:
        """One report of the cycle: the next tenant's, or the server's (which ends it)."""
        stamp = self.node.get_clock().now().to_msg()
        if not self._cycle_open:
            self._cycle_open = True
            self._status_due.extend(list(self._tenants))
        while self._status_due:
            io = self._tenants.get(self._status_due.popleft())
            if io is None:
                continue  # removed meanwhile
            try:
                snapshot = self._server.stats(io.name)
            except KeyError:
                continue  # removed meanwhile
            io.status_publisher.publish(
                self._tenant_status(stamp, io, snapshot, self._goal_of(io.name)))
            self._diagnostics.publish(DiagnosticArray(
                header=_header(stamp), status=[self._tenant_diagnostic(io, snapshot)]))
            return
        self._diagnostics.publish(DiagnosticArray(header=_header(stamp),
                                                  status=[self._server_diagnostic()]))
        self._cycle_open = False
        self._cycle_due_s = max(self._cycle_due_s + self._status_period_s, time.monotonic())

    def _tenant_status(self, stamp, io: _TenantIo, snapshot, goal) -> TenantStatus:
        return TenantStatus(
            header=_header(stamp), tenant=io.name, goal=snapshot.goal, policy=snapshot.policy,
            frames_received=snapshot.received, frames_served=snapshot.served,
            frames_dropped=snapshot.dropped, frames_rejected=snapshot.rejected,
            frames_lost=io.frames_lost, frames_missed=io.frames_missed,
            frames_failed=snapshot.failed,
            deadline_misses=snapshot.deadline_misses,
            deadline_met_ratio=float(snapshot.deadline_met_ratio),
            latency_mean_ms=float(snapshot.latency_mean_ms),
            latency_p99_ms=float(snapshot.latency_p99_ms), mean_exit=float(snapshot.mean_exit),
            energy_mean_mj=float(snapshot.energy_mean_mj),
            energy_measured=bool(snapshot.energy_measured),
            accuracy=float(snapshot.accuracy), labelled_frames=snapshot.labelled,
            latency_bound_ms=float(goal.latency_ms or 0.0),
            min_accuracy=float(goal.min_accuracy or 0.0),
            energy_bound_mj=float(goal.energy_mj or 0.0),
            dropped_queue=snapshot.dropped_queue, dropped_infeasible=snapshot.dropped_infeasible,
            dropped_shutdown=snapshot.dropped_shutdown, frames_late=_late(snapshot),
            **{f'stamps_{check}': count for check, count in io.frame_clock.counts.items()},
            **self._budgets.status_fields(io.name))

    def _goal_of(self, name: str):
        return self._server.goal(name)

    def _tenant_diagnostic(self, io: _TenantIo, snapshot) -> DiagnosticStatus:
        level, problems = DiagnosticStatus.OK, []
        met = snapshot.deadline_met_ratio
        if snapshot.served and met == met and met < 0.5:
            level = DiagnosticStatus.ERROR
            problems.append(f'deadline met on {100 * met:.0f}% of frames')
        elif snapshot.served and met == met and met < 0.9:
            level = DiagnosticStatus.WARN
            problems.append(f'deadline met on {100 * met:.0f}% of frames')
        if snapshot.failed:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{snapshot.failed} frames failed while served (last: '
                            f'{self._server.last_error})')
        if snapshot.rejected:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{snapshot.rejected} bad images (last: {io.last_rejection})')
        if snapshot.received and snapshot.dropped > 0.5 * snapshot.received:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{snapshot.dropped} of {snapshot.received} frames dropped '
                            f'({snapshot.dropped_queue} queue full, {snapshot.dropped_infeasible} '
                            f'infeasible, {snapshot.dropped_shutdown} shutdown)')
        if snapshot.served and _late(snapshot) > 0.5 * snapshot.served:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{_late(snapshot)} of {snapshot.served} frames answered late: '
                            'no exit meets the bound')
        if io.incompatible_qos:
            level = max(level, DiagnosticStatus.WARN)
            problems.append('incompatible QoS offered on the input topic')
        if io.unmeetable:
            level = max(level, DiagnosticStatus.WARN)
            problems.extend(io.unmeetable)
        if io.frames_lost:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{io.frames_lost} frames lost in transport (DDS); see '
                            'docs/large_images.md')
        if io.frames_missed > io.frames_lost:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f'{io.frames_missed - io.frames_lost} frames replaced in the input '
                            'history before they were taken (a larger queue_size keeps them)')
        values = {
            'goal': snapshot.goal, 'policy': snapshot.policy,
            'input_topic': io.input.topic, 'transport': io.input.transport,
            'offered_deadline_ms': '' if io.qos_deadline_ms is None else f'{io.qos_deadline_ms}',
            'received': snapshot.received, 'served': snapshot.served,
            'dropped': snapshot.dropped, 'dropped_queue': snapshot.dropped_queue,
            'dropped_infeasible': snapshot.dropped_infeasible,
            'dropped_shutdown': snapshot.dropped_shutdown, 'late': _late(snapshot),
            'on_infeasible': io.values['on_infeasible'], 'rejected': snapshot.rejected,
            'failed': snapshot.failed, 'last_rejection': io.last_rejection,
            'deadline_met_ratio': f'{met:.3f}', 'latency_p99_ms': f'{snapshot.latency_p99_ms:.2f}',
            'mean_exit': f'{snapshot.mean_exit:.2f}',
            'answers_by_model': ', '.join(f'{name}: {count}'
                                          for name, count in snapshot.model_counts),
            'energy_mean_mj': f'{snapshot.energy_mean_mj:.3f}',
            'energy_measured': snapshot.energy_measured, 'accuracy': f'{snapshot.accuracy:.4f}',
            'input_deadline_missed': io.deadline_missed,
            'incompatible_qos': io.incompatible_qos,
            'unmeetable_bounds': '; '.join(io.unmeetable),
            'frames_lost': io.frames_lost, 'frames_missed': io.frames_missed,
            'input_reliability': 'reliable' if io.reliable else 'best_effort',
            **self._budgets.tenant_values(io.name),
            **{f'stamps_{check}': count for check, count in io.frame_clock.counts.items()},
        }
        return DiagnosticStatus(
            level=level, name=f'delen_server: tenant {io.name}',
            hardware_id=self.node.get_fully_qualified_name(),
            message='; '.join(problems) or 'serving within bounds',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def _server_diagnostic(self) -> DiagnosticStatus:
        server = self._server
        meter = server.meter
        values = {
            'model': str(self._server.model.path), 'exits': self._server.num_exits,
            **{f'model {info.name}': info.describe() for info in server.models()},
            'energy_source': meter.source,
            'energy': 'measured' if meter.measured else 'estimated',
            'energy_read_errors': meter.read_errors,
            'energy_last_read_error': meter.last_read_error,
            'pending_frames': self._server.pending(), 'tenants': ', '.join(self._tenants),
            **self._server_services.diagnostic_values(),
            'frames_failed': server.frames_failed, 'last_error': server.last_error,
            'idle_task_errors': server.idle_task_errors,
            'workers': server.workers, 'helper_jobs': server.helper_jobs,
            'preemptions': server.preemptions, 'batches': server.batches,
            'runnable_elsewhere': server.free_cores.runnable_elsewhere,
            'plans_narrowed_by_other_tasks': server.free_cores.plans_narrowed,
            'jobs_narrowed_by_other_tasks': server.free_cores.jobs_narrowed,
            'batched_frames': server.batched_frames,
            'delivery_ms': f'{server.delivery_ms:.2f}',
            'cpu_priority': server.priority_report or server.cpu_priority,
            'warm_up_ms': f'{server.warm_up_ms:.0f}',
            'frames_taken_by_worker': self._intake.taken,
            'intake_wait_ms_p50': self._intake.waited_p50(),
            'worker_waits': self._intake.waits, 'worker_wakeups': self._intake.wakeups,
            'gc_idle_passes': server.collector.idle_passes,
            'gc_overdue_passes': server.collector.overdue_passes,
            'gc_longest_pass_ms': f'{server.collector.longest_pass_ms:.2f}',
            'worker_frame_overhead_ms': f'{server.frame_overhead_ms:.2f}',
            'falling_behind': server.falling_behind,
            **server.busy_time.values(),
            **(server.helpers_busy_time.values('helpers') if server.workers > 1 else {}),
            **self._budgets.server_values(),
        }
        level, message = DiagnosticStatus.OK, f'serving {len(self._tenants)} tenants'
        if not server.serving:
            level = DiagnosticStatus.ERROR
            message = f'serving stopped: {server.fatal_error or "a worker is not running"}'
        return DiagnosticStatus(
            level=level, name='delen_server',
            hardware_id=self.node.get_fully_qualified_name(), message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


class ServerNode(Node):
    """Serve the model family to the tenants named in the ``tenants`` parameter."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_server'), **kwargs)
        self.core = ServingCore(self)
        self.core.configure()
        self.core.activate()

    def destroy_node(self) -> None:
        """Stop serving and free the model before the node goes."""
        core = getattr(self, 'core', None)
        if core is not None:  # None: the parameters were refused before it was made
            core.cleanup()
        super().destroy_node()


def _entries(value) -> List[str]:
    """Return the entries of a list parameter given as a list or as comma-separated text."""
    items = value.split(',') if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _late(snapshot) -> int:
    """Frames answered although no exit could meet their bound (the others were dropped)."""
    return snapshot.infeasible - snapshot.dropped_infeasible


def _header(stamp) -> Header:
    return Header(stamp=stamp)


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros server)."""
    return run_node(ServerNode, name='delen_server',
                    startup_errors=(CheckpointError, ProfileError, ValueError), args=args)
