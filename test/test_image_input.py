"""A tenant's image input: message type, topic and decoder from input_topic and transport."""

from delen_ros.engine import InputSpec
from delen_ros.imaging import fill_compressed
from delen_ros.nodes.image_input import image_input
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

SPEC = InputSpec(height=28, width=28, channels=1, mean=(0.5,), std=(0.25,))


def test_raw_input_is_the_image_topic():
    found = image_input('/cam/image', 'raw', SPEC)
    assert (found.transport, found.topic, found.base_topic) == ('raw', '/cam/image', '/cam/image')
    assert found.message_type is Image


@pytest.mark.parametrize('topic,transport', [
    ('/cam/image', 'compressed'), ('/cam/image/compressed', 'raw'),
    ('/cam/image/compressed', 'compressed'), ('/cam/image/', 'compressed')])
def test_compressed_input_follows_image_transport_names(topic, transport):
    found = image_input(topic, transport, SPEC)
    assert (found.transport, found.topic, found.base_topic) == (
        'compressed', '/cam/image/compressed', '/cam/image')
    assert found.message_type is CompressedImage


def test_compressed_decoder_shrinks_to_the_model_input():
    frame = np.zeros((480, 640, 3), np.uint8)
    msg = fill_compressed(CompressedImage(), frame, encoding='bgr8')
    decoded = image_input('cam/image', 'compressed', SPEC).decode(msg, max_pixels=640 * 480)
    assert decoded.encoding == 'mono8' and decoded.pixels.shape == (60, 80)  # 1/8 scale


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="transport must be one of raw, compressed, got 'theora'"):
        image_input('/cam/image', 'theora', SPEC)
