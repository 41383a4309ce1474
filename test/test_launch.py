"""launch/serve.launch.py: declared arguments (always), and a real launch where launch exists."""

import ast
from pathlib import Path

import pytest

LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'serve.launch.py'
DOCUMENTED_ARGUMENTS = {'config', 'model', 'models', 'namespace', 'demo', 'log_level',
                        'executor', 'managed', 'autostart'}


def _declared_arguments(tree):
    declared = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'DeclareLaunchArgument':
            name = call.args[0].value
            keywords = {k.arg: k.value for k in call.keywords}
            declared[name] = keywords
    return declared


def test_launch_file_declares_the_documented_arguments_with_descriptions():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    declared = _declared_arguments(tree)
    assert set(declared) == DOCUMENTED_ARGUMENTS
    for name, keywords in declared.items():
        assert 'description' in keywords, f'launch argument {name} has no description'
        assert 'default_value' in keywords, f'launch argument {name} has no default'
    executables = {k.value.value for call in ast.walk(tree) if isinstance(call, ast.Call)
                   for k in call.keywords if k.arg == 'executable'}
    assert executables == {'server', 'managed_server', 'governor', 'power_trace', 'camera'}


def test_launch_description_builds_where_launch_is_installed():
    # A submodule: the repository's own launch/ folder imports as a namespace package 'launch'.
    pytest.importorskip('launch.launch_description',
                        reason='ROS 2 launch is not installable from PyPI here; '
                               'this runs on a machine with a ROS 2 install')
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here')
    import importlib.util
    spec = importlib.util.spec_from_file_location('serve_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {entity.name for entity in description.entities if hasattr(entity, 'name')}
    assert DOCUMENTED_ARGUMENTS <= names


def test_the_demo_config_gives_every_node_its_section():
    from delen_ros.nodes.config_file import CAMERA_PREFIX, node_sections
    sections = node_sections(Path(__file__).resolve().parents[1] / 'config' / 'three_tenants.yaml')
    assert sections['delen_server']['tenants'] == ['obstacle', 'inspection', 'patrol']
    assert sections['delen_governor']['battery_topic'] == 'battery_state'
    cameras = sorted(name for name in sections if name.startswith(CAMERA_PREFIX))
    assert cameras == ['delen_camera_inspection', 'delen_camera_obstacle', 'delen_camera_patrol']


def test_the_server_is_required():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source, filename=str(LAUNCH_FILE))
    called = {getattr(call.func, 'id', '') for call in ast.walk(tree)
              if isinstance(call, ast.Call)}
    assert {'RegisterEventHandler', 'OnProcessExit', 'Shutdown'} <= called
    assert 'target_action=server_node' in source


_RUN_LAUNCH = """
import sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = launch.LaunchService()
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=[('model', sys.argv[2])]))
sys.exit(service.run())
"""


def test_a_bad_model_ends_the_launch_with_one_line_and_an_error_code(tmp_path):
    pytest.importorskip('launch.launch_description',
                        reason='ROS 2 launch is not installable from PyPI here')
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here')
    import subprocess
    import sys
    from ament_index_python.packages import get_package_share_directory
    installed = Path(get_package_share_directory('delen_ros')) / 'launch' / 'serve.launch.py'
    missing = tmp_path / 'missing.pt'
    run = subprocess.run([sys.executable, '-c', _RUN_LAUNCH, str(installed), str(missing)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert f'{missing}: model file not found' in output
    assert 'delen_server exited with code 1' in output
    assert 'Traceback' not in output, output
