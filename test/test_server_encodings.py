"""
The serving node across processes on compressed, yuv422 and bayer streams.

The same Fashion-MNIST test frames go to five tenants of one server: raw mono8, JPEG
(quality 90) through ``transport: compressed``, PNG on a topic ending in ``/compressed``,
yuv422 (UYVY) and bayer_rggb8. Every tenant runs the final exit with no latency bound, so
accuracies differ only by what the codecs do to the frames.
"""

import threading

import cv2
from delen_ros.engine import fashion_mnist
from delen_ros.imaging import fill_compressed, fill_image
from delen_ros.msg import InferenceResult
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Probe, start_node, stop_node, wait_for
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

FRAMES = 300
IN_FLIGHT = 8  # frames sent ahead of the slowest stream's answers

# tenant: (parameters, topic the test publishes on, message type, frame -> message)
STREAMS = {
    'enc_raw': ({}, '/enc_raw/image', Image,
                lambda f: fill_image(Image(), f, encoding='mono8')),
    'enc_jpeg': ({'transport': 'compressed'}, '/enc_jpeg/image/compressed', CompressedImage,
                 lambda f: fill_compressed(CompressedImage(), f, encoding='mono8',
                                           quality=95)),
    'enc_png': ({'input_topic': '/enc_png/image/compressed'}, '/enc_png/image/compressed',
                CompressedImage,
                lambda f: fill_compressed(CompressedImage(), cv2.cvtColor(
                    f, cv2.COLOR_GRAY2BGR), encoding='bgr8', compression='png')),
    'enc_yuv': ({}, '/enc_yuv/image', Image,
                lambda f: fill_image(Image(), f, encoding='yuv422')),
    # Each frame pixel seen by one 2x2 cell of the sensor's mosaic.
    'enc_bayer': ({}, '/enc_bayer/image', Image, lambda f: fill_image(
        Image(), cv2.cvtColor(f.repeat(2, axis=0).repeat(2, axis=1), cv2.COLOR_GRAY2BGR),
        encoding='bayer_rggb8')),
}

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp('server_encodings')
    lines = ['delen_server:', '  ros__parameters:', f'    tenants: [{", ".join(STREAMS)}]',
             '    status_period_s: 0.2']
    for tenant, (extra, topic, _, _) in STREAMS.items():
        values = {'input_topic': topic.replace('/compressed', ''),
                  'policy': "'static:exit_index=-1'", 'goal': 'accuracy',
                  'min_accuracy': 0.5, 'latency_ms': 0.0,
                  'on_infeasible': 'serve_first_exit', 'queue_size': 100,
                  'input_deadline_ms': 0.0, **extra}
        lines += [f'    {tenant}.{key}: {value}' for key, value in values.items()]
    params = folder / 'params.yaml'
    params.write_text('\n'.join(lines) + '\n')
    process = start_node('server', '--params-file', str(params),
                         log_path=folder / 'server.log')
    yield process
    code = stop_node(process)
    log = (folder / 'server.log').read_text()
    assert code == 0, f'server exited with {code}:\n{log}'


class Streams:
    """Publishes each frame on every stream, keeps answers by tenant and frame."""

    def __init__(self):
        self.probe = Probe('encodings_test_client')
        node = self.probe.node
        self.publishers = {t: node.create_publisher(kind, topic, 50)
                           for t, (_, topic, kind, _) in STREAMS.items()}
        self.answers = {t: {} for t in STREAMS}
        self.diagnostics = []
        self.lock = threading.Lock()
        for tenant in STREAMS:
            node.create_subscription(InferenceResult, f'/delen/{tenant}/result',
                                     self._result_callback, 100)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics_callback,
                                 10)

    def _result_callback(self, msg):
        with self.lock:
            self.answers[msg.tenant][msg.header.frame_id] = msg

    def _diagnostics_callback(self, msg):
        with self.lock:
            self.diagnostics.append(msg)

    def answered(self, tenant):
        with self.lock:
            return len(self.answers[tenant])

    def publish(self, index, frame):
        stamp = self.probe.node.get_clock().now().to_msg()
        for tenant, (_, _, _, build) in STREAMS.items():
            msg = build(frame)
            msg.header.frame_id = f'frame_{index}'
            msg.header.stamp = stamp
            self.publishers[tenant].publish(msg)

    def close(self):
        self.probe.close()


