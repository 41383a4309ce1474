"""
The camera node: sensor_msgs/Image frames at ``rate_hz`` with a deadline QoS offered.

Frames come from ``delen_ros.nodes.frame_sources`` (Fashion-MNIST test set, a folder of
image files, or a video device through OpenCV). Each frame is stamped with now() when it is
captured; labelled sources also publish a GroundTruth with the same header on
``<topic>/ground_truth``. The offered deadline (``deadline_ms``, by default the frame period)
is what the serving node takes as a tenant's latency bound when its ``latency_ms`` is 0.
"""

import collections
import threading
import time
from typing import Optional

from delen_ros.imaging import fill_image, ImageFormatError
from delen_ros.msg import GroundTruth
from delen_ros.nodes.descriptors import (bool_parameter, float_parameter, INT32_MAX,
                                         int_parameter, string_parameter)
from delen_ros.nodes.frame_sources import (convert, ENCODINGS, FrameError, open_source,
                                           SourceError)
from delen_ros.nodes.spin import run_node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

try:
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks

__all__ = ['CameraNode', 'main']

# Frames kept in flight by the reliable ground-truth publisher.
_TRUTH_DEPTH = 50
# After the last frame the image publisher lingers this long, then goes (so subscribers stop
# counting missed deadlines).
_LINGER_S = 1.0


