"""Regression tests for frames that once killed or stalled a real worker (issue 9, items 1-3, 5, 6).

Each test drives a real `dspex serve` subprocess, then proves it is still alive and
answering: a crash, a hang or a lost reply fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bridge.wire.client import WorkerClient
from bridge.wire.framing import pack
from fixtures import ok


def still_serving(worker: WorkerClient) -> None:
    started = time.monotonic()
    assert ok(worker.request("ping", timeout=5))["status"] == "ok"
    assert time.monotonic() - started < 5
    assert worker.process.poll() is None


@pytest.mark.parametrize("command", ["[]", "{}", '["ping"]', '{"ping": 1}', "7", "true"])
def test_a_command_of_the_wrong_type_gets_invalid_request(spawn_worker: Callable[..., WorkerClient],
                                                          command: str) -> None:
    worker = spawn_worker("--no-warm")
    future = worker.expect(1)
    raw = b'{"id":1,"command":' + command.encode() + b"}"
    worker.send_raw(pack(raw))
    reply = future.result(5)
    assert reply["success"] is False and reply["error_type"] == "invalid_request", reply
    still_serving(worker)


def test_the_21_byte_frame_of_the_report(spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-warm")
    future = worker.expect(1)
    worker.send_raw(b'\x00\x00\x00\x15{"id":1,"command":[]}')
    assert future.result(5)["error_type"] == "invalid_request"
    still_serving(worker)


@pytest.mark.parametrize("request_id", [-9223372036854775809, 18446744073709551616, -(10 ** 39)])
def test_a_salvaged_id_beyond_64_bits_is_answered_exactly(spawn_worker: Callable[..., WorkerClient],
                                                          request_id: int) -> None:
    worker = spawn_worker("--no-warm")
    future = worker.expect(request_id)
    worker.send_raw(pack(b'{"id": ' + str(request_id).encode() + b', "command": "ping"'))  # truncated JSON
    reply = future.result(5)
    assert reply["id"] == request_id and type(reply["id"]) is int
    assert reply["error_type"] == "invalid_json"
    still_serving(worker)


def test_an_id_too_long_to_salvage_is_dropped_and_counted(spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-warm")
    worker.send_raw(pack(b'{"id": ' + b"9" * 60 + b', "command": "ping"'))
    still_serving(worker)
    stats = ok(worker.request("get_stats"))
    assert stats["error_count"] >= 1


@pytest.fixture(scope="module")
def hostile_target(module_spawn: Callable[..., WorkerClient]) -> WorkerClient:
    """One worker takes every odd id in turn (and must still serve after all of them)."""
    return module_spawn("--no-warm")


@pytest.mark.parametrize("request_id", [1180591620717411303425, 18446744073709551616, -9223372036854775809,
                                        18446744073709551615, -9223372036854775808])
@pytest.mark.parametrize("command", ["ping", "get_stats", "no_such_command", "list_programs"])
def test_ids_beyond_64_bits_are_echoed_as_sent(hostile_target: WorkerClient, request_id: int, command: str) -> None:
    worker = hostile_target
    future = worker.expect(request_id)
    worker.send_raw(pack(b'{"id":' + str(request_id).encode() + b',"command":"' + command.encode() + b'"}'))
    reply = future.result(10)
    assert reply["id"] == request_id and type(reply["id"]) is int
    assert reply["success"] is (command != "no_such_command")
    still_serving(worker)


def test_a_huge_unknown_command_is_answered_at_once_with_a_short_error(
        spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-warm")
    name = "x" * (8 << 20)
    future = worker.expect(5)
    worker.send_raw(pack(b'{"id":5,"command":"' + name.encode() + b'"}'))
    ping = worker.submit("ping")
    reply = future.result(10)
    assert reply["error_type"] == "unknown_command"
    assert reply["error"].startswith("Unknown command: xxx") and len(reply["error"]) < 1000
    assert ping.result(10)["success"] is True


def test_unknown_command_names_are_counted_under_one_bucket(spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-warm")
    before = len(str(ok(worker.request("get_stats"))))
    futures = [worker.submit(f"unknown_{i}_" + "y" * 2000) for i in range(300)]
    assert all(f.result(10)["error_type"] == "unknown_command" for f in futures)
    stats = ok(worker.request("get_stats"))
    assert stats["commands_by_name"].get("(unknown)") == 300
    assert not any(name.startswith("unknown_") for name in stats["commands_by_name"])
    assert len(str(stats)) < before + 200


def test_a_close_misspelling_still_gets_a_suggestion(spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-warm")
    reply = worker.request("pign")
    assert reply["details"]["suggestion"] == "ping"


@pytest.mark.parametrize("session_id", [[1], {"a": 1}, True, 1.5, "s" * 300])
def test_a_session_id_that_cannot_name_a_session_is_refused(spawn_worker: Callable[..., WorkerClient],
                                                            session_id: object) -> None:
    worker = spawn_worker("--no-warm")
    for command in ("list_programs", "get_session_data", "ping"):
        reply = worker.request(command, {"session_id": session_id})
        assert reply["success"] is False and reply["error_type"] == "invalid_arguments", reply
    still_serving(worker)
