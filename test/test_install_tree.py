"""
The colcon install tree holds what a ROS 2 workspace needs from delen_ros.

Run after tools/setup.sh (./delen test does both) with tools/env.sh sourced.
"""

import os
import subprocess
import sys

from ament_index_python.packages import get_package_prefix, get_package_share_directory
import delen_ros
import delen_ros.msg
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(REPO, 'install')

INFERENCE_RESULT_FIELDS = {
    'header': 'std_msgs/Header', 'tenant': 'string', 'class_id': 'int32', 'label': 'string',
    'confidence': 'float', 'exit_index': 'uint8', 'num_exits': 'uint8', 'is_final': 'boolean',
    'latency_ms': 'float', 'queue_ms': 'float', 'compute_ms': 'float', 'energy_mj': 'float',
    'energy_measured': 'boolean', 'deadline_ms': 'float', 'deadline_met': 'boolean',
    'goal': 'string', 'policy': 'string', 'num_threads': 'uint8', 'delivery_ms': 'float',
    'model': 'string',
}
TENANT_STATUS_FIELDS = {
    'header': 'std_msgs/Header', 'tenant': 'string', 'goal': 'string', 'policy': 'string',
    'frames_received': 'uint64', 'frames_served': 'uint64', 'frames_dropped': 'uint64',
    'frames_rejected': 'uint64', 'deadline_misses': 'uint64', 'deadline_met_ratio': 'float',
    'latency_mean_ms': 'float', 'latency_p99_ms': 'float', 'mean_exit': 'float',
    'energy_mean_mj': 'float', 'energy_measured': 'boolean', 'accuracy': 'float',
    'labelled_frames': 'uint64', 'latency_bound_ms': 'float', 'min_accuracy': 'float',
    'energy_bound_mj': 'float', 'base_latency_bound_ms': 'float', 'base_min_accuracy': 'float',
    'base_energy_bound_mj': 'float', 'adjustment_reason': 'string', 'frames_lost': 'uint64',
    'frames_missed': 'uint64',
    'dropped_queue': 'uint64', 'dropped_infeasible': 'uint64', 'dropped_shutdown': 'uint64',
    'frames_late': 'uint64', 'frames_failed': 'uint64', 'stamps_zero': 'uint64',
    'stamps_future': 'uint64', 'stamps_stale': 'uint64',
}


def _inside(path, directory):
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(directory)]) \
        == os.path.realpath(directory)


@pytest.fixture(scope='module')
def prefix():
    return get_package_prefix('delen_ros')


def test_package_is_indexed_from_this_workspace(prefix):
    assert _inside(prefix, INSTALL), 'delen_ros found at %s, not under %s' % (prefix, INSTALL)
    share = get_package_share_directory('delen_ros')
    with open(os.path.join(share, 'package.xml')) as installed, \
            open(os.path.join(REPO, 'package.xml')) as source:
        assert installed.read() == source.read()


def test_installed_package_is_imported_not_the_source_tree():
    assert _inside(delen_ros.__file__, INSTALL), delen_ros.__file__
    assert _inside(delen_ros.msg.__file__, INSTALL), delen_ros.msg.__file__


def test_source_tree_does_not_shadow_the_install_from_the_repository_root():
    # `python -c` puts the current directory first on sys.path; from the repository
    # root the installed package must still win (the source tree has no top-level
    # __init__.py, so it can only be a namespace portion, which a regular package beats).
    result = subprocess.run(
        [sys.executable, '-c', 'import delen_ros.msg; print(delen_ros.__file__)'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _inside(result.stdout.strip(), INSTALL), result.stdout


def test_executables_are_installed_where_ros2_run_looks(prefix):
    lib = os.path.join(prefix, 'lib', 'delen_ros')
    assert os.path.isdir(lib)
    scripts = os.path.join(REPO, 'scripts')
    for name in sorted(os.listdir(scripts)):
        if name.startswith('.'):
            continue
        installed = os.path.join(lib, name)
        assert os.path.isfile(installed), 'scripts/%s not installed to %s' % (name, lib)
        assert os.access(installed, os.X_OK), '%s is not executable' % installed


@pytest.mark.parametrize('folder', ['launch', 'config', 'platforms', 'models'])
def test_data_folders_are_installed(prefix, folder):
    installed = os.path.join(prefix, 'share', 'delen_ros', folder)
    assert os.path.isdir(installed)
    source = os.path.join(REPO, folder)
    if os.path.isdir(source):
        for name in os.listdir(source):
            if not name.startswith('.') and name != '__pycache__':
                assert os.path.exists(os.path.join(installed, name)), (folder, name)


def test_every_python_module_is_installed():
    installed_root = os.path.dirname(delen_ros.__file__)
    source_root = os.path.join(REPO, 'delen_ros')
    missing = []
    for root, dirs, names in os.walk(source_root):
        dirs[:] = [name for name in dirs if name != '__pycache__']
        for name in names:
            if name.endswith('.py'):
                relative = os.path.relpath(os.path.join(root, name), source_root)
                if not os.path.isfile(os.path.join(installed_root, relative)):
                    missing.append(relative)
    # Subpackage __init__.py files included: only the top-level one is rosidl's.
    assert not missing, 'not installed: %s' % missing


def test_messages_have_the_agreed_fields():
    from delen_ros.msg import InferenceResult, TenantStatus
    assert InferenceResult.get_fields_and_field_types() == INFERENCE_RESULT_FIELDS
    assert TenantStatus.get_fields_and_field_types() == TENANT_STATUS_FIELDS


def test_message_interface_files_are_installed(prefix):
    msg_dir = os.path.join(prefix, 'share', 'delen_ros', 'msg')
    for name in ('BudgetAdjustment', 'GroundTruth', 'InferenceResult', 'TenantStatus'):
        assert os.path.isfile(os.path.join(msg_dir, name + '.msg'))
        assert os.path.isfile(os.path.join(msg_dir, name + '.idl'))
    srv_dir = os.path.join(prefix, 'share', 'delen_ros', 'srv')
    for name in ('AddTenant', 'Classify', 'RemoveTenant'):
        assert os.path.isfile(os.path.join(srv_dir, name + '.srv'))


def test_installed_launch_files_load(prefix):
    launch_sources = pytest.importorskip(
        'launch.launch_description_sources',
        reason='the launch package is not on PyPI; a full ROS 2 install has it')
    launch_dir = os.path.join(prefix, 'share', 'delen_ros', 'launch')
    files = sorted(name for name in os.listdir(launch_dir) if name.endswith('.launch.py'))
    if not files:
        pytest.skip('no launch files yet')
    for name in files:
        description = launch_sources.get_launch_description_from_python_launch_file(
            os.path.join(launch_dir, name))
        assert description.entities, name
