"""
Earliest-deadline-first scheduling of requests across tenants with bounded queues.

Each tenant keeps only its newest ``capacity`` requests (older frames are stale for a robot:
Dělen, IoTDI 2023, Sec. 4.3 serves the freshest frame); across tenants the request whose
deadline comes first is served first. Deadlines run from the frame's source stamp, so time
spent queueing eats into the budget.
"""

import bisect
from dataclasses import dataclass, field
import heapq
import itertools
import threading
from typing import Any, Dict, Iterator, List, Optional

__all__ = ['EdfScheduler', 'Request', 'ShareLedger']


@dataclass(eq=False, slots=True)
class Request:
    """
    One frame of one tenant waiting to be served.

    ``due_s`` orders requests (the deadline, or a nominal one for requests without a latency
    bound); ``seq`` is the arrival order; ``token``: the caller's, handed back with the
    answer (e.g. the source message's header). Times are in the server's clock (seconds). The goal
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
    token: Any = None


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

    def put(self, request: Request, *, expire_before: Optional[float] = None) -> List[Request]:
        """
        Queue a request; returns the older requests of its tenant dropped to make room.

        ``expire_before``: also drop the tenant's other requests due before this time.
        """
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
            if expire_before is not None:
                dropped += self._expire(request, expire_before)
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

    def _expire(self, newest: Request, before: float) -> List[Request]:
        queue = self._queues[newest.tenant]
        kept, expired = [], []
        for request in queue:
            late = request is not newest and request.deadline_s is not None \
                and request.deadline_s < before
            (expired if late else kept).append(request)
        if expired:
            queue[:] = kept
            self._size -= len(expired)
        return expired

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

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until a request is queued or the scheduler closes; False on timeout."""
        with self._condition:
            return bool(self._condition.wait_for(lambda: self._size or self._closed, timeout))

    def heads(self) -> List[Request]:
        """Return the earliest-due request of each tenant with requests queued."""
        with self._condition:
            return [queue[0] for queue in self._queues.values() if queue]

    def waiting(self, limit: int) -> Iterator[Request]:
        """Iterate over the ``limit`` earliest-due queued requests (as queued when called)."""
        with self._condition:
            queues = [queue[:limit] for queue in self._queues.values() if queue]
        return itertools.islice(heapq.merge(*queues, key=_key), limit)

    def contains(self, request: Request) -> bool:
        """Return True while ``request`` is queued."""
        with self._condition:
            return any(r is request for r in self._queues.get(request.tenant, ()))

    def take(self, request: Request) -> bool:
        """Remove ``request`` from its queue; False when it is no longer queued."""
        with self._condition:
            queue = self._queues.get(request.tenant, [])
            for position, queued in enumerate(queue):
                if queued is request:
                    del queue[position]
                    self._size -= 1
                    return True
            return False

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


class ShareLedger:
    """
    Each tenant's floor of the answers under overload (weights, equal by default).

    After every answer each tenant with work waiting earns its weight's share of that answer
    and the answered tenant pays one; a tenant whose credit reaches a whole answer is owed
    one (it goes first when the most urgent frame can wait for it) and a tenant owed
    ``STARVING`` answers goes first anyway. Without overload queues are short and nobody
    stays owed.
    """

    _CAP = 4.0
    STARVING = 2.0

    def __init__(self) -> None:
        self._weights: Dict[str, float] = {}
        self._credit: Dict[str, float] = {}

    def set_weight(self, tenant: str, weight: float) -> None:
        """Set a tenant's weight (> 0)."""
        weight = float(weight)
        if not (weight > 0 and weight < float('inf')):
            raise ValueError(f'share must be positive and finite, got {weight!r}')
        self._weights[tenant] = weight
        self._credit.setdefault(tenant, 0.0)

    def remove(self, tenant: str) -> None:
        """Forget a tenant."""
        self._weights.pop(tenant, None)
        self._credit.pop(tenant, None)

    def answered(self, tenant: str, backlogged: Any) -> None:
        """Account one answer of ``tenant`` while the tenants in ``backlogged`` waited."""
        waiting = {t for t in backlogged if t in self._weights} | {tenant}
        total = sum(self._weights.get(t, 1.0) for t in waiting)
        for name in waiting:
            credit = self._credit.get(name, 0.0) + self._weights.get(name, 1.0) / total
            if name == tenant:
                credit -= 1.0
            self._credit[name] = min(max(credit, -self._CAP), self._CAP)
        for name in set(self._credit) - waiting:  # an idle tenant keeps no claim
            self._credit[name] = min(self._credit[name], 0.0)

    def owed(self, waiting: Any) -> Optional[str]:
        """Return the waiting tenant owed the most (a whole answer or more), or None."""
        best, most = None, 1.0 - 1e-9
        for name in waiting:
            credit = self._credit.get(name, 0.0)
            if credit >= most:
                best, most = name, credit
        return best

    def credit(self, tenant: str) -> float:
        """Answers owed to a tenant (negative: it was served beyond its share)."""
        return self._credit.get(tenant, 0.0)
