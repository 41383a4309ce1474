"""Shared pieces of the node tests: installed executables as subprocesses, a spinning probe."""

import os
from pathlib import Path
import signal
import subprocess
import threading
import time

import delen_ros.msg
import rclpy
from rclpy.executors import SingleThreadedExecutor

TIMEOUT_S = 60.0


def installed_executable(name):
    """Path of an executable the colcon build installed to lib/delen_ros/."""
    package_dir = Path(delen_ros.msg.__file__).resolve().parents[1]
    for parent in package_dir.parents:
        candidate = parent / 'lib' / 'delen_ros' / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f'{name} is not installed under lib/delen_ros (run tools/setup.sh)')


def start_node(name, *ros_args, log_path=None):
    """Start an installed node executable with --ros-args; stderr/stdout go to log_path."""
    log = open(log_path, 'w') if log_path else subprocess.DEVNULL
    return subprocess.Popen([str(installed_executable(name)), '--ros-args', *ros_args],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_node(process, timeout=TIMEOUT_S):
    """SIGINT (what Ctrl-C and ros2 launch send), wait, and return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
    return process.returncode


def wait_for(predicate, timeout=TIMEOUT_S, interval=0.02):
    """Poll a condition that other threads make true; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


class Probe:
    """A test-side rclpy node spun by a background executor."""

    def __init__(self, name):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: B902 - shutdown races end the spin
            pass

    def call(self, client, request, timeout=TIMEOUT_S):
        """Call a service and wait for its answer."""
        assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f'{client.srv_name} did not answer'
        return future.result()

    def close(self):
        """Stop spinning and shut the context down."""
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
