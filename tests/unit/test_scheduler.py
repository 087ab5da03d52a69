"""SessionScheduler ordering, seen through Engine with plugin-style test commands.

Commands are registered on a private Registry so the global one stays untouched.
Handlers block on events, so every ordering claim is checked by what could start
while what else was still running, not by timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import orjson
import pytest

from bridge import Engine, EngineConfig
from bridge.registry import Arg, Registry, command

WAIT = 5.0  # generous bound on anything that should happen "soon"


class Probe:
    """Shared state of the test commands: who started, who finished, who may finish."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.started_events: dict[str, threading.Event] = {}
        self.running = 0
        self.max_running = 0
        self.snapshots: dict[str, tuple[list[str], list[str]]] = {}

    def gate(self, tag: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(tag, threading.Event())

    def started_event(self, tag: str) -> threading.Event:
        with self.lock:
            return self.started_events.setdefault(tag, threading.Event())

    def run(self, tag: str, hold: bool) -> dict[str, Any]:
        with self.lock:
            self.snapshots[tag] = (list(self.started), list(self.finished))
            self.started.append(tag)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.started_event(tag).set()
        if hold and not self.gate(tag).wait(WAIT):
            raise TimeoutError(f"{tag} was never released")
        with self.lock:
            self.running -= 1
            self.finished.append(tag)
        return {"tag": tag}


def make_registry(probe: Probe) -> Registry:
    registry = Registry()
    args = (Arg("tag", "string", required=True), Arg("hold", "boolean"), Arg("session_id", "string"))

    for scheduling in ("read", "write", "global", "inline"):
        def handler(a: dict[str, Any], ctx: Any) -> dict[str, Any]:
            return probe.run(a["tag"], bool(a.get("hold")))

        handler.__doc__ = f"A {scheduling} probe."
        command(f"t_{scheduling}", registry=registry, args=args, scheduling=scheduling)(handler)

    barrier_holder: dict[str, threading.Barrier] = {}

    @command("t_barrier", registry=registry, scheduling="read", args=(Arg("parties", "integer"),))
    def barrier_read(a: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """A read that only finishes once `parties` reads wait at the same time."""
        with probe.lock:
            barrier = barrier_holder.setdefault("b", threading.Barrier(a["parties"]))
        index = barrier.wait(WAIT)
        return {"index": index}

    return registry


class Harness:
    def __init__(self, max_concurrency: int) -> None:
        self.probe = Probe()
        self.engine = Engine(EngineConfig(max_concurrency=max_concurrency), registry=make_registry(self.probe))
        self.replies: dict[Any, Future[dict[str, Any]]] = {}
        self._ids = iter(range(1, 1_000_000))

    def send(self, scheduling: str, tag: str, session: str | None = None, hold: bool = False) -> Future:
        rid = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        self.replies[tag] = future
        args: dict[str, Any] = {"tag": tag, "hold": hold}
        if session is not None:
            args["session_id"] = session
        self.engine.submit({"id": rid, "command": f"t_{scheduling}", "args": args},
                           lambda data: future.set_result(orjson.loads(data)))
        return future

    def release(self, tag: str) -> None:
        self.probe.gate(tag).set()

    def started(self, tag: str, timeout: float = WAIT) -> bool:
        return self.probe.started_event(tag).wait(timeout)

    def not_started(self, tag: str) -> bool:
        # Give a wrongly scheduled request time to start; cheap, and only a lower bound.
        return not self.probe.started_event(tag).wait(0.1)

    def result(self, tag: str) -> dict[str, Any]:
        reply = self.replies[tag].result(WAIT)
        assert reply["success"], reply
        return reply["result"]


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(max_concurrency=16)
    yield h
    for gate in list(h.probe.gates.values()):
        gate.set()
    h.engine.close()


def test_write_waits_for_earlier_reads_and_holds_back_later_ones(harness: Harness) -> None:
    harness.send("read", "r1", hold=True)
    harness.send("read", "r2", hold=True)
    assert harness.started("r1") and harness.started("r2")
    harness.send("write", "w", hold=True)
    harness.send("read", "r3")
    assert harness.not_started("w")
    harness.release("r1")
    assert harness.result("r1") == {"tag": "r1"}
    assert harness.not_started("w")  # r2 still runs
    harness.release("r2")
    assert harness.started("w")
    assert harness.not_started("r3")  # held back by the write
    harness.release("w")
    harness.result("r3")
    started, finished = harness.probe.snapshots["w"]
    assert set(finished) == {"r1", "r2"}
    assert harness.probe.snapshots["r3"][1][-1] == "w"


def test_writes_of_one_session_run_in_arrival_order(harness: Harness) -> None:
    tags = [f"w{i}" for i in range(20)]
    for tag in tags:
        harness.send("write", tag, session="s")
    for tag in tags:
        harness.result(tag)
    assert harness.probe.started == tags
    assert harness.probe.max_running == 1


def test_sessions_do_not_wait_for_each_other(harness: Harness) -> None:
    harness.send("write", "a", session="A", hold=True)
    assert harness.started("a")
    harness.send("write", "b", session="B")
    assert harness.result("b") == {"tag": "b"}
    harness.send("read", "a_read", session="A")
    assert harness.not_started("a_read")
    harness.release("a")
    harness.result("a_read")


def test_anonymous_is_the_session_of_requests_without_one(harness: Harness) -> None:
    harness.send("write", "w", hold=True)  # no session_id
    assert harness.started("w")
    harness.send("read", "named_anonymous", session="anonymous")
    harness.send("read", "empty", session="")
    assert harness.not_started("named_anonymous") and harness.not_started("empty")
    harness.release("w")
    harness.result("named_anonymous")
    harness.result("empty")


def test_32_reads_of_anonymous_run_concurrently() -> None:
    h = Harness(max_concurrency=64)
    try:
        futures = []
        for i in range(32):
            future: Future[dict[str, Any]] = Future()
            futures.append(future)
            h.engine.submit({"id": i, "command": "t_barrier", "args": {"parties": 32}},
                            lambda data, f=future: f.set_result(orjson.loads(data)))
        replies = [f.result(WAIT + 1) for f in futures]
        # A Barrier of 32 only opens if all 32 reads were waiting at once.
        assert all(r["success"] for r in replies), [r for r in replies if not r["success"]][:1]
        assert sorted(r["result"]["index"] for r in replies) == list(range(32))
    finally:
        h.engine.close()


def test_global_write_waits_for_every_session_and_holds_back_all(harness: Harness) -> None:
    harness.send("read", "a", session="A", hold=True)
    harness.send("write", "b", session="B", hold=True)
    assert harness.started("a") and harness.started("b")
    harness.send("global", "g", hold=True)
    harness.send("read", "c", session="C")  # a session that did not exist before the global
    harness.send("write", "a2", session="A")
    assert harness.not_started("g")
    harness.release("a")
    assert harness.not_started("g")
    harness.release("b")
    assert harness.started("g")
    assert harness.not_started("c") and harness.not_started("a2")
    harness.release("g")
    harness.result("c")
    harness.result("a2")
    assert set(harness.probe.snapshots["g"][1]) == {"a", "b"}
    for later in ("c", "a2"):
        assert "g" in harness.probe.snapshots[later][1]


def test_global_writes_are_ordered_among_themselves(harness: Harness) -> None:
    harness.send("global", "g1", hold=True)
    harness.send("global", "g2")
    assert harness.started("g1") and harness.not_started("g2")
    harness.release("g1")
    harness.result("g2")
    assert harness.probe.started == ["g1", "g2"]


def test_inline_commands_bypass_a_saturated_pool() -> None:
    h = Harness(max_concurrency=1)
    try:
        h.send("read", "busy", session="X", hold=True)
        assert h.started("busy")
        h.send("write", "queued", session="Y")
        assert h.not_started("queued")  # the only pool thread is taken
        reply = h.send("inline", "now", session="X").result(1.0)
        assert reply["success"] and reply["result"] == {"tag": "now"}
        h.release("busy")
        h.result("queued")
    finally:
        for gate in h.probe.gates.values():
            gate.set()
        h.engine.close()


@pytest.mark.parametrize("pool", [1, 2])
def test_no_deadlock_with_a_small_pool(pool: int) -> None:
    h = Harness(max_concurrency=pool)
    try:
        kinds = ["read", "read", "write", "read", "global", "write", "read"]
        order: list[tuple[str, str, str]] = []
        for i in range(210):
            kind = kinds[i % len(kinds)]
            session = f"s{i % 3}"
            tag = f"{kind}-{i}"
            order.append((tag, kind, session))
            h.send(kind, tag, session=session)
        for tag, _, _ in order:
            h.result(tag)
        assert len(h.probe.finished) == 210
        # Every write found all earlier requests of its session (and every global, all
        # earlier requests) finished when it started; every read, the writes before it.
        for index, (tag, kind, session) in enumerate(order):
            _, finished_before = h.probe.snapshots[tag]
            if kind == "read":  # a read waits for earlier writes of its session and globals
                earlier = [t for t, k, s in order[:index] if k == "global" or (k == "write" and s == session)]
            else:
                earlier = [t for t, k, s in order[:index] if kind == "global" or s == session or k == "global"]
            missing = set(earlier) - set(finished_before)
            assert not missing, f"{tag} started before {sorted(missing)[:3]} finished"
    finally:
        h.engine.close()


def test_reads_wait_for_an_earlier_write_of_their_session(harness: Harness) -> None:
    harness.send("write", "w", session="S", hold=True)
    for i in range(5):
        harness.send("read", f"r{i}", session="S")
    assert harness.started("w")
    assert all(harness.not_started(f"r{i}") for i in range(5))
    harness.release("w")
    for i in range(5):
        harness.result(f"r{i}")
        assert "w" in harness.probe.snapshots[f"r{i}"][1]


def test_finished_sessions_leave_no_scheduler_state(harness: Harness) -> None:
    for i in range(10):
        harness.send("write", f"w{i}", session=f"s{i}")
        harness.send("read", f"r{i}", session=f"s{i}")
    harness.send("global", "g")
    for i in range(10):
        harness.result(f"w{i}")
        harness.result(f"r{i}")
    harness.result("g")
    deadline = time.monotonic() + WAIT
    while (harness.engine.scheduler._lanes or harness.engine.scheduler._barrier) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert harness.engine.scheduler._lanes == {}
    assert harness.engine.scheduler._barrier is None


def test_drain_runs_accepted_requests_and_refuses_new_ones(harness: Harness) -> None:
    harness.send("read", "running", session="S", hold=True)
    assert harness.started("running")
    harness.send("write", "queued", session="S")  # accepted, waiting behind the read
    harness.engine.shutting_down.set()
    late = harness.send("write", "late", session="T")
    reply = late.result(1.0)
    assert reply["success"] is False and reply["error_type"] == "shutting_down"
    # Idle means nothing accepted is left, started or not.
    assert harness.engine.wait_idle(0.1) is False
    harness.release("running")
    assert harness.result("queued") == {"tag": "queued"}
    assert harness.engine.wait_idle(WAIT) is True
    assert "late" not in harness.probe.started
    # Inline commands still answer while draining.
    assert harness.send("inline", "ping-like").result(1.0)["success"] is True
