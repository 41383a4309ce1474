"""
ament_xmllint: package.xml is valid against the package format 3 schema.

The ROS 2 wheels on PyPI carry no ament_xmllint, so tools/setup.sh installs Debian's
python3-ament-xmllint, which validates against its local copy of
download.ros.org/schema/package_format3.xsd (no download). Where ROS 2 itself provides
ament_xmllint to this Python, that one is used.
"""

import glob
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _xml_files():
    return [os.path.join(REPO, 'package.xml')] + sorted(
        glob.glob(os.path.join(REPO, 'launch', '*.xml')))


@pytest.mark.linter
def test_xmllint():
    files = _xml_files()
    try:
        from ament_xmllint.main import main
    except ImportError:
        executable = shutil.which('ament_xmllint') or '/usr/bin/ament_xmllint'
        assert os.path.exists(executable), (
            'ament_xmllint not found: run tools/setup.sh (apt-get install python3-ament-xmllint)')
        result = subprocess.run([executable] + files, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'is valid' in result.stdout, result.stdout
    else:
        assert main(argv=files) == 0, 'Found errors (printed above)'


def test_xmllint_rejects_an_invalid_package_xml(tmp_path):
    """The linter used above can fail: a package.xml without <license> is rejected."""
    executable = shutil.which('ament_xmllint') or '/usr/bin/ament_xmllint'
    if not os.path.exists(executable):
        pytest.skip('no ament_xmllint executable (a ROS 2 install provides the module only)')
    with open(os.path.join(REPO, 'package.xml')) as source:
        text = source.read()
    broken = tmp_path / 'package.xml'
    broken.write_text(text.replace('<license>Apache-2.0</license>', ''))
    result = subprocess.run([executable, str(broken)], capture_output=True, text=True)
    assert result.returncode != 0, result.stdout
