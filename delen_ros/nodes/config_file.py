"""The nodes' parameter file, read once for bringup and the launch file (no ROS import)."""

from pathlib import Path
from typing import Dict, Union

import yaml

__all__ = ['CAMERA_PREFIX', 'node_sections']

CAMERA_PREFIX = 'delen_camera'


def node_sections(path: Union[str, Path]) -> Dict[str, dict]:
    """Return each node's ``ros__parameters`` section of a parameter file, by node name."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {name: (section or {}).get('ros__parameters', {}) for name, section in data.items()}
