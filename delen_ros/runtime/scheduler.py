"""
Earliest-deadline-first scheduling of requests across tenants with bounded queues.

Each tenant keeps only its newest ``capacity`` requests (older frames are stale for a robot:
Dělen, IoTDI 2023, Sec. 4.3 serves the freshest frame); across tenants the request whose
deadline comes first is served first. Deadlines run from the frame's source stamp, so time
spent queueing eats into the budget.
"""

import bisect
from dataclasses import dataclass, field
import itertools
import threading
from typing import Any, Dict, List, Optional

__all__ = ['EdfScheduler', 'Request']


@dataclass(eq=False, slots=True)
class Request:
    """
    One frame of one tenant waiting to be served.

    ``due_s`` orders requests (the deadline, or a nominal one for requests without a latency
    bound); ``seq`` is the arrival order. Times are in the server's clock (seconds). The goal
    and policy in force when the frame was submitted travel with it.
    """

    tenant: str
    stamp_s: float
    due_s: float
    deadline_s: Optional[float]
    tensor: Any = None
    frame_id: str = ''
    label: Optional[int] = None
    goal: Any = None
    policy: Any = None
    seq: int = field(default=0)


def _key(request: Request):
    return (request.due_s, request.seq)


class EdfScheduler:
    """
    Thread-safe EDF queue over per-tenant bounded queues.

    ``put`` never blocks: a full tenant queue drops (and returns) its oldest request.
    ``get`` blocks until a request is due or the scheduler is closed.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queues: Dict[str, List[Request]] = {}
        self._capacity: Dict[str, int] = {}
        self._seq = itertools.count()
        self._closed = False
        self._size = 0

    def add_tenant(self, tenant: str, capacity: int) -> None:
        """Register a tenant with room for ``capacity`` queued requests."""
        capacity = _check_capacity(capacity)
        with self._condition:
            if tenant in self._queues:
                raise ValueError(f'tenant {tenant!r} is already scheduled')
            self._queues[tenant] = []
            self._capacity[tenant] = capacity

    def set_capacity(self, tenant: str, capacity: int) -> List[Request]:
        """Change a tenant's queue bound; returns the requests dropped to fit it."""
        capacity = _check_capacity(capacity)
        with self._condition:
            self._capacity[tenant] = capacity
            return self._trim(tenant)

    def remove_tenant(self, tenant: str) -> List[Request]:
        """Forget a tenant; returns its pending requests."""
        with self._condition:
            pending = self._queues.pop(tenant, [])
            self._capacity.pop(tenant, None)
            self._size -= len(pending)
            return pending

    def put(self, request: Request) -> List[Request]:
        """Queue a request; returns the older requests of its tenant dropped to make room."""
        with self._condition:
            if self._closed:
                raise RuntimeError('scheduler is closed')
            queue = self._queues.get(request.tenant)
            if queue is None:
                raise KeyError(f'unknown tenant {request.tenant!r}')
            request.seq = next(self._seq)
            bisect.insort(queue, request, key=_key)
            self._size += 1
            dropped = self._trim(request.tenant)
            self._condition.notify()
            return dropped

    def _trim(self, tenant: str) -> List[Request]:
        queue = self._queues[tenant]
        dropped = []
        while len(queue) > self._capacity[tenant]:
            oldest = min(range(len(queue)), key=lambda i: queue[i].seq)
            dropped.append(queue.pop(oldest))
        self._size -= len(dropped)
        return dropped

    def _pop_earliest(self) -> Optional[Request]:
        best = None
        for queue in self._queues.values():
            if queue and (best is None or _key(queue[0]) < _key(best[0])):
                best = queue
        if best is None:
            return None
        self._size -= 1
        return best.pop(0)

    def get(self, timeout: Optional[float] = None) -> Optional[Request]:
        """Pop the request with the earliest due time; None when closed or on timeout."""
        with self._condition:
            if not self._size and not self._closed:
                self._condition.wait_for(lambda: self._size or self._closed, timeout)
            if self._closed:
                return None
            return self._pop_earliest()

    def get_nowait(self) -> Optional[Request]:
        """Pop the earliest request if one is queued, else return None."""
        with self._condition:
            return None if self._closed else self._pop_earliest()

    def pending(self, tenant: Optional[str] = None) -> int:
        """Queued requests of one tenant, or of all."""
        with self._condition:
            if tenant is None:
                return self._size
            return len(self._queues.get(tenant, ()))

    def close(self) -> List[Request]:
        """Wake every waiter, refuse new requests and return the pending ones (oldest first)."""
        with self._condition:
            self._closed = True
            pending = [r for queue in self._queues.values() for r in queue]
            for queue in self._queues.values():
                queue.clear()
            self._size = 0
            self._condition.notify_all()
        return sorted(pending, key=lambda r: r.seq)

    def reopen(self) -> None:
        """Accept requests again after close."""
        with self._condition:
            self._closed = False

    @property
    def closed(self) -> bool:
        """Return True between close and reopen."""
        return self._closed


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
        raise ValueError(f'queue size must be a positive integer, got {capacity!r}')
    return int(capacity)
