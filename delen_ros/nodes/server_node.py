"""
The serving node: images in, InferenceResults out, one multi-exit model for every tenant.

A thin layer over ``delen_ros.runtime.InferenceServer``: parameters, QoS, callbacks. The
runtime's worker takes the images itself (``ImageIntake``: the image subscriptions are not
the executor's), decodes, serves and publishes on one thread; parameters, timers and status
stay on the executor, so inference never blocks them.
"""

import functools
from typing import Dict, List, Optional

from builtin_interfaces.msg import Time
from delen_ros.engine import CheckpointError
from delen_ros.engine.profiling import ProfileError
from delen_ros.imaging import ImageFormatError
from delen_ros.msg import InferenceResult, TenantStatus
from delen_ros.nodes.budget_adjustments import BudgetAdjustments
from delen_ros.nodes.descriptors import (bool_parameter, float_parameter, int_parameter,
                                         string_array_parameter, string_parameter)
from delen_ros.nodes.image_input import image_input
from delen_ros.nodes.image_intake import ImageIntake
from delen_ros.nodes.parameters import (check_tenant, SERVER_PARAMETERS, tenant_defaults,
                                        tenant_parameter, TENANT_PARAMETERS)
from delen_ros.nodes.spin import run_node
from delen_ros.runtime import available_policies, InferenceServer, InputError
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
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


def _stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


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
        self.result_publisher = None
        self.status_publisher = None
        self.input = None  # an image_input.ImageInput: message type, topic, decode function


