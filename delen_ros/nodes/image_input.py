"""
A tenant's image input: which message type on which topic, and the function that decodes it.

image_transport names a compressed stream ``<base topic>/compressed`` (CompressedImage); the
raw stream is the base topic itself (Image). A tenant picks one with its ``transport``
parameter, or by an input topic that already ends in ``/compressed``. Decoding goes through
``delen_ros.imaging``: a JPEG is decoded no larger than the model input needs.
"""

from dataclasses import dataclass
import functools
from typing import Callable

from delen_ros.imaging import decode_compressed, decode_image, DecodedImage
from sensor_msgs.msg import CompressedImage, Image

__all__ = ['COMPRESSED_SUFFIX', 'ImageInput', 'image_input', 'TRANSPORTS']

TRANSPORTS = ('raw', 'compressed')
COMPRESSED_SUFFIX = '/compressed'


@dataclass(frozen=True)
class ImageInput:
    """What a tenant subscribes to and how each message becomes pixels."""

    transport: str  # 'raw' or 'compressed'
    topic: str  # the topic subscribed
    base_topic: str  # image_transport's base name; ground truth is <base_topic>/ground_truth
    message_type: type  # sensor_msgs Image or CompressedImage
    decode: Callable[..., DecodedImage]  # decode(msg, max_pixels=...) -> DecodedImage


def image_input(input_topic: str, transport: str, spec) -> ImageInput:
    """
    Describe the input of a tenant reading ``input_topic`` through ``transport``.

    ``transport`` 'compressed' subscribes to ``<input_topic>/compressed`` (or to input_topic
    when it already ends so); an input topic ending in ``/compressed`` is compressed whatever
    the transport. ``spec`` has ``height``, ``width``, ``channels`` (an engine InputSpec).
    Raises ValueError for an unknown transport.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f'transport must be one of {", ".join(TRANSPORTS)}, got {transport!r}')
    topic = input_topic.rstrip('/') or input_topic
    if topic.endswith(COMPRESSED_SUFFIX):
        base = topic[:-len(COMPRESSED_SUFFIX)]
    elif transport == 'compressed':
        base, topic = topic, topic + COMPRESSED_SUFFIX
    else:
        return ImageInput('raw', topic, topic, Image, decode_image)
    decode = functools.partial(decode_compressed, min_size=(spec.height, spec.width),
                               gray=spec.channels == 1)
    return ImageInput('compressed', topic, base, CompressedImage, decode)
