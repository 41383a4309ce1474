"""
Adversarial inputs for delen_server: malformed image classes and a parameter fuzz.

One catalogue for bench/bench_soak.py (many rounds, timed) and the always-run subset
(test/test_adversarial_server.py: every class once, every parameter kind once).

Image classes say what the server must do with them: ``rejected`` (bad input, counted in
frames_rejected), ``served`` (odd but valid: answered) or ``accounted`` (any outcome, as long
as the frame is counted in frames_received). None may take the server down.
"""

import array
import collections
from dataclasses import dataclass
import math
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from delen_ros.msg import TenantStatus
from node_harness import wait_for
import numpy as np
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

__all__ = ['ImageClass', 'POLICY_NAMES', 'ServerWatch', 'fuzz_requests', 'fuzz_values',
           'image_classes', 'policy_strings', 'send_class', 'set_request']

UINT32_MAX = 2 ** 32 - 1
# Policy names the fuzz draws from besides the server's own (unknown ones must be refused).
POLICY_NAMES = ('budget', 'static', 'confidence', 'alert', 'alert_plus', 'app_only',
                'sys_only', 'no_such_policy', 'BUDGET', '')
_POLICY_KEYS = ('exit_index', 'threads', 'threshold', 'accuracy_margin', 'gain', 'bogus')
_POLICY_VALUES = ('-99', '99', '-1', '0', '1', '3', '1024', '0.5', '1e9', '-1e9', 'nan', 'inf',
                  '-inf', 'true', 'none', 'abc', '')


@dataclass(frozen=True)
class ImageClass:
    """One kind of image the server may receive, how to build it, and what must happen."""

    name: str
    expect: str
    build: Callable[[np.ndarray], Image]

    def message(self, frame: np.ndarray, *, frame_id: str, stamp) -> Image:
        """Build the message; set stamp and frame_id unless the class sets its own."""
        msg = self.build(frame)
        if not msg.header.frame_id:
            msg.header.frame_id = frame_id
        if msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0 \
                and 'zero stamp' not in self.name:
            msg.header.stamp = stamp
        return msg


def _image(height, width, encoding, step, data, *, is_bigendian=0) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=is_bigendian)
    msg.data = array.array('B', bytes(data))
    return msg