class ServerNode(Node):
    """Serve one multi-exit model to the tenants named in the ``tenants`` parameter."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_server'), **kwargs)
        for spec in SERVER_PARAMETERS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        value = self._value
        self._intake = ImageIntake(self)
        self._server = InferenceServer.from_checkpoint(
            path=value('model') or None, profile=value('profile') or None,
            platform=value('platform') or None, threads=value('threads'),
            clock=self._now_s, on_result=self._result_callback,
            max_batch=value('max_batch'), cpu_priority=value('cpu_priority'),
            on_event=self._runtime_event_callback)
        self._server.attach_source(self._intake)
        self._max_pixels = value('max_image_pixels')
        self._fallback_latency_ms = value('fallback_latency_ms')
        self._policies = available_policies()
        self._tenants: Dict[str, _TenantIo] = {}
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._budgets = BudgetAdjustments(self, self._server,
                                          timeout_parameter='adjustment_timeout_s')
        for name in value('tenants'):
            self._add_tenant(str(name))
        self.add_on_set_parameters_callback(self._parameters_callback)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(value('status_period_s'), self._status_callback,
                          callback_group=self._timer_group)
        self.create_timer(0.5, self._publishers_callback, callback_group=self._timer_group)
        self._server.start()
        meter = self._server.meter
        self.get_logger().info(
            f'serving {self._server.model.path} ({self._server.num_exits} exits) to '
            f'{", ".join(self._tenants) or "no tenants"}; energy '
            f'{"measured" if meter.measured else "estimated"} ({meter.source})')

    # -- set-up ------------------------------------------------------------------------------

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _add_tenant(self, name: str) -> None:
        io = _TenantIo(name)
        defaults = tenant_defaults(name)
        for spec in TENANT_PARAMETERS:
            full = tenant_parameter(name, spec.name)
            self.declare_parameter(full, defaults[spec.name], descriptor(spec))
            io.values[spec.name] = self._value(full)
        try:
            goal = check_tenant(io.values, max_accuracy=self._server.profile.max_accuracy,
                                qos_deadline_ms=None,
                                fallback_latency_ms=self._fallback_latency_ms,
                                policies=self._policies)
            io.input = image_input(io.values['input_topic'], io.values['transport'],
                                   self._server.spec)
        except ValueError as error:
            raise ValueError(f'tenant {name}: {error}') from None
        self._server.add_tenant(name, goal=goal, policy=str(io.values['policy']),
                                queue_size=int(io.values['queue_size']),
                                on_infeasible=str(io.values['on_infeasible']),
                                share=float(io.values['share']))
        self._budgets.set_base(name, goal)
        io.result_publisher = self.create_publisher(
            InferenceResult, io.values['output_topic'], 10)
        io.status_publisher = self.create_publisher(TenantStatus, io.values['status_topic'], 10)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(io.values['queue_size']),
                         reliability=qos_profile_sensor_data.reliability)
        if io.values['input_deadline_ms'] > 0:
            qos.deadline = Duration(nanoseconds=int(io.values['input_deadline_ms'] * 1e6))
        events = SubscriptionEventCallbacks(
            deadline=functools.partial(self._deadline_missed_callback, io),
            incompatible_qos=functools.partial(self._incompatible_qos_callback, io))
        group = MutuallyExclusiveCallbackGroup()
        callback = functools.partial(self._image_callback, io)
        subscription = self.create_subscription(io.input.message_type, io.input.topic, callback,
                                                qos, event_callbacks=events,
                                                callback_group=self._intake.group)
        for handler in subscription.event_handlers:  # QoS events stay on the executor
            handler.callback_group = group
            group.add_entity(handler)
        self._intake.add(subscription, callback)
        if GroundTruth is not None:
            self.create_subscription(
                GroundTruth, io.input.base_topic + '/ground_truth',
                functools.partial(self._ground_truth_callback, io),
                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                callback_group=group)
        self._tenants[name] = io

    # -- callbacks ---------------------------------------------------------------------------

    def _image_callback(self, io: _TenantIo, msg,
                        transport_ms: Optional[float] = None) -> None:
        """Decode and queue one Image or CompressedImage (on the runtime's worker)."""
        try:
            decoded = io.input.decode(msg, max_pixels=self._max_pixels)
            self._server.submit(io.name, decoded.pixels, stamp_s=_stamp_seconds(msg.header.stamp),
                                frame_id=msg.header.frame_id, encoding=decoded.encoding,
                                token=msg.header, transport_ms=transport_ms)
        except ImageFormatError as error:
            self._server.record_rejected(io.name)
            self._reject(io, f'{error.reason}: {error}')
        except InputError as error:  # counted as rejected by the runtime
            self._reject(io, f'bad_input: {error}')
        except Exception as error:  # noqa: B902 - a bad frame must never stop the node
            self._server.record_rejected(io.name)
            self._reject(io, f'unexpected: {type(error).__name__}: {error}')

    def _reject(self, io: _TenantIo, text: str) -> None:
        io.last_rejection = text
        self.get_logger().warning(f'tenant {io.name}: rejected image: {text}',
                                  throttle_duration_sec=2.0)

    def _ground_truth_callback(self, io: _TenantIo, msg) -> None:
        try:
            self._server.record_label(io.name, _stamp_seconds(msg.header.stamp), msg.class_id)
        except Exception as error:  # noqa: B902
            self.get_logger().warning(f'tenant {io.name}: bad ground truth: {error}',
                                      throttle_duration_sec=5.0)

    def _deadline_missed_callback(self, io: _TenantIo, event) -> None:
        io.deadline_missed = int(event.total_count)

    def _incompatible_qos_callback(self, io: _TenantIo, event) -> None:
        io.incompatible_qos = int(event.total_count)
        self.get_logger().warning(
            f'tenant {io.name}: a publisher on {io.input.topic} offers an incompatible '
            f'QoS (policy id {event.last_policy_kind}); this node requests a deadline of '
            f'{io.values["input_deadline_ms"]} ms', throttle_duration_sec=10.0)

    def _result_callback(self, result) -> None:
        """Publish one answer; called from the runtime's worker thread."""
        io = self._tenants.get(result.tenant)
        if io is None:
            return
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
        try:
            io.result_publisher.publish(msg)
        except Exception:  # noqa: B902
            if self.context.ok():
                raise
            # Ctrl-C shut the context down: the frame in flight has nowhere to go.

    def _runtime_event_callback(self, kind: str, text: str) -> None:
        """Errors of the serving loop and the priority it got, to rosout (worker thread)."""
        logger = self.get_logger()
        if kind == 'error':
            logger.error(text, throttle_duration_sec=1.0)
        elif 'not applied' in text:
            logger.warning(text)
        else:
            logger.info(text)

    def _parameters_callback(self, parameters) -> SetParametersResult:
        """Refuse inconsistent tenant settings with a reason; apply the others at once."""
        changes: Dict[str, Dict[str, object]] = {}
        for parameter in parameters:
            tenant, _, field = parameter.name.partition('.')
            if tenant in self._tenants and field:
                changes.setdefault(tenant, {})[field] = parameter.value
            elif parameter.name == 'max_image_pixels':
                self._max_pixels = int(parameter.value)
            elif parameter.name == 'fallback_latency_ms':
                self._fallback_latency_ms = float(parameter.value)
        goals = {}
        for tenant, fields in changes.items():
            io = self._tenants[tenant]
            values = {**io.values, **fields}
            try:
                goals[tenant] = check_tenant(
                    values, max_accuracy=self._server.profile.max_accuracy,
                    qos_deadline_ms=io.qos_deadline_ms,
                    fallback_latency_ms=self._fallback_latency_ms, policies=self._policies)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=f'{tenant}: {error}')
        for tenant, fields in changes.items():
            io = self._tenants[tenant]
            old_policy, old_queue = io.values['policy'], io.values['queue_size']
            io.values.update(fields)
            self._budgets.set_base(tenant, goals[tenant])
            if io.values['policy'] != old_policy:
                self._server.set_policy(tenant, str(io.values['policy']))
            if io.values['queue_size'] != old_queue:
                self._server.set_queue_size(tenant, int(io.values['queue_size']))
            self._server.set_share(tenant, float(io.values['share']))
        return SetParametersResult(successful=True)

    def _publishers_callback(self) -> None:
        """Follow the deadline QoS offered on each input topic (publishers come and go)."""
        for io in self._tenants.values():
            try:
                infos = self.get_publishers_info_by_topic(io.input.topic)
            except Exception as error:  # noqa: B902 - graph queries fail during shutdown
                self.get_logger().debug(f'publisher query failed: {error}')
                continue
            gids = tuple(sorted(bytes(info.endpoint_gid) for info in infos))
            if gids == io.publisher_gids:
                continue
            io.publisher_gids = gids
            offered = [info.qos_profile.deadline.nanoseconds for info in infos]
            offered = [ns for ns in offered if 0 < ns < _NO_DEADLINE_NS]
            deadline = min(offered) / 1e6 if offered else None
            if deadline == io.qos_deadline_ms:
                continue
            io.qos_deadline_ms = deadline
            self._apply_qos_deadline(io)

    def _apply_qos_deadline(self, io: _TenantIo) -> None:
        try:
            goal = check_tenant(io.values, max_accuracy=self._server.profile.max_accuracy,
                                qos_deadline_ms=io.qos_deadline_ms,
                                fallback_latency_ms=self._fallback_latency_ms)
        except ValueError as error:
            self.get_logger().error(f'tenant {io.name}: offered deadline '
                                    f'{io.qos_deadline_ms} ms gives no valid goal: {error}')
            return
        self._budgets.set_base(io.name, goal)
        self.get_logger().info(f'tenant {io.name}: base goal {goal} (offered deadline '
                               f'{io.qos_deadline_ms} ms)')

    def _status_callback(self) -> None:
        stamp = self.get_clock().now().to_msg()
        stats = self._server.stats()
        statuses: List[DiagnosticStatus] = []
        for name, io in self._tenants.items():
            snapshot = stats.get(name)
            if snapshot is None:
                continue
            io.status_publisher.publish(self._tenant_status(stamp, io, snapshot))
            statuses.append(self._tenant_diagnostic(io, snapshot))
        statuses.append(self._server_diagnostic())
        self._diagnostics.publish(DiagnosticArray(header=_header(stamp), status=statuses))

    def _tenant_status(self, stamp, io: _TenantIo, snapshot) -> TenantStatus:
        goal = self._goal_of(io.name)
        return TenantStatus(
            header=_header(stamp), tenant=io.name, goal=snapshot.goal, policy=snapshot.policy,
            frames_received=snapshot.received, frames_served=snapshot.served,
            frames_dropped=snapshot.dropped, frames_rejected=snapshot.rejected,
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
            **self._budgets.status_fields(io.name))

    def _goal_of(self, name: str):
        return next(t.goal for t in self._server.tenants() if t.name == name)

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
            problems.append(f'{snapshot.dropped} of {snapshot.received} frames dropped')
        if io.incompatible_qos:
            level = max(level, DiagnosticStatus.WARN)
            problems.append('incompatible QoS offered on the input topic')
        values = {
            'goal': snapshot.goal, 'policy': snapshot.policy,
            'input_topic': io.input.topic, 'transport': io.input.transport,
            'offered_deadline_ms': '' if io.qos_deadline_ms is None else f'{io.qos_deadline_ms}',
            'received': snapshot.received, 'served': snapshot.served,
            'dropped': snapshot.dropped, 'rejected': snapshot.rejected,
            'failed': snapshot.failed, 'last_rejection': io.last_rejection,
            'deadline_met_ratio': f'{met:.3f}', 'latency_p99_ms': f'{snapshot.latency_p99_ms:.2f}',
            'mean_exit': f'{snapshot.mean_exit:.2f}',
            'energy_mean_mj': f'{snapshot.energy_mean_mj:.3f}',
            'energy_measured': snapshot.energy_measured, 'accuracy': f'{snapshot.accuracy:.4f}',
            'input_deadline_missed': io.deadline_missed,
            'incompatible_qos': io.incompatible_qos, **self._budgets.tenant_values(io.name),
        }
        return DiagnosticStatus(
            level=level, name=f'delen_server: tenant {io.name}',
            hardware_id=self.get_fully_qualified_name(),
            message='; '.join(problems) or 'serving within bounds',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def _server_diagnostic(self) -> DiagnosticStatus:
        server = self._server
        meter = server.meter
        values = {
            'model': str(self._server.model.path), 'exits': self._server.num_exits,
            'energy_source': meter.source,
            'energy': 'measured' if meter.measured else 'estimated',
            'pending_frames': self._server.pending(), 'tenants': ', '.join(self._tenants),
            'frames_failed': server.frames_failed, 'last_error': server.last_error,
            'preemptions': server.preemptions, 'batches': server.batches,
            'batched_frames': server.batched_frames,
            'delivery_ms': f'{server.delivery_ms:.2f}',
            'cpu_priority': server.priority_report or server.cpu_priority,
            'frames_taken_by_worker': self._intake.taken,
            'intake_wait_ms_p50': self._intake.waited_p50(),
            'worker_waits': self._intake.waits, 'worker_wakeups': self._intake.wakeups,
            **self._budgets.server_values(),
        }
        level, message = DiagnosticStatus.OK, f'serving {len(self._tenants)} tenants'
        if not server.serving:
            level = DiagnosticStatus.ERROR
            message = f'serving stopped: {server.fatal_error or "the worker is not running"}'
        return DiagnosticStatus(
            level=level, name='delen_server',
            hardware_id=self.get_fully_qualified_name(), message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def destroy_node(self) -> None:
        """Stop the runtime's worker before the node goes."""
        server = getattr(self, '_server', None)
        if server is not None:
            server.stop(timeout=5.0)
            self._intake.destroy()
        super().destroy_node()


def _header(stamp) -> Header:
    return Header(stamp=stamp)


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros server)."""
    return run_node(ServerNode, name='delen_server',
                    startup_errors=(CheckpointError, ProfileError, ValueError), args=args)
