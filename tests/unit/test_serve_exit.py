"""exit() and the reader hand over through two flags instead of a lock per read
(bridge.serve.server): replies the reader is making are written before the exit hooks
run, and a read that comes after exit began is never handled."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.serve import server as server_module
from bridge.serve.config import ServeConfig
from bridge.serve.server import Server
from bridge.wire.framing import FrameReader


class Exited(BaseException):
    """Stands in for os._exit, so the test thread survives the exit."""


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, int, list[str]]]:
    replies_read, replies_write = os.pipe()
    server = Server(ServeConfig(control="off", warm=False), protocol_fd=replies_write, input_fd=-1)
    events: list[str] = []
    server.exit_hooks.append(lambda: events.append("hooks"))

    def fake_exit(code: int) -> None:
        events.append(f"exit {code}")
        raise Exited

    monkeypatch.setattr(server_module.os, "_exit", fake_exit)
    monkeypatch.setattr(server_module.logging, "shutdown", lambda: None)
    server._reader_ident = threading.get_ident()  # this test thread plays the reader
    yield server, replies_read, events
    server.engine.close()
    os.close(replies_read)
    os.close(replies_write)


def exit_from_another_thread(server: Server) -> threading.Thread:
    def run() -> None:
        try:
            server.exit(0)
        except Exited:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_exit_waits_for_the_read_being_handled_and_writes_its_batch(harness: tuple[Server, int, list[str]]) -> None:
    server, replies, events = harness
    server._handling = True  # the reader is working through a read ...
    server._batch = [b'{"id":1}']  # ... and has made one reply so far
    thread = exit_from_another_thread(server)
    time.sleep(0.05)
    assert events == [] and server._exiting  # exit began, and waits
    server._batch.append(b'{"id":2}')  # the rest of the read's replies
    server._flush_batch()
    server._handling = False
    thread.join(2)
    assert events == ["hooks", "exit 0"]
    frames = FrameReader().feed(os.read(replies, 1 << 16))
    assert frames == [b'{"id":1}', b'{"id":2}']  # written before the hooks ran, none lost


def test_exit_on_the_reader_thread_flushes_at_once(harness: tuple[Server, int, list[str]]) -> None:
    server, replies, events = harness
    server._handling = True
    server._batch = [b'{"id":7}']
    started = time.monotonic()
    with pytest.raises(Exited):
        server.exit(0)  # e.g. a reply write failed: the reader itself exits
    assert time.monotonic() - started < server_module.EXIT_WAIT_FOR_READER / 2
    assert events == ["hooks", "exit 0"]
    assert FrameReader().feed(os.read(replies, 1 << 16)) == [b'{"id":7}']


def test_a_read_that_arrives_after_exit_began_is_not_handled(harness: tuple[Server, int, list[str]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server, replies, events = harness
    frames_in, frames_out = os.pipe()
    server.input_fd = frames_in
    handled: list[Any] = []
    monkeypatch.setattr(server.engine, "submit_frame", lambda payload, send: handled.append(payload))
    # The loop alone: no signal handlers (main thread only), extras or command loading.
    monkeypatch.setattr(server, "_install_signals", lambda: None)
    monkeypatch.setattr(server, "_start_extras", lambda: None)
    monkeypatch.setattr(server.engine, "load_commands_in_background", lambda *args, **kwargs: None)
    server._exiting = True
    server._exit_lock.acquire()  # held by the exiting thread until the process ends
    reader = threading.Thread(target=server.run, daemon=True)
    os.write(frames_out, b"\x00\x00\x00\x02{}")
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and handled == []  # parked, the frame untouched
    assert server._handling is False  # and exit() is not kept waiting for it
    os.close(frames_out)
