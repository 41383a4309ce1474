"""One way to run a node as an executable: the executor, start-up errors as one line, Ctrl-C."""

import argparse
import os
import signal
import sys
import traceback
from typing import Callable, Optional, Sequence, Tuple, Type

from delen_ros.nodes.dds_profile import use_default_profiles
from delen_ros.nodes.entry import INTERRUPTED
import rclpy
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import (Executor, ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

__all__ = ['EXECUTORS', 'add_executor_argument', 'make_executor', 'one_line', 'run_node']

EXECUTORS = ('single', 'multi')
# Set to 1 to see the traceback of an unexpected start-up error (normally one line).
TRACEBACK_VARIABLE = 'DELEN_TRACEBACK'


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


def one_line(error: BaseException) -> str:
    """Return an exception's message on one line (its type name when it has none)."""
    text = ' '.join(str(error).split())
    return text or type(error).__name__


def run_node(factory: Callable[[], Node], *, name: str,
             startup_errors: Tuple[Type[BaseException], ...] = (ValueError,),
             args: Optional[Sequence[str]] = None) -> int:
    """
    Create a node, spin it until shutdown, return the exit code.

    Command line: ``[--executor single|multi] [--ros-args ...]``. Fast DDS gets the shipped
    profile for large images unless the environment names one (``dds_profile``). Any error
    while starting (bad ROS arguments or parameter file, an exception of ``startup_errors``,
    an rclpy parameter error, anything else) is printed as one line, ``<name>: <message>``,
    and gives exit code 1; Ctrl-C while starting gives ``INTERRUPTED``. ``DELEN_TRACEBACK=1``
    adds the traceback of errors that are not of the expected kinds.
    """
    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(prog=name, description=f'Run the {name} node.')
    add_executor_argument(parser)
    try:
        options = parser.parse_args(remove_ros_args(argv)[1:])
        use_default_profiles()  # camera-size images (config/fastdds.xml)
        rclpy.init(args=argv)
        node = factory()
    except KeyboardInterrupt:
        return _startup_failed(name, 'interrupted while starting', INTERRUPTED)
    except startup_errors + (ParameterException,) as error:
        return _startup_failed(name, one_line(error))
    except Exception as error:  # noqa: B902 - every start-up error ends in one line
        if os.environ.get(TRACEBACK_VARIABLE) == '1':
            traceback.print_exc()
        return _startup_failed(name, f'cannot start: {type(error).__name__}: {one_line(error)}')
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


def _startup_failed(name: str, message: str, code: int = 1) -> int:
    print(f'{name}: {message}', file=sys.stderr)
    try:
        # Destroys a half-built node too; whatever that raises is no news after the message.
        rclpy.try_shutdown()
    except BaseException:  # noqa: B902
        pass
    return code
