"""How the executables spin: the executor choice (delen_ros.nodes.spin, docs/serving_path.md)."""

import subprocess

from delen_ros.nodes.spin import make_executor
from node_harness import installed_executable
import pytest
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor


def test_executables_spin_single_threaded_unless_told(rclpy_context):
    assert isinstance(make_executor(context=rclpy_context), SingleThreadedExecutor)
    multi = make_executor('multi', num_threads=3, context=rclpy_context)
    assert isinstance(multi, MultiThreadedExecutor)
    multi.shutdown()


def test_an_unknown_executor_is_refused(rclpy_context):
    with pytest.raises(ValueError, match="unknown executor 'events'; choose one of single, multi"):
        make_executor('events', context=rclpy_context)


def test_an_executable_refuses_an_unknown_executor_before_starting():
    done = subprocess.run([str(installed_executable('server')), '--executor', 'events',
                           '--ros-args', '-p', 'tenants:=[probe]'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "argument --executor: invalid choice: 'events'" in done.stderr
