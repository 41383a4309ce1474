"""
The serving node as a managed (lifecycle) node, as nav2 users run perception.

The same ServingCore as ``server``; each lifecycle transition is one of its steps:
configure loads the model and declares the tenants, activate opens the topics and services
and serves, deactivate stops serving and keeps the configuration, cleanup frees the model.
A transition that fails says why in one line and leaves the node where it was.
"""

from delen_ros.engine import CheckpointError
from delen_ros.engine.profiling import ProfileError
from delen_ros.nodes.server_node import ServingCore
from delen_ros.nodes.spin import run_node
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

__all__ = ['ManagedServerNode', 'main']

_CONFIGURE_ERRORS = (CheckpointError, ProfileError, ValueError, KeyError)


class ManagedServerNode(LifecycleNode):
    """delen_server as a lifecycle node: unconfigured until told otherwise."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop('node_name', 'delen_server'), **kwargs)
        self.core = ServingCore(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and declare the tenants."""
        try:
            self.core.configure()
        except _CONFIGURE_ERRORS as error:
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'configured: {len(self.core.tenant_names())} tenants')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Open the topics and services, start serving."""
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop serving; the model and the tenants stay."""
        self.core.deactivate()
        self.get_logger().info('deactivated: not serving, configuration kept')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Undeclare the tenants and free the model."""
        self.core.cleanup()
        self.get_logger().info('cleaned up: model freed')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state."""
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything; the node goes back to unconfigured."""
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop serving and free the model before the node goes."""
        self.core.cleanup()
        super().destroy_node()


def main(args=None) -> int:
    """Run the managed node (ros2 run delen_ros managed_server)."""
    return run_node(ManagedServerNode, name='delen_server', args=args)
