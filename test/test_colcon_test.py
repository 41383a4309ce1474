"""`colcon test` runs this pytest suite (CMakeLists.txt registers it under BUILD_TESTING)."""

import os
from pathlib import Path
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

REPO = Path(__file__).resolve().parents[1]
ONE_FILE = 'test/test_frame_time_and_tenant_values.py'


def test_colcon_test_runs_the_pytest_suite():
    if shutil.which('colcon') is None or not (REPO / 'build' / 'delen_ros').is_dir():
        pytest.skip('needs colcon and the colcon build of this checkout (tools/setup.sh)')
    result_file = REPO / 'build' / 'delen_ros' / 'test_results' / 'delen_ros' / 'pytest.xml'
    if result_file.exists():
        result_file.unlink()
    env = dict(os.environ, PYTEST_ADDOPTS=ONE_FILE)
    run = subprocess.run(
        ['colcon', 'test', '--packages-select', 'delen_ros', '--base-paths', str(REPO),
         '--build-base', str(REPO / 'build'), '--install-base', str(REPO / 'install'),
         '--event-handlers', 'console_direct+'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = ElementTree.parse(result_file).getroot()
    names = {case.get('name') for case in report.iter('testcase')}
    assert 'test_labels_find_their_frame_before_or_after_it' in names
    assert not any(case.find('failure') is not None for case in report.iter('testcase'))
