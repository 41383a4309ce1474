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
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

CAMERA_PREFIX = 'delen_camera'


def _node_arguments():
    return ['--executor', LaunchConfiguration('executor'),
            '--ros-args', '--log-level', LaunchConfiguration('log_level')]


def _cameras(context, *args, **kwargs):
    """One camera node per delen_camera_* section of the parameter file."""
    config = LaunchConfiguration('config').perform(context)
    with open(config) as stream:
        sections = yaml.safe_load(stream) or {}
    return [Node(package='delen_ros', executable='camera', name=name,
                 namespace=LaunchConfiguration('namespace'), parameters=[config],
                 arguments=_node_arguments(),
                 condition=IfCondition(LaunchConfiguration('demo')), output='screen')
            for name in sections if name.startswith(CAMERA_PREFIX)]


def generate_launch_description():
    """Declare the arguments and the nodes."""
    share = get_package_share_directory('delen_ros')
    arguments = [
        DeclareLaunchArgument(
            'config', default_value=os.path.join(share, 'config', 'three_tenants.yaml'),
            description='parameter file for every node (tenants, goals, cameras, governor)'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='multi-exit checkpoint to serve; empty: the shipped Fashion-MNIST model'),
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
    config = LaunchConfiguration('config')
    namespace = LaunchConfiguration('namespace')
    node_args = _node_arguments()
    server = Node(package='delen_ros', executable='server', name='delen_server',
                  namespace=namespace, output='screen', arguments=node_args,
                  parameters=[config, {'model': LaunchConfiguration('model')}])
    governor = Node(package='delen_ros', executable='governor', name='delen_governor',
                    namespace=namespace, output='screen', arguments=node_args,
                    parameters=[config])
    power_trace = Node(package='delen_ros', executable='power_trace', name='delen_power_trace',
                       namespace=namespace, output='screen', arguments=node_args,
                       parameters=[config],
                       condition=IfCondition(LaunchConfiguration('demo')))
    return LaunchDescription(arguments + [server, governor, power_trace,
                                          OpaqueFunction(function=_cameras)])
