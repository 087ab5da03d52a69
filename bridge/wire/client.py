"""A client for a worker subprocess speaking the port framing.

Replay (`--worker`), the REPL (`--spawn`), the benchmark and the tests all talk to
workers through this one class, exactly as an Erlang port does: frames on the child's
stdin, frames back on its stdout, replies correlated by id.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from .codec import decode_exact
from .framing import Oversized, pack, read_frames


class WorkerGone(RuntimeError):
    """The worker exited or closed its output before answering."""

    error_type = "worker_gone"


class WorkerClient:
    """Spawns `argv` and exchanges frames with it; thread-safe."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 stderr: Any = None, cwd: str | None = None) -> None:
        self.process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=stderr, env=env, cwd=cwd, bufsize=0)
        self._ids = itertools.count(1)
        self._pending: dict[Any, Future[dict[str, Any]]] = {}
        self._unmatched: list[dict[str, Any]] = []
        # Events (frames with "event", never "success") by request id, in arrival order;
        # `on_event`, when set, also sees each one on the reader thread (to answer callbacks).
        self.events: dict[Any, list[dict[str, Any]]] = {}
        self.on_event: Any = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="worker-client-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        try:
            for frame in read_frames(fd, 1 << 30):
                if isinstance(frame, Oversized):
                    continue
                reply = orjson.loads(frame)
                if type(reply.get("id")) is float:  # an id beyond 64 bits: read it exactly
                    reply = decode_exact(frame, reply)
                if "event" in reply and "success" not in reply:
                    with self._lock:
                        self.events.setdefault(reply.get("id"), []).append(reply)
                    if self.on_event is not None:
                        self.on_event(reply)
                    continue
                with self._lock:
                    future = self._pending.pop(reply.get("id"), None)
                    if future is None:
                        self._unmatched.append(reply)
                if future is not None:
                    future.set_result(reply)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._closed = True
                pending = list(self._pending.values())
                self._pending.clear()
            for future in pending:
                if not future.done():
                    future.set_exception(WorkerGone("worker closed its output before replying"))

    def send_raw(self, data: bytes) -> None:
        """Writes bytes as they are (tests use this for broken frames)."""
        assert self.process.stdin is not None
        with self._write_lock:
            self.process.stdin.write(data)

    def send_frame(self, message: dict[str, Any]) -> None:
        """Writes one frame that is not a request (a callback's answer)."""
        self.send_raw(pack(orjson.dumps(message)))

    def events_of(self, request_id: Any) -> list[dict[str, Any]]:
        """The events received so far for one request."""
        with self._lock:
            return list(self.events.get(request_id, []))

    def submit(self, command: str, args: dict[str, Any] | None = None, *,
               request_id: Any = None, extra: dict[str, Any] | None = None) -> Future[dict[str, Any]]:
        """Sends one request; the future resolves with its reply."""
        rid = next(self._ids) if request_id is None else request_id
        request = {"id": rid, "command": command, "args": args if args is not None else {}}
        if extra:
            request.update(extra)
        return self.submit_request(request)

    def submit_request(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(WorkerGone("worker is not running"))
                return future
            self._pending[request.get("id")] = future
        try:
            self.send_raw(pack(orjson.dumps(request)))
        except OSError as exc:
            with self._lock:
                self._pending.pop(request.get("id"), None)
            future.set_exception(WorkerGone(f"cannot write to worker: {exc}"))
        return future

    def request(self, command: str, args: dict[str, Any] | None = None, *, request_id: Any = None,
                timeout: float = 30.0) -> dict[str, Any]:
        """Sends one request and waits for its reply."""
        return self.submit(command, args, request_id=request_id).result(timeout)

    def expect(self, request_id: Any) -> Future[dict[str, Any]]:
        """A future for a reply to a request sent with send_raw."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            for index, reply in enumerate(self._unmatched):
                if reply.get("id") == request_id:
                    future.set_result(self._unmatched.pop(index))
                    return future
            self._pending[request_id] = future
        return future

    def close_input(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> int:
        """Closes stdin and waits for the exit; kills a worker that does not leave."""
        self.close_input()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dspex_serve_argv(*extra: str) -> list[str]:
    """How to start this package's worker with the current interpreter."""
    import sys

    return [sys.executable, "-m", "dspex_cli", "serve", *extra]


__all__ = ["WorkerClient", "WorkerGone", "dspex_serve_argv"]
