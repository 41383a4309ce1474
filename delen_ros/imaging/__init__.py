"""sensor_msgs/Image <-> numpy <-> model input tensors (duck-typed, no ROS import)."""

from .codec import (decode_image, DecodedImage, DEFAULT_MAX_PIXELS, encoding_info, EncodingInfo,
                    ENCODINGS, fill_image, image_to_array, ImageFormatError, REASONS)
from .transform import LUMA_WEIGHTS, ModelInputTransform

__all__ = [
    'DEFAULT_MAX_PIXELS', 'DecodedImage', 'ENCODINGS', 'EncodingInfo', 'ImageFormatError',
    'LUMA_WEIGHTS', 'ModelInputTransform', 'REASONS', 'decode_image', 'encoding_info',
    'fill_image', 'image_to_array',
]
