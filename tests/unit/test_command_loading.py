"""Commands loaded after the first reply (bridge.command_loading): what `dspex serve` does so
its init ping never waits for the adapters' imports. Requests that need those commands are
held, already accepted, and run in their order of arrival once the commands are there."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pytest

from bridge import Adapter, Engine, EngineConfig
from bridge.errors import ShuttingDown
from bridge.registry import CommandSpec, Registry, command

COMMANDS = Registry()
RUN_ORDER: list[Any] = []


@command("note_order", registry=COMMANDS, scheduling="write")
def note_order(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Records the order in which requests ran."""
    RUN_ORDER.append(args.get("n"))
    return {"n": args.get("n")}


class GatedAdapter(Adapter):
    """An adapter whose command modules take as long to import as the test says."""

    name = "gated"

    def __init__(self, gate: threading.Event, fail: bool = False) -> None:
        self.gate = gate
        self.fail = fail

    def commands(self) -> Iterable[CommandSpec]:
        self.gate.wait(10)
        if self.fail:
            raise ImportError("no module named 'gated_commands'")
        return COMMANDS.specs()


class Replies:
    """The reply frames an engine sent, by request id."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def __call__(self, data: bytes) -> None:
        with self.arrived:
            self.frames.append(orjson.loads(data))
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.frames) >= count, timeout), self.frames
            return list(self.frames)

    def ids(self) -> list[Any]:
        return [frame["id"] for frame in self.frames]


def frame(request_id: int, command_name: str, **args: Any) -> bytes:
    return orjson.dumps({"id": request_id, "command": command_name, "args": args})


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    RUN_ORDER.clear()
    event = threading.Event()
    yield event
    event.set()


def background_engine(gate: threading.Event, fail: bool = False) -> Engine:
    return Engine(EngineConfig(background_commands=True), registry=Registry(), adapters=[GatedAdapter(gate, fail)])


def load_now(engine: Engine, on_failure: Any = None) -> None:
    """Runs the background loader at once and waits for it."""
    engine.load_commands_in_background(threading.Event(), 0, on_failure=on_failure or (lambda exc: None)).join(10)


def test_ping_is_answered_at_once_and_other_requests_wait_in_their_order(gate: threading.Event) -> None:
    engine = background_engine(gate)
    replies = Replies()
    engine.submit_frame(frame(1, "note_order", n=1), replies)
    engine.submit_frame(frame(2, "ping"), replies)
    engine.submit_frame(frame(3, "note_order", n=3), replies)
    engine.submit_frame(frame(4, "no_such_command"), replies)
    assert replies.wait_for(1) and replies.ids() == [2] and not engine.commands_loaded
    assert not engine.wait_idle(0.05)  # a drain waits for held requests as for queued ones
    gate.set()
    load_now(engine)
    frames = replies.wait_for(4)
    assert engine.commands_loaded and RUN_ORDER == [1, 3]
    by_id = {f["id"]: f for f in frames}
    assert by_id[1]["success"] and by_id[3]["success"]
    assert by_id[4]["error_type"] == "unknown_command"
    assert engine.wait_idle(5)  # the refused and the scheduled ones alike are freed
    engine.close()


def test_requests_arriving_while_held_ones_are_dispatched_come_after_them(gate: threading.Event) -> None:
    engine = background_engine(gate)
    replies = Replies()
    for n in range(50):
        engine.submit_frame(frame(n, "note_order", n=n), replies)
    gate.set()
    loader = engine.load_commands_in_background(threading.Event(), 0, on_failure=lambda exc: None)
    n = 50
    # New arrivals race the dispatch of the held ones (kept under the queue bound).
    while (loader.is_alive() and n < 5_000) or n < 60:
        engine.submit_frame(frame(n, "note_order", n=n), replies)
        n += 1
    replies.wait_for(n)
    assert RUN_ORDER == list(range(n))  # one session, so arrival order is run order
    engine.close()


def test_held_requests_are_bounded_like_queued_ones(gate: threading.Event) -> None:
    # A client flooding a worker whose commands still load gets `overloaded`, not a list
    # that grows without limit.
    engine = Engine(EngineConfig(background_commands=True, max_queued=3), registry=Registry(),
                    adapters=[GatedAdapter(gate)])
    replies = Replies()
    for n in range(5):
        engine.submit_frame(frame(n, "note_order", n=n), replies)
    refused = replies.wait_for(2)
    assert [f["id"] for f in refused] == [3, 4] and {f["error_type"] for f in refused} == {"overloaded"}
    gate.set()
    load_now(engine)
    by_id = {f["id"]: f for f in replies.wait_for(5)}
    assert RUN_ORDER == [0, 1, 2] and all(by_id[n]["success"] for n in range(3))
    assert engine.wait_idle(5)
    engine.close()


def held_then_draining(gate: threading.Event) -> tuple[Engine, Replies]:
    """An engine holding request 1 (its commands not loaded yet) whose drain has begun."""
    engine = background_engine(gate)
    replies = Replies()
    engine.submit_frame(frame(1, "note_order", n=1), replies)
    engine.shutting_down.set()
    return engine, replies


def test_a_drain_that_gives_up_answers_held_requests_exactly_once(gate: threading.Event) -> None:
    engine, replies = held_then_draining(gate)
    assert not engine.wait_idle(0.05)
    assert engine.fail_unfinished(ShuttingDown("Worker is shutting down")) == 1
    gate.set()
    load_now(engine)
    assert [f["error_type"] for f in replies.wait_for(1)] == ["shutting_down"]
    assert RUN_ORDER == [] and replies.ids() == [1]  # not run afterwards, not answered twice
    assert engine.wait_idle(1)
    engine.close()


def test_held_requests_still_run_when_a_drain_begins(gate: threading.Event) -> None:
    # Accepted before the drain: they run, as queued requests do; new ones are refused.
    engine, replies = held_then_draining(gate)
    engine.submit_frame(frame(2, "note_order", n=2), replies)  # held too, but came after
    gate.set()
    engine.load_commands()
    engine.submit_frame(frame(3, "note_order", n=3), replies)
    by_id = {f["id"]: f for f in replies.wait_for(3)}
    assert by_id[1]["success"] and RUN_ORDER == [1]
    assert by_id[2]["error_type"] == by_id[3]["error_type"] == "shutting_down"
    assert engine.wait_idle(1)
    engine.close()


def test_commands_that_cannot_load_answer_the_held_requests_and_tell_the_owner(gate: threading.Event) -> None:
    engine = background_engine(gate, fail=True)
    replies = Replies()
    failures: list[BaseException] = []
    engine.submit_frame(frame(1, "note_order", n=1), replies)
    gate.set()
    load_now(engine, failures.append)
    reply = replies.wait_for(1)[0]
    assert reply["error_type"] == "internal_error" and "could not load its commands" in reply["error"]
    assert "gated_commands" in reply["error"] and isinstance(failures[0], ImportError)
    assert engine.wait_idle(1)
    engine.close()


def test_an_in_process_engine_has_every_command_at_once(gate: threading.Event) -> None:
    gate.set()
    engine = Engine(registry=Registry(), adapters=[GatedAdapter(gate)])
    assert engine.commands_loaded and engine.registry.find("note_order") is not None
    assert isinstance(engine.call("note_order", {"n": 7}), dict) and RUN_ORDER == [7]
    engine.close()


def test_a_background_import_leaves_stop_signals_to_the_main_thread() -> None:
    # Linux gives a process's SIGTERM to any thread not blocking it; one busy importing would
    # leave the main thread, asleep in read, unaware of a second ("now") SIGTERM.
    import signal

    from bridge.system import stop_signals_left_to_the_main_thread

    seen: list[set[int]] = []

    def importing() -> None:
        with stop_signals_left_to_the_main_thread():
            seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, set())))
        seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, set())))

    thread = threading.Thread(target=importing)
    thread.start()
    thread.join(5)
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    assert stops <= seen[0] and not stops & seen[1]
    assert not stops & set(signal.pthread_sigmask(signal.SIG_BLOCK, set()))  # this thread untouched

