"""The ping hot path's shortcuts keep the behaviour of the long way round (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bridge import Adapter, Engine, EngineConfig
from bridge.ping_reply import PingTemplate
from bridge.redact import _KEY_SHAPES, known_secrets, remember_environment_secrets, scrub_text
from bridge.registry import Registry, command
from bridge.wire.framing import FrameReader, pack


class QuietAdapter(Adapter):
    """Adds nothing to pings (the base class's ping_fields)."""

    name = "quiet"


class LoudAdapter(Adapter):
    name = "loud"

    def __init__(self) -> None:
        self.calls = 0

    def ping_fields(self) -> dict[str, Any]:
        self.calls += 1
        return {"loud_pings": self.calls}


EXTRA = Registry()


@command("odd_keys", scheduling="inline", read_only=True, registry=EXTRA)
def odd_keys(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """An inline result orjson cannot write without options: non-string keys, a huge int."""
    return {1: "one", "big": 2**70}


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(EngineConfig(worker_id="hot"), registry=EXTRA, adapters=[QuietAdapter(), LoudAdapter()])
    yield eng
    eng.close()


def frame_reply(engine: Engine, request: dict[str, Any] | bytes) -> dict[str, Any]:
    replies: list[bytes] = []
    payload = request if isinstance(request, bytes) else orjson.dumps(request)
    engine.submit_frame(payload, replies.append)
    assert len(replies) == 1
    return orjson.loads(replies[0])


def test_only_adapters_with_ping_fields_are_asked_and_each_ping_asks_again(engine: Engine) -> None:
    assert len(engine.ping_field_sources) == 1
    first = frame_reply(engine, {"id": 1, "command": "ping"})["result"]
    second = frame_reply(engine, {"id": 2, "command": "ping", "args": {}})["result"]
    assert (first["loud_pings"], second["loud_pings"]) == (1, 2)
    assert first["worker_id"] == "hot" and first["status"] == "ok" and isinstance(first["uptime"], float)


def test_inline_results_orjson_refuses_without_options_still_encode_exactly(engine: Engine) -> None:
    raw: list[bytes] = []
    engine.submit_frame(b'{"id": 5, "command": "odd_keys"}', raw.append)
    assert raw[0].startswith(b'{"id":5,"success":true,"result":{"1":"one","big":1180591620717411303424}')


@pytest.mark.parametrize("session_id, error", [(None, False), ("", False), (7, False), ("s" * 256, False),
                                               ("s" * 257, True), (1.5, True), (["a"], True)])
def test_inline_session_ids_follow_the_session_rules(engine: Engine, session_id: Any, error: bool) -> None:
    reply = frame_reply(engine, {"id": 3, "command": "ping", "args": {"session_id": session_id}})
    assert reply["id"] == 3
    if error:
        assert reply["success"] is False and reply["error_type"] == "invalid_arguments"
    else:
        assert reply["success"] is True


def test_reader_pending_counts_buffered_and_skipped_bytes() -> None:
    reader = FrameReader(max_frame_size=8)
    assert reader.pending == 0
    assert reader.feed(pack(b"x" * 20)[:10]) and reader.pending == 14  # an oversized frame, 14 bytes to skip
    assert reader.feed(b"x" * 14 + pack(b"ok")[:3]) == [] and reader.pending == 3
    assert reader.feed(pack(b"ok")[3:]) == [b"ok"] and reader.pending == 0


def test_environment_secret_names_match_case_insensitively_at_the_end_only() -> None:
    environ = {"my_service_api_key": "value-one-123456", "GITHUB_TOKEN": "value-two-123456",
               "API_KEY_FILE": "/not/a/secret/path", "Db_Password": "value-three-12345", "SHORT_TOKEN": "abc"}
    assert remember_environment_secrets(environ) == 3
    assert {"value-one-123456", "value-two-123456", "value-three-12345"} <= set(known_secrets())
    assert "/not/a/secret/path" not in known_secrets()


def test_lazily_compiled_patterns_scrub_as_before() -> None:
    assert _KEY_SHAPES.pattern.startswith(r"\b(sk-")
    text = "key sk-abcdefghijklmnop and https://user:pw12345@host/x"
    assert scrub_text(text) == "key [REDACTED] and https://user:[REDACTED]@host/x"
    assert scrub_text(text) == "key [REDACTED] and https://user:[REDACTED]@host/x"  # compiled now


def test_an_undecodable_frame_is_answered_with_its_own_id_not_a_nested_one(engine: Engine) -> None:
    # Found by tests/integration/test_fuzz.py: 1e999 makes orjson refuse the frame, and the
    # only integer "id" in it was the args' one, so the reply went to an id nobody sent.
    replies: list[bytes] = []
    engine.submit_frame(b'{"id":"2807","command":"x","args":{"id":-9223372036854775809,"v":1e999}}', replies.append)
    assert orjson.loads(replies[0])["id"] == "2807"
    replies.clear()
    engine.submit_frame(b'{"id": 12, "command": "x", "args": {"v": 1e999', replies.append)  # truncated: salvaged
    assert orjson.loads(replies[0])["id"] == 12


@pytest.fixture
def quiet_engine() -> Iterator[Engine]:
    """Pings answered from the cached reply: no adapter adds a field to them."""
    eng = Engine(EngineConfig(worker_id="hot"), registry=EXTRA, adapters=[QuietAdapter()])
    yield eng
    eng.close()


def test_a_cached_ping_is_one_entry_of_recent_frames_and_two_frames_of_the_log(quiet_engine: Engine) -> None:
    engine = quiet_engine
    payloads = [orjson.dumps({"id": n, "command": "ping", "args": {}}) for n in range(3)]
    replies: list[bytes] = []
    for payload in payloads:
        engine.submit_frame(payload, replies.append)
    assert isinstance(engine.ping_template.result, tuple)  # the cached path answered
    assert len(engine.recent_frames) == 3
    log = engine.frame_log()
    assert [(direction, payload) for direction, _, payload in log] == [
        pair for payload, reply in zip(payloads, replies) for pair in (("in", payload), ("out", reply))]
    engine.submit_frame(orjson.dumps({"id": 9, "command": "get_stats"}), replies.append)
    assert [direction for direction, _, _ in engine.frame_log()[-2:]] == ["in", "out"]
    counted = orjson.loads(replies[-1])["result"]
    # Cached pings are counted apart (Stats.pings) and reported with the rest.
    assert counted["command_count"] == 4 and counted["commands_by_name"] == {"ping": 3, "get_stats": 1}
    assert engine.stats.reset() == (4, 0) and engine.stats.by_command == {}


def test_a_frame_whose_handling_fails_is_in_the_log_once(quiet_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = quiet_engine

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(engine, "submit", broken)  # after the request was recorded
    engine.submit_frame(b'{"id": 1, "command": "list_programs"}', lambda data: None)
    monkeypatch.setattr(PingTemplate, "build", broken)  # before the cached ping records it
    engine.ping_template.result = None
    engine.submit_frame(b'{"id": 2, "command": "ping"}', lambda data: None)
    log = engine.frame_log()
    assert [(direction, payload) for direction, _, payload in log] == [
        ("in", b'{"id": 1, "command": "list_programs"}'), ("in", b'{"id": 2, "command": "ping"}')]
    assert engine.stats.error_count == 2
