"""Shared test set-up: each pytest session gets a ROS 2 domain of its own."""

import os

import pytest


def _session_domain_id():
    # Domain ids 0..101 are safe on Linux; spread sessions over 1..100 by process id so
    # that two test runs on one machine do not see each other's topics.
    override = os.environ.get('DELEN_TEST_ROS_DOMAIN_ID')
    return int(override) if override else 1 + os.getpid() % 100


def pytest_configure(config):
    # Before any test module runs rclpy.init, and inherited by every subprocess.
    os.environ['ROS_DOMAIN_ID'] = str(_session_domain_id())
    # Discovery on loopback only: tests never send DDS traffic off this machine.
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


@pytest.fixture
def rclpy_context():
    """Give the test an rclpy context of its own, shut down after it."""
    import rclpy  # after pytest_configure: the session's domain is set
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope='session')
def ros_domain_id():
    """ROS_DOMAIN_ID of this test session."""
    return int(os.environ['ROS_DOMAIN_ID'])


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self):
        self.me = self


@pytest.fixture
def cyclic_garbage():
    """Return make(count): a list of objects that only the cyclic garbage collector frees."""
    return lambda count: [_Cycle() for _ in range(count)]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Everything in these folders is linted, whoever wrote it.
LINTED_DIRS = ('delen_ros', 'launch', 'test', 'bench', 'tools')


def _is_python_script(path):
    if path.endswith('.py'):
        return True
    try:
        with open(path, 'rb') as script:
            return b'python' in script.readline()
    except OSError:
        return False


@pytest.fixture(scope='session')
def lint_targets():
    """Python directories and extension-less Python scripts to lint, as absolute paths."""
    dirs = [os.path.join(REPO, name) for name in LINTED_DIRS
            if os.path.isdir(os.path.join(REPO, name))]
    scripts_dir = os.path.join(REPO, 'scripts')
    scripts = sorted(
        os.path.join(scripts_dir, name) for name in os.listdir(scripts_dir)
        if not name.startswith('.') and _is_python_script(os.path.join(scripts_dir, name))
    ) if os.path.isdir(scripts_dir) else []
    return {'dirs': dirs, 'scripts': scripts}


@pytest.fixture(scope='session')
def model():
    """Load the shipped multi-exit checkpoint once."""
    from delen_ros.engine import load_checkpoint
    return load_checkpoint()


@pytest.fixture(scope='session')
def profile():
    """Load the shipped model's profile once."""
    from delen_ros.engine.profiling import load_profile
    return load_profile()


@pytest.fixture
def make_server(model, profile):
    """Build InferenceServers on the shipped model (1 thread by default); stopped after."""
    from delen_ros.runtime import InferenceServer
    servers = []

    def make(**options):
        options.setdefault('threads', 1)
        server = InferenceServer(model, profile, **options)
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.stop(timeout=30)