class CameraNode(Node):
    """Publish frames of a source as sensor_msgs/Image at ``rate_hz``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_camera'), **kwargs)
        declare = self.declare_parameter
        declare('source', 'fashion_mnist', string_parameter(
            'where frames come from: fashion_mnist, folder:<path> or video:<index or path>',
            constraints='fashion_mnist | folder:<path> | video:<index or path>',
            read_only=True))
        declare('rate_hz', 10.0, float_parameter('frames per second', 0.1, 1000.0, 0.01))
        declare('deadline_ms', 0.0, float_parameter(
            'deadline QoS offered on the image topic, ms; 0: the frame period 1000/rate_hz',
            0.0, 60000.0, 0.1))
        declare('frame_id', 'camera', string_parameter('header.frame_id of every frame'))
        declare('topic', 'camera/image', string_parameter(
            'image topic; ground truth goes to <topic>/ground_truth', read_only=True))
        declare('encoding', 'mono8', string_parameter(
            'published encoding (frames are converted)', choices=ENCODINGS))
        declare('max_frames', 0, int_parameter(
            'stop after this many frames; 0: no limit', 0, INT32_MAX))
        declare('start_index', 0, int_parameter(
            'first frame (position in the data set or folder order)', 0, INT32_MAX,
            read_only=True))
        declare('shuffle', False, bool_parameter(
            'data set / folder in a random order drawn from seed', read_only=True))
        declare('seed', 0, int_parameter('seed of the shuffled order', 0, INT32_MAX,
                                         read_only=True))
        declare('loop', True, bool_parameter(
            'start again at the first frame when a data set or folder ends'))
        declare('qos_depth', 2, int_parameter(
            'history depth of the best-effort image publisher (sensor data style)', 1, 5,
            read_only=True))
        declare('diagnostics_period_s', 1.0, float_parameter(
            'period of the /diagnostics status', 0.1, 60.0, 0.1, read_only=True))

        value = self._value
        self._rate_hz = float(value('rate_hz'))
        self._deadline_param_ms = float(value('deadline_ms'))
        problem = _deadline_problem(self._rate_hz, self._deadline_param_ms)
        if problem:
            raise ValueError(problem)
        self._frame_id = str(value('frame_id'))
        self._encoding = str(value('encoding'))
        if self._encoding not in ENCODINGS:
            raise ValueError(f'encoding must be one of {", ".join(ENCODINGS)}, '
                             f'got {self._encoding!r}')
        self._max_frames = int(value('max_frames'))
        self._source = open_source(
            value('source'), start_index=value('start_index'), shuffle=value('shuffle'),
            seed=value('seed'), loop=value('loop'))

        self._lock = threading.Lock()
        self._published = 0
        self._failed = 0
        self._last_failure = ''
        self._incompatible_qos = 0
        self._done = ''            # why publishing stopped ('' while running)
        self._done_kind = ''       # 'max_frames' or 'end' once stopped
        self._done_at = 0.0
        self._window = collections.deque(maxlen=512)  # monotonic publish times
        topic = str(value('topic'))
        self._image_qos_depth = int(value('qos_depth'))
        self._image_topic = topic
        self._image_publisher = None
        self._offered_deadline_ms: Optional[float] = None
        self._create_image_publisher()
        self._truth_publisher = None
        if self._source.labelled:
            self._truth_publisher = self.create_publisher(
                GroundTruth, topic.rstrip('/') + '/ground_truth',
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=_TRUTH_DEPTH,
                           reliability=ReliabilityPolicy.RELIABLE))
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._frame_timer = self.create_timer(
            1.0 / self._rate_hz, self._frame_callback,
            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(float(value('diagnostics_period_s')), self._diagnostics_callback,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._parameters_callback)
        self.get_logger().info(
            f'publishing {self._source.describe()} on {self._image_publisher.topic_name} at '
            f'{self._rate_hz:g} Hz, {self._encoding}, offered deadline '
            f'{self._offered_deadline_ms:g} ms'
            + (f', ground truth on {self._truth_publisher.topic_name}'
               if self._truth_publisher else ''))

    # -- set-up ------------------------------------------------------------------------------

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _create_image_publisher(self) -> None:
        """(Re)create the image publisher with the deadline that rate and deadline_ms give."""
        deadline_ms = _offered_deadline_ms(self._rate_hz, self._deadline_param_ms)
        if self._image_publisher is not None and deadline_ms == self._offered_deadline_ms:
            return
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._image_qos_depth,
                         reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE,
                         deadline=Duration(nanoseconds=int(round(deadline_ms * 1e6))))
        # No callback for the publisher's own offered-deadline-missed event: with the default
        # deadline (exactly the frame period) timer jitter raises it, and under load its
        # callbacks starved the frame timer (a stall that fed itself). Missed deadlines are
        # counted where they matter, by the subscribers (the server's diagnostics).
        events = PublisherEventCallbacks(incompatible_qos=self._incompatible_qos_callback)
        old = self._image_publisher
        self._image_publisher = self.create_publisher(Image, self._image_topic, qos,
                                                      event_callbacks=events)
        self._offered_deadline_ms = deadline_ms
        if old is not None:
            self.destroy_publisher(old)
            self.get_logger().info(f'offered deadline now {deadline_ms:g} ms')

    # -- callbacks ---------------------------------------------------------------------------

    def _frame_callback(self) -> None:
        with self._lock:
            if self._done:
                self._linger_or_close()
                return
            try:
                frame = self._source.read()
            except FrameError as error:
                self._fail(str(error))
                return
            except Exception as error:  # noqa: B902 - a bad frame must never stop the node
                self._fail(f'unexpected: {type(error).__name__}: {error}')
                return
            stamp = self.get_clock().now().to_msg()  # capture time
            if frame is None:
                self._finish('end', 'the source ended (loop is false)')
                return
            try:
                msg = fill_image(Image(), convert(frame.pixels, frame.channels, self._encoding),
                                 encoding=self._encoding, frame_id=self._frame_id, stamp=stamp)
            except (ImageFormatError, ValueError) as error:
                self._fail(f'frame {frame.index}: {error}')
                return
            if self._truth_publisher is not None and frame.class_id is not None:
                # First, so that a subscriber usually has the label before the image.
                self._truth_publisher.publish(GroundTruth(
                    header=Header(stamp=stamp, frame_id=self._frame_id),
                    class_id=int(frame.class_id), label=frame.label))
            self._image_publisher.publish(msg)
            self._published += 1
            self._window.append(time.monotonic())
            if self._max_frames and self._published >= self._max_frames:
                self._finish('max_frames', f'max_frames {self._max_frames} reached')

    def _fail(self, text: str) -> None:
        self._failed += 1
        self._last_failure = text
        self.get_logger().warning(f'frame skipped: {text}', throttle_duration_sec=5.0)

    def _finish(self, kind: str, why: str) -> None:
        self._done_kind = kind
        self._done = why
        self._done_at = time.monotonic()
        self.get_logger().info(f'published {self._published} frames; stopped: {why}')

    def _linger_or_close(self) -> None:
        """Destroy the image publisher a moment after the last frame."""
        if self._image_publisher is not None and \
                time.monotonic() - self._done_at >= _LINGER_S:
            self.destroy_publisher(self._image_publisher)
            self._image_publisher = None

    def _resume(self) -> None:
        """Publish again after a stop (max_frames raised, loop switched on)."""
        self._done = self._done_kind = ''
        if self._image_publisher is None:
            self._offered_deadline_ms = None
            self._create_image_publisher()
        self.get_logger().info('publishing again')

    def _incompatible_qos_callback(self, event) -> None:
        self._incompatible_qos = int(event.total_count)
        self.get_logger().warning(
            f'a subscriber of {self._image_topic} requests a QoS this publisher does not offer '
            f'(policy id {event.last_policy_kind}; offered: best effort, deadline '
            f'{self._offered_deadline_ms:g} ms)', throttle_duration_sec=10.0)

    def _parameters_callback(self, parameters) -> SetParametersResult:
        """Check rate, deadline and encoding together; apply the accepted values at once."""
        new = {p.name: p.value for p in parameters}
        rate = float(new.get('rate_hz', self._rate_hz))
        deadline = float(new.get('deadline_ms', self._deadline_param_ms))
        problem = _deadline_problem(rate, deadline)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        encoding = new.get('encoding', self._encoding)
        if encoding not in ENCODINGS:
            return SetParametersResult(
                successful=False,
                reason=f'encoding must be one of {", ".join(ENCODINGS)}, got {encoding!r}')
        with self._lock:
            self._encoding = encoding
            self._frame_id = str(new.get('frame_id', self._frame_id))
            if rate != self._rate_hz:
                self._rate_hz = rate
                self._frame_timer.timer_period_ns = int(round(1e9 / rate))
            self._deadline_param_ms = deadline
            if self._image_publisher is not None:
                self._create_image_publisher()
            if 'loop' in new and hasattr(self._source, 'loop'):
                self._source.loop = bool(new['loop'])
            self._max_frames = int(new.get('max_frames', self._max_frames))
            if self._done_kind == 'max_frames' and (
                    not self._max_frames or self._published < self._max_frames):
                self._resume()
            elif self._done_kind == 'end' and new.get('loop') is True:
                self._resume()
        return SetParametersResult(successful=True)

    def _diagnostics_callback(self) -> None:
        with self._lock:
            now = time.monotonic()
            window = [t for t in self._window if now - t <= 5.0]
            achieved = (len(window) - 1) / (window[-1] - window[0]) \
                if len(window) > 2 and window[-1] > window[0] else 0.0
            values = {
                'source': self._source.describe(),
                'topic': self._image_publisher.topic_name if self._image_publisher
                else self._image_topic,
                'encoding': self._encoding, 'frame_id': self._frame_id,
                'rate_hz': f'{self._rate_hz:g}', 'rate_achieved_hz': f'{achieved:.2f}',
                'frames_published': self._published, 'frames_failed': self._failed,
                'last_failure': self._last_failure,
                'offered_deadline_ms': '' if self._image_publisher is None
                else f'{self._offered_deadline_ms:g}',
                'incompatible_qos': self._incompatible_qos,
                'ground_truth': self._truth_publisher.topic_name if self._truth_publisher
                else '',
                'max_frames': self._max_frames, 'done': self._done,
            }
            level, problems = DiagnosticStatus.OK, []
            if self._done:
                message = f'stopped after {self._published} frames: {self._done}'
            else:
                message = f'{self._published} frames published'
                if len(window) > 2 and achieved < 0.8 * self._rate_hz:
                    level = DiagnosticStatus.WARN
                    problems.append(f'rate {achieved:.1f} Hz below {self._rate_hz:g} Hz')
            if self._failed:
                level = DiagnosticStatus.WARN
                problems.append(f'{self._failed} frames failed (last: {self._last_failure})')
            if self._incompatible_qos:
                level = DiagnosticStatus.WARN
                problems.append('a subscriber requests an incompatible QoS')
        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: camera',
            hardware_id=self.get_fully_qualified_name(),
            message='; '.join([message] + problems),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self._diagnostics.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        """Release the source (files, device) with the node."""
        source = getattr(self, '_source', None)  # absent when the constructor failed
        if source is not None:
            source.close()
        super().destroy_node()


def _offered_deadline_ms(rate_hz: float, deadline_ms: float) -> float:
    return deadline_ms if deadline_ms > 0 else 1000.0 / rate_hz


def _deadline_problem(rate_hz: float, deadline_ms: float) -> str:
    """Say why a rate and an offered deadline do not go together ('' when they do)."""
    if not rate_hz > 0:
        return f'rate_hz must be positive, got {rate_hz:g}'
    period_ms = 1000.0 / rate_hz
    if 0 < deadline_ms < period_ms * (1 - 1e-9):
        return (f'deadline_ms {deadline_ms:g} is shorter than the frame period '
                f'{period_ms:g} ms of rate_hz {rate_hz:g}: every frame would miss it '
                f'(0: offer the frame period)')
    return ''


def main(args=None) -> int:
    """Run the node (ros2 run delen_ros camera)."""
    return run_node(CameraNode, name='delen_camera',
                    startup_errors=(SourceError, ValueError, ParameterException), args=args)
