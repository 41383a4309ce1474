"""The camera node across processes: frames in order, ground truth, deadline QoS, parameters."""

import os
import subprocess
import threading

from delen_ros.imaging import image_to_array
from delen_ros.msg import GroundTruth
from delen_ros.nodes.frame_sources import fashion_mnist_module
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import installed_executable, Probe, start_node, stop_node, TIMEOUT_S, wait_for
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

START_INDEX = 20
MAX_FRAMES = 300  # 6 s at 50 Hz: the first second or two go by before discovery


def _stamp(header):
    return (header.stamp.sec, header.stamp.nanosec)


class Recorder:
    """Test-side subscriber of one camera's images, ground truth and diagnostics."""

    def __init__(self, name, topic, status_name):
        self.probe = Probe(name)
        self.status_name = status_name
        self.lock = threading.Lock()
        self.images, self.truths, self.statuses = [], {}, []
        node = self.probe.node
        node.create_subscription(
            Image, topic, self._image_callback,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                       reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(
            GroundTruth, topic + '/ground_truth', self._truth_callback,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE))
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback,
                                 50)

    def _image_callback(self, msg):
        with self.lock:
            self.images.append(msg)

    def _truth_callback(self, msg):
        with self.lock:
            self.truths[_stamp(msg.header)] = msg

    def _diagnostics_callback(self, msg):
        with self.lock:
            self.statuses += [s for s in msg.status if s.name == self.status_name]

    def status(self, predicate):
        """Return the values of the latest status that satisfies predicate, else None."""
        with self.lock:
            for status in reversed(self.statuses):
                values = {kv.key: kv.value for kv in status.values}
                if predicate(values):
                    return values
        return None

    def close(self):
        self.probe.close()


@pytest.fixture(scope='module')
def frames(tmp_path_factory):
    """Run a Fashion-MNIST camera to max_frames with a subscriber listening throughout."""
    folder = tmp_path_factory.mktemp('camera_frames')
    recorder = Recorder('camera_test_frames', '/cam_frames/image', 'cam_frames: camera')
    process = start_node(
        'camera', '-r', '__node:=cam_frames', '-p', 'topic:=/cam_frames/image',
        '-p', 'rate_hz:=50.0', '-p', f'max_frames:={MAX_FRAMES}', '-p', 'deadline_ms:=40.0',
        '-p', f'start_index:={START_INDEX}', '-p', 'frame_id:=test_camera',
        '-p', 'diagnostics_period_s:=0.2', log_path=folder / 'camera.log')
    try:
        # While it publishes (the publisher goes a second after the last frame).
        recorder.offered = wait_for(
            lambda: _offered_deadlines_ms(recorder.probe, '/cam_frames/image') == [40.0],
            interval=0.05) or _offered_deadlines_ms(recorder.probe, '/cam_frames/image')
        done = wait_for(lambda: recorder.status(
            lambda v: v['frames_published'] == str(MAX_FRAMES) and v['done']))
        assert done, 'camera did not report max_frames published:\n' + \
            (folder / 'camera.log').read_text()
        # Everything published is either delivered or lost by now; wait for the reliable
        # ground truth of the received images to catch up.
        wait_for(lambda: recorder.images and all(
            _stamp(image.header) in recorder.truths for image in recorder.images[-5:]), 10.0)
        yield recorder, done
    finally:
        code = stop_node(process)
        recorder.close()
        assert code == 0, f'camera exited with {code}:\n' + (folder / 'camera.log').read_text()


def test_images_are_the_test_set_in_order_with_ground_truth(frames):
    recorder, status = frames
    fashion_mnist = fashion_mnist_module()
    images, labels = fashion_mnist.load('test')
    expected = images[START_INDEX:START_INDEX + MAX_FRAMES]
    with recorder.lock:
        received = list(recorder.images)
        truths = dict(recorder.truths)
    assert len(received) >= 10, f'only {len(received)} of {MAX_FRAMES} frames arrived'
    position, labelled = -1, 0
    for msg in received:
        assert (msg.encoding, msg.height, msg.width) == ('mono8', 28, 28)
        assert msg.header.frame_id == 'test_camera'
        pixels = image_to_array(msg)
        following = [p for p in range(position + 1, len(expected))
                     if np.array_equal(expected[p], pixels)]
        assert following, f'image {_stamp(msg.header)} is not a later test image'
        position = following[0]
        truth = truths.get(_stamp(msg.header))
        if truth is not None:
            labelled += 1
            index = START_INDEX + position
            assert truth.class_id == labels[index], f'wrong label for test image {index}'
            assert truth.label == fashion_mnist.CLASS_NAMES[labels[index]]
            assert truth.header.frame_id == 'test_camera'
    assert labelled >= len(received) // 2, 'ground truth missing for most received frames'
    assert status['frames_failed'] == '0'
    assert status['ground_truth'] == '/cam_frames/image/ground_truth'


def test_explicit_deadline_is_offered(frames):
    recorder, status = frames
    assert recorder.offered is True, f'offered deadlines {recorder.offered}, expected [40.0]'
    assert status['offered_deadline_ms'] in ('40', '')  # '' once the publisher is gone


@pytest.fixture(scope='module')
def qos_camera(tmp_path_factory):
    folder = tmp_path_factory.mktemp('camera_qos')
    probe = Probe('camera_test_qos')
    process = start_node('camera', '-r', '__node:=cam_qos', '-p', 'topic:=/cam_qos/image',
                         '-p', 'rate_hz:=20.0', log_path=folder / 'camera.log')
    yield probe
    code = stop_node(process)
    probe.close()
    assert code == 0, f'camera exited with {code}:\n' + (folder / 'camera.log').read_text()


