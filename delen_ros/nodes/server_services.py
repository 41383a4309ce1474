"""
The serving node's services: ``~/classify``, ``~/add_tenant``, ``~/remove_tenant``.

``~/classify`` puts the request's image into the runtime as a frame of its own tenant
(``CLASSIFY_TENANT``, not a ROS name, so no topic tenant can take it) with the request's
goal, so it is scheduled with the topics' frames, earliest deadline first. The callback waits
for its answer with a time-out: every request gets a response.
"""

import itertools
import threading
from typing import Dict

from delen_ros.imaging import decode_image, ImageFormatError
from delen_ros.nodes.frame_time import FrameClock
from delen_ros.runtime import Goal, GoalError, InputError, parse_goal
from delen_ros.srv import AddTenant, Classify, RemoveTenant
from rclpy.parameter import parameter_value_to_python

try:
    from delen_ros.imaging import decode_compressed
except ImportError:  # pragma: no cover - before the CompressedImage codec
    decode_compressed = None

__all__ = ['CLASSIFY_TENANT', 'ServerServices', 'undeclare_parameter']

CLASSIFY_TENANT = '~/classify'
_QUEUE = 16
_GRACE_S = 5.0


def undeclare_parameter(node, name: str) -> None:
    """Undeclare a parameter, read-only or not (a removed tenant's topics go too)."""
    if node.has_parameter(name):
        # rclpy refuses to undeclare read-only parameters; its own undeclare is these two lines.
        del node._parameters[name]
        del node._descriptors[name]


class _Waiting:
    """Answers of classify requests, by request token, handed from the runtime's worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: Dict[str, threading.Event] = {}
        self._results: Dict[str, object] = {}
        self._tokens = itertools.count()

    def new_token(self) -> str:
        token = f'classify_{next(self._tokens)}'
        with self._lock:
            self._events[token] = threading.Event()
        return token

    def result_callback(self, result) -> None:
        if not result.is_final:
            return
        with self._lock:
            event = self._events.get(result.frame_id)
            if event is not None:
                self._results[result.frame_id] = result
                event.set()

    def wait(self, token: str, timeout: float):
        with self._lock:
            event = self._events[token]
        event.wait(timeout)
        with self._lock:
            self._events.pop(token, None)
            return self._results.pop(token, None)


class ServerServices:
    """The three services of a server's ServingCore (``core``), on ``callback_group``."""

    def __init__(self, core, *, callback_group) -> None:
        self._core = core
        self._waiting = _Waiting()
        self._clock = FrameClock()
        self.requests = self.errors = 0
        self.last_error = ''
        core.runtime.add_tenant(
            CLASSIFY_TENANT, goal=Goal.latency(core.fallback_latency_ms), policy='budget',
            queue_size=_QUEUE, on_infeasible='serve_first_exit',
            on_result=self._waiting.result_callback)
        self._entities = [
            core.node.create_service(Classify, '~/classify', self._classify_callback,
                                     callback_group=callback_group),
            core.node.create_service(AddTenant, '~/add_tenant', self._add_tenant_callback,
                                     callback_group=callback_group),
            core.node.create_service(RemoveTenant, '~/remove_tenant',
                                     self._remove_tenant_callback,
                                     callback_group=callback_group),
        ]

    def destroy(self) -> None:
        """Destroy the services and the runtime's request tenant."""
        for service in self._entities:
            self._core.node.destroy_service(service)
        self._entities = []
        self._core.runtime.remove_tenant(CLASSIFY_TENANT)

    def _classify_callback(self, request, response):
        self.requests += 1
        try:
            result = response.result = self._classify(request)
            response.success = True
            response.message = (f'{result.label} (exit {result.exit_index}, '
                                f'{result.latency_ms:.1f} ms)')
        except (GoalError, ImageFormatError, InputError, KeyError, TimeoutError,
                ValueError) as error:
            self.errors += 1
            text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            response.success, response.message = False, str(text)
            self.last_error = response.message
        return response

    def _classify(self, request):
        core = self._core
        goal = self._request_goal(request.goal, request.tenant)
        image = request.image
        if not len(image.data) and not len(request.compressed_image.data):
            raise ValueError('the request holds no image: image.data and '
                             'compressed_image.data are both empty')
        if len(image.data):
            decoded = decode_image(image, max_pixels=core.max_image_pixels)
            header = image.header
        else:
            if decode_compressed is None:
                raise ValueError('this build decodes no CompressedImage; send an Image')
            decoded = decode_compressed(request.compressed_image,
                                        max_pixels=core.max_image_pixels)
            header = request.compressed_image.header
        token = self._waiting.new_token()
        arrival = self._clock.arrival(
            header.stamp.sec * 10 ** 9 + header.stamp.nanosec,
            core.node.get_clock().now().nanoseconds, bound_ms=goal.latency_ms)
        core.runtime.submit(CLASSIFY_TENANT, decoded.pixels, stamp_s=arrival.runtime_stamp_s,
                            frame_id=token, encoding=decoded.encoding, goal=goal,
                            token=header)
        timeout = (goal.latency_ms or 1000.0) * 1e-3 + _GRACE_S
        result = self._waiting.wait(token, timeout)
        if result is None:
            raise TimeoutError(f'no answer within {timeout:.1f} s (server stopping or '
                               'overloaded)')
        message = core.result_message(result)
        message.tenant = request.tenant or 'classify'
        return message

    def _request_goal(self, text: str, tenant: str) -> Goal:
        core = self._core
        if tenant and tenant not in core.tenant_names():
            raise KeyError(f'unknown tenant {tenant!r} (tenants: '
                           f'{", ".join(core.tenant_names()) or "none"})')
        if text.strip():
            goal = parse_goal(text)
        elif tenant:
            goal = core.tenant_goal(tenant)
        else:
            goal = Goal.latency(core.fallback_latency_ms)
        return goal.check_reachable(core.runtime.profile.max_accuracy)

    def _add_tenant_callback(self, request, response):
        try:
            given = {p.name: parameter_value_to_python(p.value) for p in request.parameters}
            response.message = self._core.add_tenant(request.name, given)
            response.success = True
        except Exception as error:  # noqa: B902 - any refusal is the caller's answer
            response.success = False
            response.message = f'tenant {request.name!r} not added: {error}'
        return response

    def _remove_tenant_callback(self, request, response):
        try:
            response.final_status = self._core.remove_tenant(request.name)
            response.success = True
            response.message = (f'tenant {request.name} removed after '
                                f'{response.final_status.frames_served} answers')
        except KeyError as error:
            response.success, response.message = False, str(error.args[0])
        return response

    def diagnostic_values(self) -> Dict[str, object]:
        """Values for the server's /diagnostics entry."""
        return {'classify_requests': self.requests, 'classify_errors': self.errors,
                'classify_last_error': self.last_error}