def _pixels(frame, encoding) -> Image:
    """Build a valid image of the frame in the given encoding (rows without padding)."""
    gray = np.asarray(frame, dtype=np.uint8)
    channels = {'mono8': 1, '8UC1': 1, 'rgb8': 3, 'bgr8': 3, '8UC3': 3, 'rgba8': 4,
                'bgra8': 4, 'mono16': 1, '16UC1': 1, 'rgb16': 3}[encoding]
    values = gray if channels == 1 else np.repeat(gray[:, :, None], channels, axis=2)
    if encoding in ('mono16', '16UC1', 'rgb16'):
        values = values.astype('<u2') * 257
    height, width = gray.shape
    data = np.ascontiguousarray(values).tobytes()
    return _image(height, width, encoding, len(data) // height, data)


def _with(msg: Image, **fields) -> Image:
    for name, value in fields.items():
        if name == 'data':
            msg.data = array.array('B', bytes(value))
        elif name == 'stamp':
            msg.header.stamp.sec, msg.header.stamp.nanosec = value
        elif name == 'frame_id':
            msg.header.frame_id = value
        else:
            setattr(msg, name, value)
    return msg


def _padded(frame, pad) -> Image:
    gray = np.asarray(frame, dtype=np.uint8)
    rows = np.zeros((gray.shape[0], gray.shape[1] + pad), dtype=np.uint8)
    rows[:, :gray.shape[1]] = gray
    return _image(gray.shape[0], gray.shape[1], 'mono8', rows.shape[1], rows.tobytes())


def _resized(frame, height, width) -> Image:
    gray = np.asarray(frame, dtype=np.uint8)
    rows = np.linspace(0, gray.shape[0] - 1, height).astype(int)
    cols = np.linspace(0, gray.shape[1] - 1, width).astype(int)
    values = np.ascontiguousarray(gray[rows][:, cols])
    return _image(height, width, 'mono8', width, values.tobytes())


def _rejected() -> List[Tuple[str, Callable[[np.ndarray], Image]]]:
    n = 28 * 28
    return [
        ('unknown encoding yuv9', lambda f: _with(_pixels(f, 'mono8'), encoding='yuv9')),
        ('empty encoding', lambda f: _with(_pixels(f, 'mono8'), encoding='')),
        ('encoding with a trailing space', lambda f: _with(_pixels(f, 'mono8'),
                                                           encoding='mono8 ')),
        ('encoding in upper case', lambda f: _with(_pixels(f, 'mono8'), encoding='MONO8')),
        ('non-ASCII encoding', lambda f: _with(_pixels(f, 'mono8'), encoding='mono8\u00e9\u6f22')),
        ('10 kB encoding name', lambda f: _with(_pixels(f, 'mono8'), encoding='x' * 10000)),
        ('float encoding 64FC1', lambda f: _image(28, 28, '64FC1', 28 * 8, bytes(n * 8))),
        ('zero height', lambda f: _with(_pixels(f, 'mono8'), height=0)),
        ('zero width', lambda f: _with(_pixels(f, 'mono8'), width=0)),
        ('zero height and width, no data', lambda f: _image(0, 0, 'mono8', 0, b'')),
        ('step smaller than a row', lambda f: _with(_pixels(f, 'mono8'), step=20)),
        ('step zero', lambda f: _with(_pixels(f, 'mono8'), step=0)),
        ('data 100 bytes', lambda f: _with(_pixels(f, 'mono8'), data=bytes(100))),
        ('no data', lambda f: _with(_pixels(f, 'mono8'), data=b'')),
        ('data one byte short', lambda f: _with(_pixels(f, 'mono8'), data=bytes(n - 1))),
        ('5000x5000 header, 16 bytes', lambda f: _image(5000, 5000, 'mono8', 5000, bytes(16))),
        ('height uint32 max', lambda f: _with(_pixels(f, 'mono8'), height=UINT32_MAX)),
        ('65536x65536 (2^32 pixels)', lambda f: _image(65536, 65536, 'mono8', 65536, bytes(16))),
        ('step uint32 max', lambda f: _with(_pixels(f, 'mono8'), step=UINT32_MAX)),
        ('1 x 2^24+1 strip', lambda f: _image(1, 2 ** 24 + 1, 'mono8', 2 ** 24 + 1, bytes(64))),
        ('1 x 10^6 strip, data short', lambda f: _image(1, 10 ** 6, 'mono8', 10 ** 6,
                                                        bytes(1000))),
        ('rgb8 header, mono8 data', lambda f: _with(_pixels(f, 'mono8'), encoding='rgb8',
                                                    step=28 * 3)),
        ('mono16 header, mono8 data', lambda f: _with(_pixels(f, 'mono8'), encoding='mono16',
                                                      step=56)),
        ('mono16, is_bigendian 2', lambda f: _with(_pixels(f, 'mono16'), is_bigendian=2)),
        ('mono16, is_bigendian 255', lambda f: _with(_pixels(f, 'mono16'), is_bigendian=255)),
        ('bgra8 step one byte short', lambda f: _with(_pixels(f, 'bgra8'), step=28 * 4 - 1)),
        ('8UC3 data short', lambda f: _with(_pixels(f, '8UC3'), data=bytes(n))),
        ('16UC1 step too small', lambda f: _with(_pixels(f, '16UC1'), step=28)),
        ('rgb16 data short', lambda f: _with(_pixels(f, 'rgb16'), data=bytes(n * 3))),
    ]


def _served() -> List[Tuple[str, Callable[[np.ndarray], Image]]]:
    return [
        ('1x1 mono8', lambda f: _resized(f, 1, 1)),
        ('3x5 mono8', lambda f: _resized(f, 3, 5)),
        ('1x512 strip', lambda f: _resized(f, 1, 512)),
        ('512x2 column', lambda f: _resized(f, 512, 2)),
        ('256x256 mono8', lambda f: _resized(f, 256, 256)),
        ('rows padded to 32 bytes', lambda f: _padded(f, 4)),
        ('rows padded by 1000 bytes', lambda f: _padded(f, 1000)),
        ('data longer than step x height', lambda f: _with(_pixels(f, 'mono8'),
                                                           data=bytes(28 * 28 * 2))),
        ('rgb8', lambda f: _pixels(f, 'rgb8')),
        ('bgr8', lambda f: _pixels(f, 'bgr8')),
        ('rgba8', lambda f: _pixels(f, 'rgba8')),
        ('bgra8', lambda f: _pixels(f, 'bgra8')),
        ('8UC1', lambda f: _pixels(f, '8UC1')),
        ('8UC3', lambda f: _pixels(f, '8UC3')),
        ('mono16 little-endian', lambda f: _pixels(f, 'mono16')),
        ('mono16 big-endian flag', lambda f: _with(_pixels(f, 'mono16'), is_bigendian=1)),
        ('16UC1', lambda f: _pixels(f, '16UC1')),
        ('rgb16', lambda f: _pixels(f, 'rgb16')),
        ('all zeros', lambda f: _pixels(np.zeros_like(f), 'mono8')),
        ('all 255', lambda f: _pixels(np.full_like(f, 255), 'mono8')),
    ]


def _accounted() -> List[Tuple[str, Callable[[np.ndarray], Image]]]:
    return [
        ('zero stamp', lambda f: _with(_pixels(f, 'mono8'), stamp=(0, 0))),
        ('stamp an hour ahead', lambda f: _future(_pixels(f, 'mono8'), 3600)),
        ('stamp in 1970', lambda f: _with(_pixels(f, 'mono8'), stamp=(1, 0))),
        ('stamp nanosec 999999999', lambda f: _with(_pixels(f, 'mono8'),
                                                    stamp=(1, 999999999))),
        ('negative stamp seconds', lambda f: _with(_pixels(f, 'mono8'), stamp=(-5, 0))),
        ('10 kB frame_id', lambda f: _with(_pixels(f, 'mono8'), frame_id='f' * 10000)),
        ('non-ASCII frame_id', lambda f: _with(_pixels(f, 'mono8'),
                                               frame_id='kam\u011bra_\u6f22\u5b57')),
    ]


def _future(msg: Image, seconds: float) -> Image:
    now = time.time() + seconds
    msg.header.stamp.sec = int(now)
    msg.header.stamp.nanosec = int((now % 1.0) * 1e9)
    return msg


def send_class(image_class: ImageClass, frame: np.ndarray, frame_id: str, *,
               publish: Callable[[Image], None], status: Callable[[], Any],
               answered: Callable[[str], bool], stamp: Callable[[], Any],
               timeout: float = 10.0) -> str:
    """
    Send one image of a class until the server counts it; return what the server did.

    ``status()`` returns the tenant's latest TenantStatus (None before the first), which must
    already count every earlier frame; ``answered(frame_id)`` says whether a final answer
    for that frame has arrived. The outcome is the class's ``expect`` when the server
    behaved, else a word saying what it did.
    """
    before = status()
    if before is None:
        return 'no status'

    def counted():
        latest = status()
        return latest if latest.frames_received > before.frames_received else None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        publish(image_class.message(frame, frame_id=frame_id, stamp=stamp()))
        latest = wait_for(counted, 1.0, interval=0.01)
        if latest is None:
            continue  # best effort: lost on the way, send it again
        if image_class.expect == 'accounted':
            return 'accounted'
        if latest.frames_rejected > before.frames_rejected:
            return 'rejected'
        if image_class.expect == 'rejected':
            return 'not rejected'
        if wait_for(lambda: answered(frame_id), end - time.monotonic(), interval=0.01):
            return 'served'
        return 'counted, not answered'
    return 'never counted'


def image_classes() -> Tuple[ImageClass, ...]:
    """Every image class, malformed and odd-but-valid (at least 35 of them)."""
    return tuple([ImageClass(name, 'rejected', build) for name, build in _rejected()]
                 + [ImageClass(name, 'served', build) for name, build in _served()]
                 + [ImageClass(name, 'accounted', build) for name, build in _accounted()])


# -- parameter fuzz ------------------------------------------------------------------------

def policy_strings(rng: random.Random, count: int,
                   names: Sequence[str] = POLICY_NAMES) -> List[str]:
    """Policy strings, well- and ill-formed: names with random key=value arguments."""
    fixed = ['static:exit_index=99', 'static:exit_index=-99', 'budget:threads=1024',
             'budget:threads=0', 'confidence:threshold=nan', 'budget:', ':', 'budget:=1',
             'budget:threads', 'static:exit_index=1,exit_index=2', '   ', 'budget,,',
             'static:exit_index=1.5', 'confidence:threshold=2']
    out = fixed[:count]
    while len(out) < count:
        items = [f'{rng.choice(_POLICY_KEYS)}={rng.choice(_POLICY_VALUES)}'
                 for _ in range(rng.randint(0, 2))]
        name = rng.choice(names)
        out.append(f'{name}:{",".join(items)}' if items else name)
    return out


def _numbers(rng, low, high, integer):
    span = (high - low) if high is not None else 100.0
    low = 0.0 if low is None else low
    values = [low, low + span, low - 1, low + span + 1, -1, 0, rng.uniform(low, low + span)]
    if integer:
        return [int(v) for v in values] + [2 ** 63 - 1, -2 ** 63]
    return values + [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]


def fuzz_values(name: str, descriptor, rng: random.Random, *,
                policies: Sequence[str] = POLICY_NAMES) -> List[Any]:
    """
    List values to throw at one parameter.

    Of its type (in range, at and past the bounds, odd floats), of other types, and for
    string parameters policy, goal and priority strings.
    """
    kind = descriptor.type
    wrong = ['text', True, [1, 2], ['a', 'b']]
    if kind == ParameterType.PARAMETER_DOUBLE:
        ranges = descriptor.floating_point_range
        low, high = (ranges[0].from_value, ranges[0].to_value) if ranges else (None, None)
        return _numbers(rng, low, high, False) + [7] + wrong
    if kind == ParameterType.PARAMETER_INTEGER:
        ranges = descriptor.integer_range
        low, high = (ranges[0].from_value, ranges[0].to_value) if ranges else (None, None)
        return _numbers(rng, low, high, True) + [1.5] + wrong
    if kind == ParameterType.PARAMETER_BOOL:
        return [True, False, 1, 'true', 0.0]
    if kind == ParameterType.PARAMETER_STRING:
        text = ['', ' ', 'x' * 5000, '\u6f22\u5b57', 'latency', 'accuracy', 'energy',
                'drop', 'serve_first_exit', 'none', 'nice:5', 'realtime:99', 'realtime:-1']
        if name.endswith('policy'):
            text = policy_strings(rng, 20, names=tuple(policies) + POLICY_NAMES) + text
        return text + [3, 2.5, False]
    if kind == ParameterType.PARAMETER_STRING_ARRAY:
        return [[], ['a'], ['x' * 1000] * 10, 'text', 1]
    return ['text', 1, 2.5, True]


def fuzz_requests(descriptors: Dict[str, Any], rng: random.Random, *,
                  per_parameter: Optional[int] = None,
                  policies: Sequence[str] = POLICY_NAMES) -> List[List[Tuple[str, Any]]]:
    """
    Build requests (lists of name, value) for the writable parameters of ``descriptors``.

    Every fuzz value of every parameter alone (or ``per_parameter`` of them, drawn), then a
    quarter as many requests that set three parameters at once, shuffled.
    """
    writable = {name: d for name, d in sorted(descriptors.items()) if not d.read_only}
    requests = []
    for name, descriptor in writable.items():
        values = fuzz_values(name, descriptor, rng, policies=policies)
        if per_parameter is not None:
            values = rng.sample(values, min(per_parameter, len(values)))
        requests += [[(name, value)] for value in values]
    names = list(writable)
    for _ in range(len(requests) // 4 if len(names) >= 3 else 0):
        requests.append([(name, rng.choice(fuzz_values(name, writable[name], rng,
                                                       policies=policies)))
                         for name in rng.sample(names, 3)])
    rng.shuffle(requests)
    return requests


def set_request(pairs: Sequence[Tuple[str, Any]]) -> SetParameters.Request:
    """Return a SetParameters request; each value typed as rclpy types Python values."""
    return SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()
                                             for name, value in pairs])