def _tenant_values(streams, tenant):
    with streams.lock:
        for array_msg in reversed(streams.diagnostics):
            for status in array_msg.status:
                if status.name == f'delen_server: tenant {tenant}':
                    return {kv.key: kv.value for kv in status.values}
    return None


def test_compressed_yuv422_and_bayer_streams_are_as_accurate_as_raw_mono8(server):
    images, labels = fashion_mnist.load('test')
    streams = Streams()
    try:
        # The server follows its publishers to reliable by subscribing anew: a frame sent
        # before that may go with the old subscription, so the stream starts after it.
        followed = wait_for(lambda: all(
            (_tenant_values(streams, t) or {}).get('input_reliability') == 'reliable'
            for t in STREAMS), 60.0, interval=0.1)
        assert followed, {t: _tenant_values(streams, t) for t in STREAMS}
        # Wait until every stream is connected: the first frame is answered on all five.
        first = wait_for(lambda: (streams.publish(-1, images[0]) or True) and all(
            streams.answered(t) for t in STREAMS), 60.0, interval=0.5)
        assert first, f'not every stream answered: {streams.answers.keys()}'
        for index in range(FRAMES):
            # A stream that stops answering fails the test now, not after FRAMES timeouts.
            caught_up = wait_for(
                lambda: min(streams.answered(t) for t in STREAMS) >= index - IN_FLIGHT,
                30.0, interval=0.002)
            assert caught_up, (f'a stream stopped answering after frame {index} was due: '
                               f'{ {t: streams.answered(t) for t in STREAMS} }')
            streams.publish(index, images[index])
        wait_for(lambda: min(streams.answered(t) for t in STREAMS) >= FRAMES * 0.99, 20.0)
        with streams.lock:
            answers = {t: dict(a) for t, a in streams.answers.items()}
        # Frames every stream answered from the final exit (a frame the cost model thinks
        # late is answered from the first exit instead, on a loaded machine).
        last = max(a.num_exits for found in answers.values() for a in found.values()) - 1
        common = set.intersection(*(
            {int(k[6:]) for k, a in found.items()
             if k.startswith('frame_') and k != 'frame_-1' and a.exit_index == last}
            for found in answers.values()))
        assert len(common) >= 0.95 * FRAMES, {t: len(a) for t, a in answers.items()}
        truth = labels[sorted(common)]
        accuracy = {}
        for tenant, found in answers.items():
            predicted = np.array([found[f'frame_{i}'].class_id for i in sorted(common)])
            accuracy[tenant] = float((predicted == truth).mean())
        raw = accuracy['enc_raw']
        assert raw > 0.85, accuracy
        for tenant, value in accuracy.items():
            assert abs(value - raw) <= 0.01, accuracy
        diagnostics = wait_for(lambda: _tenant_values(streams, 'enc_jpeg'), 10.0)
        assert diagnostics['transport'] == 'compressed'
        assert diagnostics['input_topic'] == '/enc_jpeg/image/compressed'
        assert _tenant_values(streams, 'enc_png')['transport'] == 'compressed'
        assert _tenant_values(streams, 'enc_raw')['transport'] == 'raw'
    finally:
        streams.close()


def test_bad_compressed_images_are_rejected_and_serving_goes_on(server):
    images, _ = fashion_mnist.load('test')
    streams = Streams()
    try:
        good = fill_compressed(CompressedImage(), images[0], encoding='mono8')
        truncated = CompressedImage(format=good.format)
        truncated.data = good.data[:len(good.data) // 2]
        wrong = CompressedImage(format='rgb8; png compressed bgr8', data=good.data)
        for bad, reason in [(truncated, 'corrupt'), (wrong, 'bad_format')]:
            def reported():
                streams.publishers['enc_jpeg'].publish(bad)
                values = _tenant_values(streams, 'enc_jpeg')
                return values and values['last_rejection'].startswith(reason)
            assert wait_for(reported, 30.0, interval=0.1), reason
        before = streams.answered('enc_jpeg')
        good.header.frame_id = 'after_bad'
        assert wait_for(lambda: streams.publishers['enc_jpeg'].publish(good) or (
            streams.answered('enc_jpeg') > before), 30.0, interval=0.1)
    finally:
        streams.close()
