"""
The BudgetAdjustment topic: its name and QoS, and the server's side of it.

The governor publishes adjustments; the server keeps its tenants' base goals (their
parameters) and serves the effective goals of ``delen_ros.governor.AdjustedGoals``.
"""

from typing import Dict

from delen_ros.governor import AdjustedGoals, Adjustment
from delen_ros.msg import BudgetAdjustment
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ['ADJUSTMENT_TOPIC', 'BudgetAdjustments', 'adjustment_qos']

# Relative: a namespace moves the governor and the server together.
ADJUSTMENT_TOPIC = 'delen/budget_adjustment'
_EXPIRY_PERIOD_S = 0.25


def adjustment_qos(depth: int = 1) -> QoSProfile:
    """Reliable and transient-local: a (re)started server gets the latest adjustment."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class BudgetAdjustments:
    """
    The serving node's adjustment input: subscription, expiry timer, timeout parameter.

    ``set_base`` takes a tenant's goal from its parameters and sets the effective goal on
    the runtime (``runtime.set_goal``); adjustments arriving and lapsing do the same.
    """

    def __init__(self, node: Node, runtime, *, timeout_parameter: str) -> None:
        self._node = node
        self._timeout_parameter = timeout_parameter
        self.goals = AdjustedGoals(timeout_s=node.get_parameter(timeout_parameter).value,
                                   apply=runtime.set_goal)
        self.rejected = 0
        self.last_rejection = ''
        group = MutuallyExclusiveCallbackGroup()
        self._subscription = node.create_subscription(
            BudgetAdjustment, ADJUSTMENT_TOPIC, self._adjustment_callback,
            adjustment_qos(depth=10), callback_group=group)
        # Armed only while an adjustment is in force: each wake-up of the executor thread
        # takes the GIL from the serving thread (docs/serving_path.md).
        self._timer = node.create_timer(_EXPIRY_PERIOD_S, self._expiry_callback,
                                        callback_group=group, autostart=False)
        node.add_post_set_parameters_callback(self._parameters_callback)

    def destroy(self) -> None:
        """Stop listening (a managed server's cleanup: the next configure makes a new one)."""
        self._node.destroy_subscription(self._subscription)
        self._node.destroy_timer(self._timer)
        self._node.remove_post_set_parameters_callback(self._parameters_callback)

    def set_base(self, tenant: str, goal) -> None:
        """Take a tenant's base goal; the runtime gets the effective one."""
        self.goals.set_base(tenant, goal)

    def _now_s(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def _adjustment_callback(self, msg: BudgetAdjustment) -> None:
        try:
            adjustment = Adjustment.from_message(
                latency_scale=msg.latency_scale, accuracy_relaxation=msg.accuracy_relaxation,
                energy_scale=msg.energy_scale)
            changed = self.goals.receive(msg.tenant, adjustment, msg.reason, self._now_s())
        except Exception as error:  # noqa: B902 - a bad message must never stop the server
            self.rejected += 1
            self.last_rejection = f'{type(error).__name__}: {error}'
            self._node.get_logger().warning(f'BudgetAdjustment ignored: {self.last_rejection}',
                                            throttle_duration_sec=10.0)
            return
        if self._timer.is_canceled():
            self._timer.reset()
        for tenant in changed:
            self._log(tenant, msg.reason or adjustment.describe())

    def _expiry_callback(self) -> None:
        for tenant in self.goals.expire(self._now_s()):
            self._log(tenant, f'no adjustment for {self.goals.timeout_s:g} s: base budgets')
        if self.goals.next_expiry_s() is None:
            self._timer.cancel()

    @property
    def expiry_armed(self) -> bool:
        """Whether the expiry timer runs (only while an adjustment is in force)."""
        return not self._timer.is_canceled()

    def _parameters_callback(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == self._timeout_parameter:
                self.goals.timeout_s = float(parameter.value)

    def _log(self, tenant: str, why: str) -> None:
        self._node.get_logger().info(f'tenant {tenant}: goal {self.goals.effective(tenant)} '
                                     f'(base {self.goals.base(tenant)}; {why})')

    def status_fields(self, tenant: str) -> Dict[str, object]:
        """Return the TenantStatus fields of the base bounds and the adjustment's reason."""
        base = self.goals.base(tenant)
        return {'base_latency_bound_ms': float(base.latency_ms or 0.0),
                'base_min_accuracy': float(base.min_accuracy or 0.0),
                'base_energy_bound_mj': float(base.energy_mj or 0.0),
                'adjustment_reason': self.goals.reason(tenant)}

    def tenant_values(self, tenant: str) -> Dict[str, str]:
        """Diagnostic values of one tenant: base and effective goal, adjustment in force."""
        return {'base_goal': str(self.goals.base(tenant)),
                'effective_goal': str(self.goals.effective(tenant)),
                'adjustment': self.goals.reason(tenant) or 'none'}

    def server_values(self) -> Dict[str, str]:
        """Diagnostic values of the adjustment input as a whole."""
        return {'budget_adjustment': self.goals.describe(self._now_s()),
                'adjustment_timeout_s': f'{self.goals.timeout_s:g}',
                'adjustment_expiry_timer': 'armed' if self.expiry_armed else 'idle',
                'adjustments_rejected': str(self.rejected),
                'last_adjustment_rejection': self.last_rejection}
