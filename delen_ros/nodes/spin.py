"""One way to run a node as an executable: start-up errors as one line, clean Ctrl-C."""

import sys
from typing import Callable, Optional, Sequence, Tuple, Type

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

__all__ = ['run_node']


def run_node(factory: Callable[[], Node], *, name: str,
             startup_errors: Tuple[Type[BaseException], ...] = (ValueError,),
             args: Optional[Sequence[str]] = None) -> int:
    """
    Create a node, spin it in a MultiThreadedExecutor until shutdown, return the exit code.

    An exception of ``startup_errors`` raised while creating the node is printed as one line
    (``<name>: <message>``) and gives exit code 1.
    """
    rclpy.init(args=args)
    try:
        node = factory()
    except startup_errors as error:
        print(f'{name}: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