class ServerWatch:
    """The TenantStatus of some tenants and the server's parameter services, on a node."""

    def __init__(self, node, tenants: Sequence[str], *, server: str = '/delen_server'):
        self._lock = threading.Lock()
        self._status: Dict[str, Any] = {}
        self._count: Dict[str, int] = collections.Counter()
        for tenant in tenants:
            node.create_subscription(TenantStatus, f'/delen/{tenant}/status',
                                     self._status_callback, 10)
        self._clients = {kind: node.create_client(kind, f'{server}/{name}')
                         for kind, name in ((SetParameters, 'set_parameters'),
                                            (GetParameters, 'get_parameters'),
                                            (ListParameters, 'list_parameters'),
                                            (DescribeParameters, 'describe_parameters'))}

    def _status_callback(self, msg) -> None:
        with self._lock:
            self._status[msg.tenant] = msg
            self._count[msg.tenant] += 1

    def latest_status(self, tenant: str):
        """Return the tenant's latest status (None before the first)."""
        with self._lock:
            return self._status.get(tenant)

    def fresh_status(self, tenant: str, timeout: float = 10.0):
        """Return the first status of tenant published after this call (None on timeout)."""
        with self._lock:
            seen = self._count[tenant]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._count[tenant] > seen + 1:  # two on: the second is surely newer
                    return self._status[tenant]
            time.sleep(0.02)
        return None

    def call(self, kind, request, *, timeout: float = 60.0, process=None):
        """Call a parameter service; None without an answer in time or once process ends."""
        client = self._clients[kind]
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end and (
                process is None or process.poll() is None):
            time.sleep(0.002)
        return future.result() if future.done() else None

    def descriptors(self) -> Dict[str, Any]:
        """Return every parameter's descriptor by name (empty if the server does not answer)."""
        names = self.call(ListParameters, ListParameters.Request())
        if names is None:
            return {}
        described = self.call(DescribeParameters,
                              DescribeParameters.Request(names=list(names.result.names)))
        return {} if described is None else {d.name: d for d in described.descriptors}
