"""``static``: always answer from one fixed exit (the baseline of Dělen's evaluation)."""

from typing import Any, Dict, Optional

from .base import Plan, Policy, PolicyError, register_policy, RequestContext
from ..conditions import ExitStatus

__all__ = ['StaticPolicy']


@register_policy
class StaticPolicy(Policy):
    """Run straight to ``exit_index`` (negative counts from the end: -1 is the final exit)."""

    name = 'static'

    def __init__(self, *, exit_index: int = -1, threads: Optional[int] = None) -> None:
        super().__init__(threads=threads)
        if isinstance(exit_index, bool) or int(exit_index) != exit_index:
            raise PolicyError(f'static: exit_index must be an integer, got {exit_index!r}')
        self.exit_index = int(exit_index)

    def attach(self, profile: Any) -> None:
        """Refuse an exit the model does not have."""
        if not -profile.num_exits <= self.exit_index < profile.num_exits:
            raise PolicyError(f'static: exit_index {self.exit_index} out of range for a model '
                              f'with {profile.num_exits} exits')

    def plan(self, context: RequestContext) -> Plan:
        """Plan the fixed exit with the fixed (or default) threads."""
        target = self.exit_index % context.num_exits
        return Plan(threads=self.threads or context.default_threads, target_exit=target)

    def should_stop(self, status: ExitStatus) -> bool:
        """Stop at the fixed exit (the executor already does so for a planned target)."""
        return status.exit_index >= self.exit_index % status.num_exits

    def params(self) -> Dict[str, Any]:
        """Return exit_index (and threads when fixed)."""
        return {'exit_index': self.exit_index, **super().params()}
