"""
The Fast DDS profile for camera-size images (config/fastdds.xml), loaded unless the user chose.

Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` (or the older ``FASTRTPS_DEFAULT_PROFILES_FILE``)
when a process creates its first participant, so this runs before ``rclpy.init``. It changes
nothing when either variable is set (set empty: Fast DDS's own defaults), or when another RMW
than Fast DDS is chosen.
"""

import os
from pathlib import Path
from typing import MutableMapping, Optional

__all__ = ['PROFILE_VARIABLES', 'default_profiles_file', 'use_default_profiles']

PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
_PROFILE = Path('config') / 'fastdds.xml'


def default_profiles_file() -> Optional[Path]:
    """Return the shipped profile: share/delen_ros/config when installed, else the source."""
    here = Path(__file__).resolve()
    # Installed: <prefix>/lib/python3.X/site-packages/delen_ros/nodes/dds_profile.py
    candidates = [parent / 'share' / 'delen_ros' / _PROFILE for parent in here.parents]
    candidates.append(here.parents[2] / _PROFILE)
    return next((c for c in candidates if c.is_file()), None)


def use_default_profiles(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """Point Fast DDS at the shipped profile unless already pointed; return the file set."""
    environ = os.environ if environ is None else environ
    rmw = environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    if 'fastrtps' not in rmw or any(name in environ for name in PROFILE_VARIABLES):
        return None
    path = default_profiles_file()
    if path is None:
        return None
    environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(path)
    return str(path)
