"""
Launch the delen_ros serving stack: server and governor, plus cameras with demo:=true.

    ros2 launch delen_ros serve.launch.py
    ros2 launch delen_ros serve.launch.py demo:=true
    ros2 launch delen_ros serve.launch.py config:=/path/params.yaml namespace:=robot1

Machines without ``ros2 launch`` run the same nodes from the same file with
``ros2 run delen_ros bringup [--demo] [--config FILE]``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from delen_ros.nodes.config_file import CAMERA_PREFIX, node_sections
from delen_ros.nodes.dds_profile import PROFILE_VARIABLES
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


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
    demo = IfCondition(LaunchConfiguration('demo'))
    common = {'package': 'delen_ros', 'namespace': LaunchConfiguration('namespace'),
              'output': 'screen', 'arguments': _node_arguments()}
    return ([Node(executable='server', name='delen_server', **common, parameters=[server]),
             Node(executable='governor', name='delen_governor', **common,
                  parameters=[sections.get('delen_governor', {})]),
             Node(executable='power_trace', name='delen_power_trace', **common,
                  parameters=[sections.get('delen_power_trace', {})], condition=demo)]
            + [Node(executable='camera', name=name, **common,
                    parameters=[sections[name]], condition=demo)
               for name in sections if name.startswith(CAMERA_PREFIX)])


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
            'namespace', default_value='', description='namespace of every node'),
        DeclareLaunchArgument(
            'demo', default_value='false',
            description='also start the Fashion-MNIST cameras and the scripted power trace'),
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
