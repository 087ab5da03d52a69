"""The per-session scheduler: reads side by side, writes in arrival order, never blocking a pool thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class _Ticket:
    """A scheduled request: runs once every ticket it depends on is done."""

    __slots__ = ("run", "pending", "waiters", "done", "lane")

    def __init__(self, run: Callable[[], None], lane: str | None) -> None:
        self.run = run
        self.pending = 0
        self.waiters: list[_Ticket] = []
        self.done = False
        self.lane = lane


class _Lane:
    __slots__ = ("last_write", "reads")

    def __init__(self) -> None:
        self.last_write: _Ticket | None = None
        self.reads: set[_Ticket] = set()


class SessionScheduler:
    """Orders requests per session without ever blocking a pool thread.

    A "read" (execute_program) runs as soon as the session's last earlier write is
    done, side by side with other reads. A "write" waits for everything earlier in its
    session and holds back what comes after. A "global" write does that across all
    sessions. Dependencies are fixed at arrival, so the order is the order frames came in.
    """

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._barrier: _Ticket | None = None

    def schedule(self, session_id: str, scheduling: str, run: Callable[[], None]) -> None:
        ticket = _Ticket(run, None if scheduling == "global" else session_id)
        with self._lock:
            deps: list[_Ticket] = []
            if scheduling == "global":
                for lane in self._lanes.values():
                    deps.extend(lane.reads)
                    if lane.last_write is not None:
                        deps.append(lane.last_write)
                self._lanes.clear()
                if self._barrier is not None:
                    deps.append(self._barrier)
                self._barrier = ticket
            else:
                lane = self._lanes.get(session_id)
                if lane is None:
                    lane = self._lanes[session_id] = _Lane()
                if self._barrier is not None:
                    deps.append(self._barrier)
                if lane.last_write is not None:
                    deps.append(lane.last_write)
                if scheduling == "write":
                    deps.extend(lane.reads)
                    lane.reads = set()
                    lane.last_write = ticket
                else:
                    lane.reads.add(ticket)
            for dep in deps:
                if not dep.done:
                    dep.waiters.append(ticket)
                    ticket.pending += 1
            ready = ticket.pending == 0
        if ready:
            self._submit(ticket)

    def _submit(self, ticket: _Ticket) -> None:
        self._executor.submit(self._execute, ticket)

    def _execute(self, ticket: _Ticket) -> None:
        try:
            ticket.run()
        finally:
            self._complete(ticket)

    def _complete(self, ticket: _Ticket) -> None:
        ready = []
        with self._lock:
            ticket.done = True
            for waiter in ticket.waiters:
                waiter.pending -= 1
                if waiter.pending == 0:
                    ready.append(waiter)
            ticket.waiters = []
            # Forget finished tickets so idle sessions cost nothing.
            if ticket is self._barrier:
                self._barrier = None
            lane = self._lanes.get(ticket.lane) if ticket.lane is not None else None
            if lane is not None:
                lane.reads.discard(ticket)
                if lane.last_write is ticket:
                    lane.last_write = None
                if lane.last_write is None and not lane.reads:
                    del self._lanes[ticket.lane]
        for waiter in ready:
            self._submit(waiter)
