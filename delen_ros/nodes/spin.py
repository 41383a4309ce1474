"""One way to run a node as an executable: the executor, start-up errors as one line, Ctrl-C."""

import argparse
import signal
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

import rclpy
from rclpy.context import Context
from rclpy.executors import (Executor, ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

__all__ = ['EXECUTORS', 'add_executor_argument', 'make_executor', 'run_node']

EXECUTORS = ('single', 'multi')


def make_executor(kind: str = 'single', *, num_threads: Optional[int] = None,
                  context: Optional[Context] = None) -> Executor:
    """
    Return the executor of the delen_ros executables: ``single`` (default) or ``multi``.

    Every callback of these nodes is short (inference runs on the runtime's own worker thread),
    so one executor thread suffices. The MultiThreadedExecutor of rclpy 9.1 (Kilted) re-queues
    callbacks still waiting in its thread pool, and starves them: with it, frames reached the
    server up to 1.7 s late and some were lost (docs/serving_path.md; ros2/rclpy#1452, fixed
    in rclpy 10.0.4 by ros2/rclpy#1547). The nodes keep their callback groups, so ``multi``
    stays correct where that fix is in.
    """
    if kind == 'single':
        return SingleThreadedExecutor(context=context)
    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=num_threads, context=context)
    raise ValueError(f'unknown executor {kind!r}; choose one of {", ".join(EXECUTORS)}')


def add_executor_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor {single,multi}`` to a command-line parser."""
    parser.add_argument('--executor', choices=EXECUTORS, default='single',
                        help='rclpy executor to spin in (default: single; see '
                             'docs/serving_path.md)')


def run_node(factory: Callable[[], Node], *, name: str,
             startup_errors: Tuple[Type[BaseException], ...] = (ValueError,),
             args: Optional[Sequence[str]] = None) -> int:
    """
    Create a node, spin it until shutdown, return the exit code.

    Command line: ``[--executor single|multi] [--ros-args ...]``. An exception of
    ``startup_errors`` raised while creating the node is printed as one line
    (``<name>: <message>``) and gives exit code 1.
    """
    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(prog=name, description=f'Run the {name} node.')
    add_executor_argument(parser)
    options = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    try:
        node = factory()
    except startup_errors as error:
        print(f'{name}: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = make_executor(options.executor)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902
        # Ctrl-C shuts the context down first: a callback then publishing fails, and that
        # is the end of spinning, not an error. Anything else is.
        if rclpy.ok():
            raise
    finally:
        # Ctrl-C reaches a launched node twice (the terminal's and launch's SIGINT), and
        # impatient users press it again: shutting down is already under way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
