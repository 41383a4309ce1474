"""
Launch the delen_ros serving stack: server and governor, plus cameras with demo:=true.

    ros2 launch delen_ros serve.launch.py
    ros2 launch delen_ros serve.launch.py demo:=true
    ros2 launch delen_ros serve.launch.py config:=/path/params.yaml namespace:=robot1
    ros2 launch delen_ros serve.launch.py managed:=true autostart:=false  # for a lifecycle manager

Machines without ``ros2 launch`` run the same nodes from the same file with
``ros2 run delen_ros bringup [--demo] [--config FILE]``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from delen_ros.nodes.config_file import CAMERA_PREFIX, node_sections
from delen_ros.nodes.dds_profile import PROFILE_VARIABLES
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction,
                            RegisterEventHandler, SetEnvironmentVariable, Shutdown)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit, OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def _node_arguments():
    return ['--executor', LaunchConfiguration('executor'),
            '--ros-args', '--log-level', LaunchConfiguration('log_level')]


def _nodes(context, *args, **kwargs):
    """Return the server, governor, power trace and one camera per delen_camera_* section."""
    # Each node gets its section as a dict, which launch_ros writes under the ``/**`` wildcard,
    # so it also reaches a node in a namespace (the file's keys are bare node names, which rcl
    # matches against the fully qualified name: ``/robot1/delen_server`` would miss).
    sections = node_sections(LaunchConfiguration('config').perform(context))
    server = dict(sections.get('delen_server', {}))
    model = LaunchConfiguration('model').perform(context)
    if model:
        server['model'] = model
    models = LaunchConfiguration('models').perform(context)
    if models:
        server['models'] = [entry.strip() for entry in models.split(',') if entry.strip()]
    demo = IfCondition(LaunchConfiguration('demo'))
    common = {'package': 'delen_ros', 'namespace': LaunchConfiguration('namespace'),
              'output': 'screen', 'arguments': _node_arguments()}
    if _true(LaunchConfiguration('managed').perform(context)):
        server_node = LifecycleNode(executable='managed_server', name='delen_server', **common,
                                    parameters=[server])
        server_actions = [server_node]
        if _true(LaunchConfiguration('autostart').perform(context)):
            server_actions += _autostart(server_node)
    else:
        server_node = Node(executable='server', name='delen_server', **common,
                           parameters=[server])
        server_actions = [server_node]
    return (server_actions
            + [RegisterEventHandler(OnProcessExit(target_action=server_node,
                                                  on_exit=_server_exited)),
               Node(executable='governor', name='delen_governor', **common,
                    parameters=[sections.get('delen_governor', {})]),
               Node(executable='power_trace', name='delen_power_trace', **common,
                    parameters=[sections.get('delen_power_trace', {})], condition=demo)]
            + [Node(executable='camera', name=name, **common,
                    parameters=[sections[name]], condition=demo)
               for name in sections if name.startswith(CAMERA_PREFIX)])


def _true(text):
    return text.strip().lower() in ('true', '1', 'yes')


def _autostart(server_node):
    """Configure the managed server once it runs, activate it once it is configured."""
    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(server_node),
                                           transition_id=transition_id))
    return [
        RegisterEventHandler(OnProcessStart(
            target_action=server_node,
            on_start=[transition(Transition.TRANSITION_CONFIGURE)])),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=server_node, goal_state='inactive',
            entities=[transition(Transition.TRANSITION_ACTIVATE)])),
    ]


def _server_exited(event, context):
    """End the launch when the server ends (it is required), saying why."""
    if event.returncode == 0:
        return [LogInfo(msg='delen_server exited; shutting the launch down'),
                Shutdown(reason='delen_server exited')]
    # An error out of an event handler is how launch ends with a non-zero exit code; it logs
    # this one line (the traceback only at debug level) and shuts everything down.
    raise RuntimeError(f'delen_server exited with code {event.returncode} (its last line '
                       'above says why); shutting the launch down')


def generate_launch_description():
    """Declare the arguments and the nodes."""
    share = get_package_share_directory('delen_ros')
    arguments = [
        DeclareLaunchArgument(
            'config', default_value=os.path.join(share, 'config', 'three_tenants.yaml'),
            description='parameter file for every node (tenants, goals, cameras, governor)'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="multi-exit checkpoint to serve; empty: the config file's model, else "
                        'the shipped Fashion-MNIST model'),
        DeclareLaunchArgument(
            'models', default_value='',
            description='comma-separated checkpoints (or shipped model names) that join the '
                        "first in the model family; empty: the config file's models"),
        DeclareLaunchArgument(
            'namespace', default_value='', description='namespace of every node'),
        DeclareLaunchArgument(
            'demo', default_value='false',
            description='also start the Fashion-MNIST cameras and the scripted power trace'),
        DeclareLaunchArgument(
            'managed', default_value='false', choices=['true', 'false'],
            description='run the server as a managed (lifecycle) node, executable '
                        'managed_server: configure loads the model, activate serves'),
        DeclareLaunchArgument(
            'autostart', default_value='true', choices=['true', 'false'],
            description='with managed:=true, configure and activate the server at once; '
                        'false leaves it unconfigured for a lifecycle manager'),
        DeclareLaunchArgument(
            'log_level', default_value='info', description='log level of every node'),
        DeclareLaunchArgument(
            'executor', default_value='single', choices=['single', 'multi'],
            description='rclpy executor of every node; multi only where rclpy has the '
                        'MultiThreadedExecutor fix of ros2/rclpy#1547 (see docs/serving_path.md)'),
    ]
    # Fast DDS transports for camera-size images, unless the environment names a profile.
    profile = []
    if not any(name in os.environ for name in PROFILE_VARIABLES):
        profile.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                              os.path.join(share, 'config', 'fastdds.xml')))
    return LaunchDescription(arguments + profile + [OpaqueFunction(function=_nodes)])
