"""
The serving thread takes its frames from ROS itself: no executor, no hand-over.

The image subscriptions live in a callback group no executor runs (``can_execute`` is
False, so rclpy's executors leave them out of their wait sets, single- or multi-threaded).
The runtime's inference worker owns an rcl wait set over them plus a guard condition: it
waits there while idle and takes new frames between stages (``poll``), so a frame goes from
DDS to the network on one thread. Parameters, timers and status stay on the executor.

Frames that never reach the worker (lost in transport, or replaced in a subscription's
history while the worker was busy) show as gaps in each publisher's sequence numbers.

Their QoS events (deadline missed, message lost, incompatible QoS) are in no wait set that
blocks: Fast DDS wakes a wait on a reader's events while any sample is unread, so an
executor waiting on them spins, nothing ready, for as long as frames wait for the worker,
and takes the GIL the worker needs (3 tenants at 20 Hz: 2,800 empty wake-ups in 14 s
against 170). ``take_events`` takes them without blocking, from a timer.
"""

import collections
import contextlib
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

__all__ = ['ImageIntake', 'NeverExecutedGroup', 'sequence_gap']


class NeverExecutedGroup(CallbackGroup):
    """A callback group no executor runs: its entities are served by their own thread."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class ImageIntake:
    """
    A FrameSource (delen_ros.runtime.server) over a node's image subscriptions.

    ``add(subscription, on_message, on_missed)``: ``on_message(msg, transport_ms, wake_ms)``
    runs on the worker for every frame taken; ``transport_ms`` is the middleware's receive time
    minus the publisher's source time (None when the middleware gives neither). ``wake_ms``
    is the time from the middleware's receive time to the take, for the first frame taken after
    a wait ended (what a waiting subscriber's wake-up costs here, under the load of the moment;
    None for the other frames, which also waited for the worker's work). ``on_missed(n)``
    runs when a publisher's sequence numbers skip ``n`` frames (the middleware must give
    them: Fast DDS does). ``waited_ms`` keeps the
    last frames' time between reaching this process and being taken. ``taken`` counts frames;
    ``waits`` and ``wakeups`` count the worker's waits and the wake-ups by another thread
    (the hand-overs left).
    """

    def __init__(self, node) -> None:
        self.group = NeverExecutedGroup()
        self._context = node.context
        self._entries: List[Tuple[object, Callable, Optional[Callable], Dict]] = []
        self._lock = threading.Lock()
        self._guard = GuardCondition(None, None, context=node.context)
        self.taken = self.waits = self.wakeups = 0
        self.waited_ms = collections.deque(maxlen=1000)
        self._after_wait = False  # the next frame taken times the worker's wake-up

    def add(self, subscription, on_message: Callable,
            on_missed: Optional[Callable[[int], None]] = None) -> None:
        """Serve ``subscription`` (created with ``callback_group=self.group``) from the worker."""
        with self._lock:
            self._entries = self._entries + [(subscription, on_message, on_missed, {})]

    def remove(self, subscription) -> None:
        """Stop serving ``subscription`` (before it is destroyed); a wait in progress restarts."""
        with self._lock:
            self._entries = [entry for entry in self._entries if entry[0] is not subscription]
        self.wake()

    def poll(self) -> int:
        """Take every frame ready now and hand it to its callback; return how many."""
        count = 0
        after_wait, self._after_wait = self._after_wait, False
        for subscription, on_message, on_missed, sequences in self._entries:
            while True:
                try:
                    with subscription.handle:
                        taken = subscription.handle.take_message(subscription.msg_type,
                                                                 subscription.raw)
                except Exception:  # noqa: B902 - destroyed or shut down: nothing to take
                    break
                if taken is None:
                    break
                count += 1
                msg, info = taken
                transport = wake = None
                source, received = info.get('source_timestamp'), info.get('received_timestamp')
                if source and received:
                    transport = (received - source) * 1e-6
                    waited = (time.time_ns() - received) * 1e-6
                    self.waited_ms.append(waited)
                    if after_wait and count == 1:
                        wake = waited
                if on_missed is not None:
                    missed = sequence_gap(sequences, info)
                    if missed:
                        on_missed(missed)
                on_message(msg, transport, wake)
        self.taken += count
        return count

    def wait(self, timeout: float) -> None:
        """Block until a subscription has a frame, ``wake`` is called, or ``timeout`` s."""
        if not self._context.ok():
            time.sleep(timeout)
            return
        entries = self._entries
        self.waits += 1
        try:
            with contextlib.ExitStack() as stack:
                handles = [entry[0].handle for entry in entries]
                for handle in handles:
                    stack.enter_context(handle)
                guard = self._guard.handle
                stack.enter_context(guard)
                wait_set = _rclpy.WaitSet(len(handles), 1, 0, 0, 0, 0, self._context.handle)
                for handle in handles:
                    wait_set.add_subscription(handle)
                wait_set.add_guard_condition(guard)
                wait_set.wait(int(timeout * 1e9))
            self._after_wait = True
        except Exception:  # noqa: B902 - the context went down under us
            if self._context.ok():
                raise
            time.sleep(timeout)

    def take_events(self) -> int:
        """Run the callbacks of the subscriptions' QoS events that fired; never blocks."""
        handlers = [handler for entry in self._entries for handler in entry[0].event_handlers]
        if not handlers or not self._context.ok():
            return 0
        try:
            with contextlib.ExitStack() as stack:
                for handler in handlers:
                    stack.enter_context(handler)
                wait_set = _rclpy.WaitSet(0, 0, 0, 0, 0, len(handlers), self._context.handle)
                for handler in handlers:
                    handler.add_to_wait_set(wait_set)
                wait_set.wait(0)
                events = [(handler, handler.take_data()) for handler in handlers
                          if handler.is_ready(wait_set)]
        except Exception:  # noqa: B902 - the context went down under us
            if self._context.ok():
                raise
            return 0
        for handler, event in events:
            if event is not None:
                handler.callback(event)
        return len(events)

    def waited_p50(self) -> str:
        """Median time recent frames waited between reaching this process and being taken."""
        waited = sorted(self.waited_ms)
        return f'{waited[len(waited) // 2]:.2f}' if waited else ''

    def wake(self) -> None:
        """Make the worker's wait return (from any thread)."""
        self.wakeups += 1
        try:
            self._guard.trigger()
        except Exception:  # noqa: B902 - already destroyed at shutdown
            pass

    def destroy(self) -> None:
        """Release the guard condition (after the worker stopped)."""
        self._guard.destroy()


_PUBLISHERS_KEPT = 64


def sequence_gap(sequences: Dict[bytes, int], info: dict) -> int:
    """Frames a publisher sent between its last frame taken here and this one."""
    number, gid = info.get('publication_sequence_number'), info.get('publisher_gid')
    if not number or not gid or number >= 2 ** 63:  # not given by this middleware
        return 0
    key = bytes(gid['data'])
    last = sequences.pop(key, None)
    sequences[key] = number if last is None else max(last, number)
    if len(sequences) > _PUBLISHERS_KEPT:  # publishers come and go
        del sequences[next(iter(sequences))]
    return number - last - 1 if last is not None and number > last else 0
