"""Camera messages (Image, CompressedImage) <-> numpy <-> model input (no ROS import)."""

from .codec import (CONVERTED_ENCODINGS, ConvertedEncoding, decode_image, DecodedImage,
                    DEFAULT_MAX_PIXELS, encoding_info, EncodingInfo, ENCODINGS, fill_image,
                    image_to_array, ImageFormatError, REASONS)
from .compressed import (compression_of, COMPRESSIONS, decode_compressed, fill_compressed,
                         is_compressed)
from .transform import LUMA_WEIGHTS, ModelInputTransform

__all__ = [
    'COMPRESSIONS', 'CONVERTED_ENCODINGS', 'ConvertedEncoding', 'DEFAULT_MAX_PIXELS',
    'DecodedImage', 'ENCODINGS', 'EncodingInfo', 'ImageFormatError', 'LUMA_WEIGHTS',
    'ModelInputTransform', 'REASONS', 'compression_of', 'decode_compressed', 'decode_image',
    'encoding_info', 'fill_compressed', 'fill_image', 'image_to_array', 'is_compressed',
]