def _offered_deadlines_ms(probe, topic):
    infos = probe.node.get_publishers_info_by_topic(topic)
    return [info.qos_profile.deadline.nanoseconds / 1e6 for info in infos]


def _wait_offered(probe, topic, deadline_ms):
    return wait_for(lambda: _offered_deadlines_ms(probe, topic) == [deadline_ms], interval=0.1)


def _set(probe, **values):
    client = getattr(probe, 'set_client', None)
    if client is None:
        client = probe.set_client = probe.node.create_client(SetParameters,
                                                             '/cam_qos/set_parameters')
    parameters = []
    for name, value in values.items():
        if isinstance(value, float):
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                             double_value=value)
        else:
            parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING,
                                             string_value=value)
        parameters.append(Parameter(name=name, value=parameter_value))
    return list(probe.call(client, SetParameters.Request(parameters=parameters)).results)


def test_offered_deadline_is_the_frame_period_by_default(qos_camera):
    assert _wait_offered(qos_camera, '/cam_qos/image', 50.0), \
        f'offered deadlines {_offered_deadlines_ms(qos_camera, "/cam_qos/image")}'
    info, = qos_camera.node.get_publishers_info_by_topic('/cam_qos/image')
    # Discovery carries reliability and deadline, not the history depth.
    assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def test_bad_parameters_are_refused_with_a_reason(qos_camera):
    negative, = _set(qos_camera, rate_hz=-1.0)
    assert not negative.successful and negative.reason
    too_short, = _set(qos_camera, deadline_ms=10.0)
    assert not too_short.successful and 'frame period' in too_short.reason
    encoding, = _set(qos_camera, encoding='yuv422')
    assert not encoding.successful and 'mono8' in encoding.reason
    describe = qos_camera.node.create_client(DescribeParameters,
                                             '/cam_qos/describe_parameters')
    rate, = qos_camera.call(describe, DescribeParameters.Request(names=['rate_hz'])).descriptors
    assert rate.description and rate.floating_point_range[0].from_value > 0
    assert rate.floating_point_range[0].step > 0
    assert _offered_deadlines_ms(qos_camera, '/cam_qos/image') == [50.0]


def test_deadline_and_rate_changes_are_offered_anew(qos_camera):
    explicit, = _set(qos_camera, deadline_ms=120.0)
    assert explicit.successful, explicit.reason
    assert _wait_offered(qos_camera, '/cam_qos/image', 120.0)
    slower, = _set(qos_camera, rate_hz=5.0)  # 200 ms period: longer than 120 ms
    assert not slower.successful and 'frame period' in slower.reason
    assert all(r.successful for r in _set(qos_camera, deadline_ms=0.0))
    assert all(r.successful for r in _set(qos_camera, rate_hz=4.0))
    assert _wait_offered(qos_camera, '/cam_qos/image', 250.0)


def _write_pgm(path, pixels):
    height, width = pixels.shape
    path.write_bytes(b'P5\n%d %d\n255\n' % (width, height) + pixels.tobytes())


def test_folder_source_in_another_encoding(tmp_path):
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, size=(12, 16), dtype=np.uint8) for _ in range(3)]
    for number, pixels in enumerate(pictures):
        _write_pgm(tmp_path / f'frame_{number}.pgm', pixels)
    (tmp_path / 'notes.txt').write_text('not an image')
    recorder = Recorder('camera_test_folder', '/cam_folder/image', 'cam_folder: camera')
    process = start_node(
        'camera', '-r', '__node:=cam_folder', '-p', 'topic:=/cam_folder/image',
        '-p', f'source:=folder:{tmp_path}', '-p', 'encoding:=rgb8', '-p', 'rate_hz:=20.0',
        log_path=tmp_path / 'camera.log')
    try:
        assert wait_for(lambda: len(recorder.images) >= 6), \
            'no frames from the folder:\n' + (tmp_path / 'camera.log').read_text()
        assert not recorder.probe.node.get_publishers_info_by_topic(
            '/cam_folder/image/ground_truth'), 'a folder source has no ground truth'
        with recorder.lock:
            received = list(recorder.images)
        for msg in received:
            assert msg.encoding == 'rgb8'
            pixels = image_to_array(msg)
            grey = pixels[:, :, 0]
            assert np.array_equal(pixels[:, :, 1], grey) and np.array_equal(pixels[:, :, 2], grey)
            assert any(np.array_equal(grey, picture) for picture in pictures)
    finally:
        code = stop_node(process)
        recorder.close()
    assert code == 0, (tmp_path / 'camera.log').read_text()


def _run_to_exit(*ros_args):
    result = subprocess.run([str(installed_executable('camera')), '--ros-args', *ros_args],
                            capture_output=True, text=True, timeout=TIMEOUT_S,
                            env=dict(os.environ))
    return result.returncode, result.stdout + result.stderr


def test_bad_start_parameters_end_with_a_clear_error():
    code, output = _run_to_exit('-r', '__node:=cam_bad_rate', '-p', 'rate_hz:=-5.0')
    assert code == 1 and 'rate_hz' in output and 'Traceback' not in output, output
    code, output = _run_to_exit('-r', '__node:=cam_bad_folder', '-p',
                                'source:=folder:/nonexistent/frames')
    assert code == 1 and 'not a directory' in output and 'Traceback' not in output, output


def test_video_source_without_opencv_is_a_clear_error():
    try:
        import cv2  # noqa: F401
        pytest.skip('OpenCV is installed here')
    except ImportError:
        pass
    code, output = _run_to_exit('-r', '__node:=cam_video', '-p', 'source:=video:0')
    assert code == 1 and 'OpenCV' in output and 'Traceback' not in output, output
