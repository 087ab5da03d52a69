"""JSON codec of frames: strict decoding, clear errors, id salvage, safe encoding."""

from __future__ import annotations

import datetime

import orjson
import pytest

from bridge import codec
from bridge.errors import InvalidJSON, InvalidUTF8, SerializationFailed


def test_decode_roundtrips_a_request() -> None:
    request = {"id": 7, "command": "ping", "args": {"x": [1, 2.5, "é", None, True]}}
    assert codec.decode(orjson.dumps(request)) == request


def test_decode_invalid_json_names_the_problem() -> None:
    with pytest.raises(InvalidJSON) as info:
        codec.decode(b'{"id": 1, "command": ')
    assert info.value.error_type == "invalid_json"
    assert "not valid JSON" in info.value.message


def test_decode_non_utf8_is_its_own_error() -> None:
    with pytest.raises(InvalidUTF8) as info:
        codec.decode(b'{"id": 1, "command": "\xff\xfe"}')
    assert info.value.error_type == "invalid_utf8"
    assert "byte 22" in info.value.message


def test_decode_accepts_non_object_json() -> None:
    # The engine, not the codec, decides that a request must be an object.
    assert codec.decode(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize("payload, expected", [
    (b'{"id": 42, "command": ', 42),
    (b'{"id":-3,"x":\xff}', -3),
    (b'{"command": "ping", "id" : 9000000000}', 9000000000),
    (b'{"id": 1, "id": 2, broken', None),  # ambiguous: no guess
    (b'{"command": "ping", broken', None),
    (b'{"id": "abc", ', None),  # only integer ids are salvaged
])
def test_salvage_id(payload: bytes, expected: int | None) -> None:
    assert codec.salvage_id(payload) == expected


def test_encode_plain_values() -> None:
    reply = {"id": 1, "success": True, "result": {"n": 1, "f": 2.5, "s": "ü", "l": [None]}}
    assert orjson.loads(codec.encode(reply)) == reply


def test_encode_non_string_keys_become_strings() -> None:
    assert orjson.loads(codec.encode({1: "a", 2.5: "b"})) == {"1": "a", "2.5": "b"}


def test_encode_native_types_orjson_knows() -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert orjson.loads(codec.encode({"t": when})) == {"t": "2024-01-02T03:04:05"}


@pytest.mark.parametrize("value", [{"x": object()}, {"x": {1, 2}}, {"x": 2 ** 70}, {"x": b"bytes"}])
def test_encode_non_serializable_raises_serialization_failed(value: dict) -> None:
    with pytest.raises(SerializationFailed) as info:
        codec.encode(value)
    assert info.value.error_type == "serialization_error"
    assert "not JSON-serializable" in info.value.message
