"""JSON codec of frames: strict decoding, clear errors, id salvage, safe encoding."""

from __future__ import annotations

import datetime
import json

import orjson
import pytest

from bridge.wire import codec
from bridge.wire.codec import decode, decode_exact, encode, salvage_id
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


@pytest.mark.parametrize("value", [{"x": object()}, {"x": {1, 2}}, {"x": b"bytes"}, {"x": 2 ** 70, "y": object()}])
def test_encode_non_serializable_raises_serialization_failed(value: dict) -> None:
    with pytest.raises(SerializationFailed) as info:
        codec.encode(value)
    assert info.value.error_type == "serialization_error"
    assert "not JSON-serializable" in info.value.message


@pytest.mark.parametrize("number", [2 ** 64, -(2 ** 63) - 1, 1180591620717411303425, -(10 ** 39)])
def test_integers_beyond_64_bits_are_encoded_exactly(number: int) -> None:
    data = encode({"id": number, "success": True, "result": {"n": number}})
    assert data.startswith(b'{"id":' + str(number).encode() + b",")
    assert json.loads(data) == {"id": number, "success": True, "result": {"n": number}}


def test_decode_exact_keeps_a_big_id_and_falls_back_when_it_cannot() -> None:
    payload = b'{"id": 1180591620717411303425, "command": "ping", "args": {"n": 18446744073709551616}}'
    exact = decode_exact(payload, decode(payload))
    assert exact["id"] == 1180591620717411303425 and exact["args"]["n"] == 2 ** 64
    deep = b'{"id": 1.5, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    fast = {"id": 1.5}
    assert decode_exact(deep, fast) is fast


def test_salvage_id_reads_ids_beyond_64_bits_but_not_floats() -> None:
    assert salvage_id(b'{"id": -9223372036854775809, "command": "ping"') == -9223372036854775809
    assert salvage_id(b'{"id": 12.5, "command": "ping"') is None
    assert salvage_id(b'{"id": 1, "id": 2, "command"') is None
