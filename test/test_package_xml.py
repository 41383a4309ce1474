"""
package.xml declares every run-time dependency that the installed code imports.

Imports are read with ast from delen_ros/**/*.py, the Python scripts of scripts/ and
launch/*.py, mapped to rosdep keys, and compared with the <exec_depend>/<depend> tags.
A new third-party import therefore fails here until package.xml (and, for pip,
requirements.txt) names it.
"""

import ast
import os
import sys

from catkin_pkg.package import parse_package
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_PACKAGE = 'delen_ros'

# Top-level module -> rosdep key (keys checked in ros/rosdistro rosdep/python.yaml).
MODULE_ROSDEP_KEYS = {
    'numpy': 'python3-numpy',
    'yaml': 'python3-yaml',
    'torch': 'python3-torch',
    'torchvision': 'python3-torchvision',
    'tqdm': 'python3-tqdm',
    'matplotlib': 'python3-matplotlib',
    'psutil': 'python3-psutil',
    'PIL': 'python3-pil',
    'scipy': 'python3-scipy',
    'cv2': 'python3-opencv',
    'pandas': 'python3-pandas',
    'lxml': 'python3-lxml',
}
# ROS 2 Python packages whose rosdep key is their own name.
ROS_PACKAGES = {
    'rclpy', 'launch', 'launch_ros', 'launch_testing', 'launch_pytest',
    'ament_index_python', 'rosidl_runtime_py', 'message_filters', 'cv_bridge',
    'tf2_ros', 'rosbag2_py',
}
ROS_INTERFACE_SUFFIXES = ('_msgs', '_srvs', '_interfaces')


def rosdep_key(module):
    """Return the rosdep key for a top-level module, or None when unknown."""
    if module in MODULE_ROSDEP_KEYS:
        return MODULE_ROSDEP_KEYS[module]
    if module in ROS_PACKAGES or module.endswith(ROS_INTERFACE_SUFFIXES):
        return module
    return None


def imported_modules(source, filename='<source>'):
    """Return the top-level names of the absolute imports in Python source."""
    modules = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split('.')[0])
    return modules


def third_party(modules):
    return {name for name in modules
            if name != OWN_PACKAGE and name not in sys.stdlib_module_names}


def missing_dependencies(imports_by_file, declared):
    """Return 'module (key) imported by files' lines for undeclared dependencies."""
    problems = []
    users = {}
    for filename, modules in imports_by_file.items():
        for module in third_party(modules):
            users.setdefault(module, []).append(filename)
    for module, files in sorted(users.items()):
        key = rosdep_key(module)
        where = ', '.join(sorted(files))
        if key is None:
            problems.append(
                '%s: no rosdep key known (imported by %s); add it to MODULE_ROSDEP_KEYS in '
                'test/test_package_xml.py and an <exec_depend> to package.xml' % (module, where))
        elif key not in declared:
            problems.append('%s: package.xml lacks <exec_depend>%s</exec_depend> (imported by %s)'
                            % (module, key, where))
    return problems


def _installed_python_files():
    files = []
    for root, dirs, names in os.walk(os.path.join(REPO, OWN_PACKAGE)):
        dirs[:] = [name for name in dirs if name != '__pycache__']
        files += [os.path.join(root, name) for name in names if name.endswith('.py')]
    launch_dir = os.path.join(REPO, 'launch')
    if os.path.isdir(launch_dir):
        files += [os.path.join(launch_dir, name) for name in os.listdir(launch_dir)
                  if name.endswith('.py')]
    scripts_dir = os.path.join(REPO, 'scripts')
    if os.path.isdir(scripts_dir):
        for name in os.listdir(scripts_dir):
            path = os.path.join(scripts_dir, name)
            if name.startswith('.') or not os.path.isfile(path):
                continue
            with open(path, 'rb') as script:
                if name.endswith('.py') or b'python' in script.readline():
                    files.append(path)
    return sorted(files)


def _declared_exec_dependencies():
    package = parse_package(os.path.join(REPO, 'package.xml'))
    return {dependency.name for dependency in package.exec_depends}


@pytest.mark.linter
def test_package_xml_declares_every_imported_dependency():
    imports_by_file = {}
    for path in _installed_python_files():
        with open(path, encoding='utf-8') as source:
            imports_by_file[os.path.relpath(path, REPO)] = imported_modules(source.read(), path)
    assert imports_by_file, 'no Python files found to check'
    problems = missing_dependencies(imports_by_file, _declared_exec_dependencies())
    assert not problems, 'undeclared run-time dependencies:\n' + '\n'.join(problems)


def test_package_xml_basics():
    package = parse_package(os.path.join(REPO, 'package.xml'))
    assert package.name == OWN_PACKAGE
    assert package.package_format == 3
    assert [str(license_) for license_ in package.licenses] == ['Apache-2.0']
    assert package.get_build_type() == 'ament_cmake'
    assert 'rosidl_interface_packages' in [group.name for group in package.member_of_groups]


def test_checker_flags_undeclared_and_unknown_imports():
    source = 'import os\nimport numpy as np\nfrom scipy import signal\nimport frobnicate\n' \
             'from . import sibling\nfrom delen_ros.msg import InferenceResult\n'
    modules = imported_modules(source)
    assert third_party(modules) == {'numpy', 'scipy', 'frobnicate'}
    problems = missing_dependencies({'x.py': modules}, {'python3-numpy'})
    assert len(problems) == 2
    assert problems[0].startswith('frobnicate: no rosdep key known')
    assert problems[1].startswith('scipy: package.xml lacks <exec_depend>python3-scipy')
