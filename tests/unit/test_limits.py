"""Every table a client can grow is bounded: sessions, programs, session data, the queue.

Each limit is lowered for the test; the full-size limits are documented in docs/protocol.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bridge import Engine, EngineConfig, sessions
from bridge.adapters.dspy import commands as dspy_commands
from bridge.registry import Registry, command
from fixtures import ok


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(EngineConfig(worker_id="limits"))
    yield engine
    engine.close()


def test_the_session_table_is_bounded(engine: Engine) -> None:
    engine.sessions.max_sessions = 3
    for name in ("a", "b", "c"):
        ok(engine.call("update_session_data", {"session_id": name, "key": "k", "value": 1}))
    reply = engine.call("update_session_data", {"session_id": "d", "key": "k", "value": 1})
    assert reply["error_type"] == "limit_exceeded" and "cleanup_session" in reply["error"]
    ok(engine.call("cleanup_session", {"session_id": "a"}))
    ok(engine.call("update_session_data", {"session_id": "d", "key": "k", "value": 1}))


def test_session_data_keys_are_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_DATA_KEYS", 2)
    ok(engine.call("update_session_data", {"session_id": "s", "key": "a", "value": 1}))
    ok(engine.call("update_session_data", {"session_id": "s", "key": "b", "value": 1}))
    ok(engine.call("update_session_data", {"session_id": "s", "key": "a", "value": 2}))  # replacing is fine
    assert engine.call("update_session_data", {"session_id": "s", "key": "c", "value": 1})["error_type"] \
        == "limit_exceeded"
    reply = engine.call("update_session_data", {"session_id": "s", "operation": "merge", "data": {"x": 1}})
    assert reply["error_type"] == "limit_exceeded"
    assert ok(engine.call("get_session_data", {"session_id": "s"}))["data"] == {"a": 2, "b": 1}


def test_programs_are_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dspy_commands, "MAX_PROGRAMS", 2)
    for name in ("p1", "p2"):
        ok(engine.call("create_program", {"id": name, "signature": "question -> answer"}))
    reply = engine.call("create_program", {"id": "p3", "signature": "question -> answer", "session_id": "other"})
    assert reply["error_type"] == "limit_exceeded"
    ok(engine.call("delete_program", {"program_id": "p1"}))
    ok(engine.call("create_program", {"id": "p3", "signature": "question -> answer"}))


def test_a_full_queue_answers_overloaded_and_pings_still_pass() -> None:
    registry = Registry()
    release = threading.Event()

    @command("block", scheduling="read", registry=registry)
    def block(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        release.wait(10)
        return {"done": True}

    engine = Engine(EngineConfig(worker_id="q", max_queued=3, max_concurrency=2), registry=registry)
    try:
        replies: list[dict[str, Any]] = []
        lock = threading.Lock()

        def collect(data: bytes) -> None:
            with lock:
                replies.append(orjson.loads(data))

        for i in range(5):
            engine.submit({"id": i, "command": "block"}, collect)
        assert [r["error_type"] for r in replies] == ["overloaded", "overloaded"]
        assert ok(engine.call("ping"))["status"] == "ok"
        release.set()
        assert engine.wait_idle(10)
        assert sorted(r["id"] for r in replies if r.get("success")) == [0, 1, 2]
    finally:
        engine.close()
