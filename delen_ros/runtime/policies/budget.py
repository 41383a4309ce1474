"""
``budget``: Dělen-style conditional execution under the tenant's goal (IoTDI 2023, Sec. 4).

It plans first: before a request starts it picks the deepest exit whose predicted cost (the
profile scaled by the current slowdown estimate, plus the answer's delivery) fits the
latency and energy budget, and runs straight to it. Intermediate heads run only where an
answer can end the request early: under an accuracy goal, at the exits whose best calibrated
accuracy reaches the bound. At those exits (and for policies without a plan, after every
exit): stop before the next stage would overrun what is left of the latency or
energy budget (its cost predicted from the profile, corrected by measured latencies); under an
accuracy goal, stop as soon as the expected accuracy at this exit's calibrated confidence
(the profile's accuracy-vs-confidence curve) reaches the bound.

An accuracy bound is a bound on the mean: answers that reach the last exit unconfident pull
it down, so the threshold used for stopping early is raised by a small integral controller
fed with the expected accuracy of every final answer (no labels needed).
"""

from typing import Any, Dict, Optional

from .base import Outcome, Plan, Policy, register_policy, RequestContext
from ..conditions import ExitStatus, next_stage_fits
from ..goals import GoalKind

__all__ = ['BudgetPolicy']


@register_policy
class BudgetPolicy(Policy):
    """
    Deepest exit within the latency/energy budget; earliest exit meeting an accuracy bound.

    ``accuracy_margin`` is added to an accuracy bound; ``gain`` is the step of the controller
    that raises it while the running expected accuracy is below the bound (0 disables it).
    """

    name = 'budget'

    def __init__(self, *, threads: Optional[int] = None, accuracy_margin: float = 0.01,
                 gain: float = 0.05) -> None:
        super().__init__(threads=threads)
        self.accuracy_margin = self._check_fraction('accuracy_margin', accuracy_margin)
        self.gain = self._check_fraction('gain', gain)
        self.fits = next_stage_fits()
        self.boost = 0.0
        self._bound: Optional[float] = None

    def plan(self, context: RequestContext) -> Plan:
        """Pick the deepest exit that fits, and the earlier exits where it may stop."""
        threads = self.threads or context.default_threads
        if context.stages is None:  # no stage costs: decide after every exit, as before
            return Plan(threads=threads)
        split = context.stages.split(threads)
        costs = context.cost.setting(threads)
        slowdown = costs.latency.upper
        goal = context.goal
        stops: tuple = ()
        if goal.kind is GoalKind.ACCURACY:
            bound = goal.min_accuracy + self.accuracy_margin + self.boost
            curve = context.stages.accuracy
            stops = tuple(k for k in range(context.num_exits - 1) if curve(k, 1.0) >= bound)
        target = context.num_exits - 1
        while target > 0:
            heads = [k for k in stops if k < target]
            latency = split.path_ms(target, heads) * slowdown
            energy = sum(costs.nominal_mj[k] * costs.energy_factor(k) for k in range(target + 1))
            if latency <= context.remaining_ms and energy <= context.energy_budget_mj:
                break
            target -= 1
        return Plan(threads=threads, target_exit=target,
                    stop_exits=tuple(k for k in stops if k < target))

    def should_stop(self, status: ExitStatus) -> bool:
        """Stop when the next stage does not fit, or when the accuracy bound is reached."""
        if not self.fits.test(status):
            return True
        goal = status.goal
        if goal.kind is GoalKind.ACCURACY:
            return status.expected_accuracy >= (goal.min_accuracy + self.accuracy_margin
                                                + self.boost)
        return False

    def observe(self, outcome: Outcome) -> None:
        """Integrate the accuracy deficit of final answers (accuracy goals only)."""
        goal = outcome.goal
        if goal.kind is not GoalKind.ACCURACY or not self.gain:
            return
        if goal.min_accuracy != self._bound:
            self._bound, self.boost = goal.min_accuracy, 0.0
        deficit = goal.min_accuracy - outcome.expected_accuracy
        self.boost = min(max(self.boost + self.gain * deficit, 0.0), 1.0 - goal.min_accuracy)

    def params(self) -> Dict[str, Any]:
        """Return the non-default parameters."""
        params: Dict[str, Any] = {}
        if self.accuracy_margin != 0.01:
            params['accuracy_margin'] = self.accuracy_margin
        if self.gain != 0.05:
            params['gain'] = self.gain
        return {**params, **super().params()}
