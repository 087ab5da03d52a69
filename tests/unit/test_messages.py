"""The wire's messages: request checks and the reply, error and event envelopes."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import orjson
import pytest

from bridge.engine import Engine
from bridge.errors import InvalidArguments, InvalidRequest, SerializationFailed
from bridge.redact import remember_secret
from bridge.wire import codec, messages
from bridge.wire.framing import HEADER_SIZE, header, pack, pack_many, unpack_length
from bridge.wire.messages import RejectedRequest, parse_request

HUGE_ID = 2**70 + 1


@pytest.mark.parametrize("request_id", [0, 1, 999999, -5, HUGE_ID, "abc", "", 1.5, True, False])
def test_a_request_keeps_its_id_exactly(request_id: Any) -> None:
    parsed = parse_request({"id": request_id, "command": "ping", "args": {"x": 1}})
    assert parsed.id == request_id and type(parsed.id) is type(request_id)
    assert parsed.command == "ping" and parsed.args == {"x": 1}


@pytest.mark.parametrize("message", [{"id": 3, "command": "ping"}, {"id": 3, "command": "ping", "args": None},
                                     {"id": 3, "command": "ping", "args": {}}])
def test_missing_or_null_args_are_an_empty_object(message: dict[str, Any]) -> None:
    assert parse_request(message).args == {}


@pytest.mark.parametrize("message", [[1, 2], "ping", 7, None])
def test_a_message_that_is_not_an_object_cannot_be_answered(message: Any) -> None:
    with pytest.raises(RejectedRequest) as caught:
        parse_request(message)
    assert caught.value.answerable is False and caught.value.request_id is None
    assert isinstance(caught.value.error, InvalidRequest)
    assert type(message).__name__ in caught.value.error.message


@pytest.mark.parametrize("request_id", [None, [1], {"a": 1}])
def test_an_unusable_id_cannot_be_answered(request_id: Any) -> None:
    message = {"command": "ping"} if request_id is None else {"id": request_id, "command": "ping"}
    with pytest.raises(RejectedRequest) as caught:
        parse_request(message)
    assert caught.value.answerable is False
    assert caught.value.error.error_type == "invalid_request"
    # The control socket echoes whatever id came, so it can still parse the rest.
    assert parse_request(message, require_id=False).id == request_id


@pytest.mark.parametrize("command", [None, "", 5, ["ping"], {"name": "ping"}])
def test_a_bad_command_is_answered_to_its_id(command: Any) -> None:
    message = {"id": 41, "args": {}} if command is None else {"id": 41, "command": command}
    with pytest.raises(RejectedRequest) as caught:
        parse_request(message)
    rejected = caught.value
    assert rejected.answerable is True and rejected.request_id == 41
    assert rejected.error.error_type == "invalid_request"
    assert rejected.error.message == "Request 'command' must be a non-empty string"


@pytest.mark.parametrize("args,type_name", [([1], "list"), ("x", "str"), (0, "int"), (False, "bool")])
def test_args_of_the_wrong_type_are_invalid_arguments(args: Any, type_name: str) -> None:
    with pytest.raises(RejectedRequest) as caught:
        parse_request({"id": HUGE_ID, "command": "ping", "args": args})
    assert caught.value.request_id == HUGE_ID and caught.value.answerable
    assert isinstance(caught.value.error, InvalidArguments)
    assert caught.value.error.message == f"'args' must be an object, got {type_name}"


def test_envelopes_have_the_contract_keys_in_order() -> None:
    assert list(messages.reply(7, {"a": 1})) == ["id", "success", "result", "timestamp"]
    ok = messages.reply(7, {"a": 1})
    assert ok["id"] == 7 and ok["success"] is True and ok["result"] == {"a": 1}
    assert isinstance(ok["timestamp"], float)
    failure = messages.error_reply("x", "unknown_command", "Unknown command: foo")
    assert list(failure) == ["id", "success", "error", "error_type", "timestamp"]
    assert failure["success"] is False and failure["error"] == "Unknown command: foo"
    with_details = messages.error_reply(1, "invalid_arguments", "bad", {"field": "x"})
    assert list(with_details)[-1] == "details" and with_details["details"] == {"field": "x"}
    assert "details" not in messages.error_reply(1, "invalid_arguments", "bad", {})
    streamed = messages.event(9, "frame", {"size": 3})
    assert list(streamed) == ["id", "event", "data", "timestamp"] and streamed["event"] == "frame"
    assert messages.is_reply(ok) and messages.is_reply(failure) and not messages.is_reply(streamed)
    assert messages.request(5, "ping") == {"id": 5, "command": "ping", "args": {}}


def test_a_huge_id_survives_the_round_trip_through_an_envelope() -> None:
    data = codec.encode(messages.error_reply(HUGE_ID, "invalid_request", "no"))
    assert codec.decode_reply(data)["id"] == HUGE_ID


def test_error_replies_for_exceptions_are_scrubbed_and_cut() -> None:
    secret = "messages-test-secret-value-4711"  # not key-shaped: masked because it is remembered
    remember_secret(secret)
    reply = messages.error_reply_for(3, RuntimeError(f"upstream refused {secret}"))
    assert reply["error_type"] == "internal_error" and secret not in reply["error"]
    assert reply["error"].startswith("RuntimeError: upstream refused")
    detailed = messages.error_reply_for(4, _with_details(secret))
    assert detailed["error_type"] == "invalid_arguments" and detailed["details"]["program"] == "p1"
    assert secret not in orjson.dumps(detailed).decode()
    long = messages.error_reply_for(5, InvalidRequest("x" * 10_000))
    assert long["error"].startswith("x" * 2000 + "… (") and long["error"].endswith(" more characters)")


def _with_details(secret: str) -> InvalidArguments:
    exc = InvalidArguments("bad arguments")
    exc.details = {"program": "p1", "seen": secret}
    return exc


def test_encode_or_error_answers_the_same_id_when_a_result_cannot_be_written() -> None:
    data = messages.encode_or_error(messages.reply(12, {"value": object()}))
    reply = codec.decode(data)
    assert reply["id"] == 12 and reply["success"] is False and reply["error_type"] == "serialization_error"
    with pytest.raises(SerializationFailed):
        codec.encode(messages.reply(12, {"value": object()}))


def test_the_engine_inline_reply_and_the_envelope_agree() -> None:
    """The engine's ping path builds its reply inline for speed: same keys, same order."""
    engine = Engine()
    try:
        done: Future[bytes] = Future()
        engine.submit_frame(b'{"id": 77, "command": "ping"}', done.set_result)
        inline = codec.decode(done.result(5))
        assert list(inline) == list(messages.reply(77, {}))
        slow: Future[bytes] = Future()
        engine.submit({"id": 78, "command": "nope"}, slow.set_result)
        unknown = codec.decode(slow.result(5))
        assert list(unknown) == list(messages.error_reply(78, "x", "y")) and unknown["id"] == 78
        assert unknown["error"] == "Unknown command: nope"
    finally:
        engine.close()


def test_the_frame_header_is_four_big_endian_bytes() -> None:
    assert HEADER_SIZE == 4 and header(258) == b"\x00\x00\x01\x02"
    assert pack(b"abc") == b"\x00\x00\x00\x03abc"
    assert pack_many([b"a", b"bc"]) == b"\x00\x00\x00\x01a\x00\x00\x00\x02bc"
    assert unpack_length(b"xx\x00\x00\x01\x00", 2) == (256,)
