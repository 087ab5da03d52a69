"""Pings answered from the cached result (bridge.ping_reply) decode to exactly what the
generic path (handler, reply envelope, codec) gives, for any id and any adapter state, and
the cache follows every announced change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import Adapter, Engine, EngineConfig
from bridge.adapters.dspy import DSPyAdapter, loader
from bridge.adapters.dspy.state import LMHandle
from bridge.wire import codec

CLOCK_KEYS = ("timestamp", "uptime")


class AnnouncingAdapter(Adapter):
    """Fields that change only with an announcement, and a count of the calls."""

    name = "announcing"
    announces_ping_changes = True

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.calls = 0
        self.fields: dict[str, Any] = {"tally": 0}

    def bind(self, engine: Engine) -> None:
        self.engine = engine

    def ping_fields(self) -> dict[str, Any]:
        self.calls += 1
        return dict(self.fields)

    def change(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        assert self.engine is not None
        self.engine.ping_fields_changed()


class UnversionedAdapter(Adapter):
    name = "unversioned"

    def ping_fields(self) -> dict[str, Any]:
        return {"always_asked": True}


@pytest.fixture
def dspy_engine() -> Iterator[tuple[Engine, DSPyAdapter]]:
    adapter = DSPyAdapter()
    engine = Engine(EngineConfig(mode="pool-worker", worker_id='w "1" 100% ü\n'), registry=None,
                    adapters=[adapter])
    yield engine, adapter
    engine.close()


def templated(engine: Engine, request: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    replies: list[bytes] = []
    engine.submit_frame(json.dumps(request).encode(), replies.append)
    assert len(replies) == 1
    return replies[0], codec.decode_reply(replies[0])


def generic(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """The long way: request validation, the handler, messages.reply and codec.encode."""
    replies: list[bytes] = []
    engine.submit(request, replies.append)
    assert len(replies) == 1
    return codec.decode_reply(replies[0])


def assert_same_reply(fast: dict[str, Any], slow: dict[str, Any]) -> None:
    assert list(fast) == list(slow) and list(fast["result"]) == list(slow["result"])
    for key in CLOCK_KEYS:
        assert type(fast["result"][key]) is float and type(slow["result"][key]) is float
    assert type(fast["timestamp"]) is float
    strip = lambda reply: {**reply, "timestamp": None,  # noqa: E731
                           "result": {**reply["result"], **dict.fromkeys(CLOCK_KEYS)}}
    assert strip(fast) == strip(slow)


ids = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.text(max_size=40))
states = st.fixed_dictionaries({
    "loaded": st.booleans(), "shutting_down": st.booleans(),
    "startup_lm": st.one_of(st.none(), st.sampled_from(["openai/a", 'odd "%s" model'])),
    "configured_lm": st.one_of(st.none(), st.sampled_from(["mock", "openai/ü"])),
    "args": st.one_of(st.none(), st.just({}), st.just({"initialization": True, "worker_id": "p-1"}),
                      st.just({"session_id": None})),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_id=ids, state=states)
def test_template_reply_equals_the_generic_reply(dspy_engine: tuple[Engine, DSPyAdapter], request_id: Any,
                                                 state: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    engine, adapter = dspy_engine
    # The background import's end, as ping_fields sees it, without importing DSPy; the
    # loader announces a real import to the adapter (tested below), this test does it itself.
    if loader.is_loaded() != state["loaded"]:
        monkeypatch.setattr(loader, "_dspy", object() if state["loaded"] else None)
        engine.ping_fields_changed()
    startup = LMHandle(lm=None, public={"model": state["startup_lm"]}) if state["startup_lm"] else None
    default = LMHandle(lm=None, public={"model": state["configured_lm"]}) if state["configured_lm"] else startup
    # Assigned only when they change, as the worker does: a template kept too long must show.
    if adapter.startup_lm != startup:
        adapter.startup_lm = startup
        adapter.default_lm = default
    elif adapter.default_lm != default:
        adapter.default_lm = default
    if state["shutting_down"]:
        engine.shutting_down.set()
    else:
        engine.shutting_down.clear()
    request = {"id": request_id, "command": "ping"}
    if state["args"] is not None:
        request["args"] = state["args"]
    raw, fast = templated(engine, request)
    slow = generic(engine, request)
    assert_same_reply(fast, slow)
    assert fast["id"] == request_id and type(fast["id"]) is type(request_id)
    assert fast["result"]["status"] == ("shutting_down" if state["shutting_down"] else "ok")
    assert fast["result"]["dspy_loaded"] is state["loaded"]
    expected_lm = (state["configured_lm"] or state["startup_lm"]) if state["startup_lm"] else None
    assert fast["result"].get("lm_model") == expected_lm
    # The cache really answered (not the generic fallback) for every id orjson can write:
    # the result's clock and the reply's are then one reading.
    writable = -(2**63) <= request_id < 2**64 if isinstance(request_id, int) \
        else not any(0xD800 <= ord(c) <= 0xDFFF for c in request_id)
    assert isinstance(engine.ping_template.result, tuple)
    if writable:
        assert fast["result"]["timestamp"] == fast["timestamp"]


def test_fields_are_asked_once_per_change_and_again_after_it() -> None:
    announcing = AnnouncingAdapter()
    engine = Engine(EngineConfig(worker_id="v"), adapters=[announcing])
    try:
        first = [templated(engine, {"id": n, "command": "ping"})[1]["result"] for n in range(5)]
        assert announcing.calls == 1 and all(result["tally"] == 0 for result in first)
        announcing.change({"tally": 7})
        after = templated(engine, {"id": 6, "command": "ping"})[1]["result"]
        assert after["tally"] == 7 and announcing.calls == 2
        assert engine.stats.by_command["ping"] == 6  # cached pings are counted like the rest
        assert [direction for direction, _, _ in engine.frame_log()].count("out") == 6
    finally:
        engine.close()


def test_a_drain_changes_the_status_of_the_next_ping() -> None:
    engine = Engine(EngineConfig(worker_id="d"), adapters=[AnnouncingAdapter()])
    try:
        assert templated(engine, {"id": 1, "command": "ping"})[1]["result"]["status"] == "ok"
        engine.shutting_down.set()
        assert templated(engine, {"id": 2, "command": "ping"})[1]["result"]["status"] == "shutting_down"
        engine.shutting_down.clear()
        assert templated(engine, {"id": 3, "command": "ping"})[1]["result"]["status"] == "ok"
    finally:
        engine.close()


def test_a_change_announced_while_the_result_is_built_is_not_lost() -> None:
    """The build that was under way when a change came must not store its stale result."""
    announcing = AnnouncingAdapter()
    engine = Engine(EngineConfig(worker_id="r"), adapters=[announcing])
    try:
        original = announcing.ping_fields

        def change_midway() -> dict[str, Any]:
            fields = original()
            if announcing.calls == 1:
                announcing.change({"tally": 2})  # as if another thread changed it just now
            return fields

        announcing.ping_fields = change_midway  # type: ignore[method-assign]
        assert templated(engine, {"id": 1, "command": "ping"})[1]["result"]["tally"] == 0
        assert engine.ping_template.result is None  # the stale build was not kept
        assert templated(engine, {"id": 2, "command": "ping"})[1]["result"]["tally"] == 2
    finally:
        engine.close()


def test_an_adapter_that_does_not_announce_keeps_every_ping_on_the_generic_path() -> None:
    announcing = AnnouncingAdapter()
    engine = Engine(EngineConfig(worker_id="u"), adapters=[announcing, UnversionedAdapter()])
    try:
        assert engine.ping_template.result is False
        for n in range(3):
            assert templated(engine, {"id": n, "command": "ping"})[1]["result"]["always_asked"] is True
        assert announcing.calls == 3
    finally:
        engine.close()


def test_the_dspy_adapter_announces_the_default_lm_and_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = DSPyAdapter()
    engine = Engine(EngineConfig(worker_id="a"), adapters=[adapter])
    try:
        templated(engine, {"id": 1, "command": "ping"})
        assert isinstance(engine.ping_template.result, tuple)
        adapter.default_lm = LMHandle(lm=None, public={"model": "m"})
        assert engine.ping_template.result is None
        templated(engine, {"id": 2, "command": "ping"})
        adapter.on_reset([])  # back to the (absent) startup LM: a change as well
        assert engine.ping_template.result is None
        templated(engine, {"id": 3, "command": "ping"})
        # The loader calls back whoever asked once DSPy is imported (here: a pretend import).
        if not loader.is_loaded():
            monkeypatch.setattr(loader, "_dspy", None)
            calls: list[int] = []

            class Listener:
                def heard(self) -> None:
                    calls.append(1)

            listener = Listener()
            loader.when_loaded(listener.heard)
            loader.when_loaded(adapter._ping_fields_changed)
            monkeypatch.setattr(loader, "_dspy", object())
            loader._announce_loaded()
            assert calls == [1] and engine.ping_template.result is None
        loader.when_loaded(adapter._ping_fields_changed)  # already loaded: called at once
        assert engine.ping_template.result is None
    finally:
        engine.close()


def test_a_ping_with_a_session_or_odd_args_still_follows_the_rules(dspy_engine: tuple[Engine, DSPyAdapter]) -> None:
    engine, _ = dspy_engine
    _, bad = templated(engine, {"id": 1, "command": "ping", "args": {"session_id": ["x"]}})
    assert bad["success"] is False and bad["error_type"] == "invalid_arguments"
    raw, good = templated(engine, {"id": 2, "command": "ping", "args": {"session_id": "s1"}})
    assert good["success"] is True and good["result"]["status"] == "ok"
