"""Finding live workers and talking to their control sockets.

`dspex inspect`, `dspex repl --attach` and the benchmark use this module. Discovery
reads the runtime directory's `<pid>.json` files; a file whose process is gone or whose
socket refuses connections is stale and is removed by whoever reads it, so a crashed
worker never leaves a phantom in the list for long.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .security import DISCOVERY_SUFFIX, SOCKET_SUFFIX, ControlFailure, check_private_dir, runtime_dir
from ..wire import codec, messages
from ..wire.framing import FrameReader, Oversized, pack

DEFAULT_TIMEOUT = 10.0
# How long a liveness probe waits for a socket to accept before calling it stale.
PROBE_TIMEOUT = 1.0


class ControlError(RuntimeError):
    """A control request failed; error_type is the worker's code (or one of this client's)."""

    def __init__(self, message: str, error_type: str = "control_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class WorkerNotFound(ControlError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "worker_not_found")


class WorkerGone(ControlError):
    """The worker closed the control connection (it exited, or refused us)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "worker_gone")


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as its discovery file describes it."""

    pid: int
    worker_id: str
    mode: str
    socket: str
    started_at: float | None = None
    version: str | None = None
    control: str = "on"
    discovery: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- discovery ---------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but someone else's
    return True


def socket_accepts(path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if something listens on the Unix socket at path."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _read_discovery(path: Path) -> WorkerInfo | None:
    try:
        data = json.loads(path.read_text("utf-8"))
        return WorkerInfo(pid=int(data["pid"]), worker_id=str(data.get("worker_id")),
                          mode=str(data.get("mode")), socket=str(data["socket"]),
                          started_at=data.get("started_at"), version=data.get("version"),
                          control=str(data.get("control", "on")), discovery=str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove(*paths: str | Path | None) -> None:
    for path in paths:
        if path is None:
            continue
        try:
            os.unlink(path)
        except OSError:
            pass


def scan_workers(directory: Path | None = None, clean: bool = True) -> tuple[list[WorkerInfo], list[WorkerInfo]]:
    """(live, stale) workers of the runtime directory; stale files are removed when clean."""
    directory = directory or runtime_dir()
    if not os.path.lexists(directory):
        return [], []
    try:
        check_private_dir(directory)
    except ControlFailure as exc:
        raise ControlError(f"{exc.message}; refusing to use it", exc.error_type) from None
    live: list[WorkerInfo] = []
    stale: list[WorkerInfo] = []
    for path in sorted(directory.glob(f"*{DISCOVERY_SUFFIX}")):
        info = _read_discovery(path)
        if info is None:
            continue  # half-written files cannot exist (atomic rename); leave foreign files alone
        if _pid_alive(info.pid) and socket_accepts(info.socket):
            live.append(info)
        else:
            stale.append(info)
            if clean:
                _remove(path, info.socket)
    # Sockets whose discovery file is gone and whose owner is dead are litter too.
    if clean:
        known = {w.socket for w in live}
        for sock in directory.glob(f"*{SOCKET_SUFFIX}"):
            if str(sock) not in known and sock.stem.isdigit() and not _pid_alive(int(sock.stem)):
                _remove(sock)
    live.sort(key=lambda w: (w.started_at or 0, w.pid))
    return live, stale


def discovered_workers(directory: Path | None = None) -> list[WorkerInfo]:
    """Workers whose discovery file names a live process, without probing their sockets:
    what a watcher polling every second reads (it learns of a dead socket on connect)."""
    directory = directory or runtime_dir()
    if not os.path.lexists(directory):
        return []
    try:
        check_private_dir(directory)
    except ControlFailure as exc:
        raise ControlError(f"{exc.message}; refusing to use it", exc.error_type) from None
    found = []
    for path in sorted(directory.glob(f"*{DISCOVERY_SUFFIX}")):
        info = _read_discovery(path)
        if info is not None and _pid_alive(info.pid):
            found.append(info)
    found.sort(key=lambda w: (w.started_at or 0, w.pid))
    return found


def list_workers(directory: Path | None = None) -> list[WorkerInfo]:
    """The live workers on this machine for this user; stale discovery files are cleaned."""
    return scan_workers(directory)[0]


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def resolve_worker(spec: str, directory: Path | None = None) -> WorkerInfo:
    """The live worker named by spec: a pid, a worker id (or unique prefix), or a socket path."""
    spec = spec.strip()
    if not spec:
        raise WorkerNotFound("no worker given")
    if "/" in spec or spec.endswith(SOCKET_SUFFIX):
        if not os.path.lexists(spec):
            raise WorkerNotFound(f"no such control socket: {spec}")
        if not _is_socket(spec):
            raise WorkerNotFound(f"{spec} is not a socket")
        sibling = Path(spec).with_suffix(DISCOVERY_SUFFIX)
        info = _read_discovery(sibling) if sibling.exists() else None
        if not socket_accepts(spec):
            raise WorkerGone(f"{spec} is a stale socket: no worker is listening on it")
        if info is not None and os.path.realpath(info.socket) == os.path.realpath(spec):
            return info
        # A socket without a discovery file: ask the worker who it is.
        with ControlClient(spec) as client:
            status = client.call("status")
        return WorkerInfo(pid=int(status["pid"]), worker_id=str(status["worker_id"]), mode=str(status["mode"]),
                          socket=spec, started_at=status.get("started_at"),
                          version=(status.get("versions") or {}).get("dspex"), control=str(status.get("control")))
    live, stale = scan_workers(directory)
    if spec.isdigit():
        pid = int(spec)
        for worker in live:
            if worker.pid == pid:
                return worker
        if any(w.pid == pid for w in stale):
            raise WorkerGone(f"worker pid {pid} is gone (its stale socket was removed)")
        if _pid_alive(pid):
            raise WorkerNotFound(f"process {pid} has no control socket here (not a dspex worker, "
                                 "another user's, or started with --control off)")
        raise WorkerNotFound(f"no process with pid {pid}")
    exact = [w for w in live if w.worker_id == spec]
    if len(exact) == 1:
        return exact[0]
    prefixed = [w for w in live if w.worker_id.startswith(spec)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(exact) > 1 or len(prefixed) > 1:
        pids = ", ".join(str(w.pid) for w in (exact or prefixed))
        raise WorkerNotFound(f"worker id {spec!r} is ambiguous (pids {pids}); give a pid instead")
    if any(w.worker_id == spec for w in stale):
        raise WorkerGone(f"worker {spec!r} is gone (its stale socket was removed)")
    raise WorkerNotFound(f"no live dspex worker matches {spec!r} (run `dspex inspect` to list them)")


# -- the client ------------------------------------------------------------------------------


class ControlClient:
    """One connection to a worker's control socket. Calls are serialised; thread-safe."""

    def __init__(self, socket_path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = os.fspath(socket_path)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._reader = FrameReader(1 << 30)
        self._frames: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.socket_path)
        except FileNotFoundError:
            self._sock.close()
            raise WorkerNotFound(f"no such control socket: {self.socket_path}") from None
        except ConnectionRefusedError:
            self._sock.close()
            raise WorkerGone(f"{self.socket_path} is a stale socket: no worker is listening on it") from None
        except PermissionError:
            self._sock.close()
            raise ControlError(f"permission denied for {self.socket_path} (another user's worker?)",
                               "permission_denied") from None
        except OSError as exc:
            self._sock.close()
            raise ControlError(f"cannot connect to {self.socket_path}: {exc.strerror or exc}") from None

    def _read_message(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._frames:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ControlError("the worker did not answer in time", "timeout")
                self._sock.settimeout(remaining)
            else:
                self._sock.settimeout(None)
            try:
                chunk = self._sock.recv(1 << 20)
            except socket.timeout:
                raise ControlError("the worker did not answer in time", "timeout") from None
            except OSError as exc:
                raise WorkerGone(f"control connection lost: {exc.strerror or exc}") from None
            if not chunk:
                raise WorkerGone("the worker closed the control connection (did it exit?)")
            for frame in self._reader.feed(chunk):
                if not isinstance(frame, Oversized):
                    self._frames.append(frame)
        message = codec.decode_reply(self._frames.pop(0))  # ids beyond 64 bits stay exact
        if not isinstance(message, dict):
            raise ControlError("the worker sent something that is not a control reply", "invalid_reply")
        return message

    def _send(self, request: dict[str, Any]) -> None:
        try:
            self._sock.sendall(pack(codec.encode(request)))
        except OSError as exc:
            raise WorkerGone(f"control connection lost: {exc.strerror or exc}") from None

    def call(self, command: str, args: dict[str, Any] | None = None,
             timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Sends one control request and returns its result; raises ControlError on an error reply."""
        with self._lock:
            rid = next(self._ids)
            self._send(messages.request(rid, command, args))
            while True:
                reply = self._read_message(timeout)
                if reply.get("id") in (rid, None):
                    break  # id None: the worker refused the connection before reading us
        if not reply.get("success"):
            raise ControlError(str(reply.get("error") or "control request failed"),
                               str(reply.get("error_type") or "control_error"))
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def exec(self, command: str, args: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Runs a registered command in the worker; returns the engine's reply (success or not)."""
        request: dict[str, Any] = {"command": command, "args": args or {}}
        if timeout is not None:
            request["timeout"] = timeout
        # The worker enforces the timeout; give its answer a moment more to arrive.
        wait = None if timeout is None else timeout + 5.0
        return self.call("exec", request, timeout=wait)["reply"]

    def subscribe(self, frames: bool = True, lm: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                  max_string: int | None = None) -> Iterator[dict[str, Any]]:
        """Streams events ({"event", "data", "timestamp"}) until the worker goes (WorkerGone).

        The connection is dedicated to the stream from then on: use another client for calls.
        """
        # Subscribed before returning, so nothing that happens after this call is missed.
        args: dict[str, Any] = {"frames": frames, "lm": lm}
        if max_string is not None:
            args["max_string"] = max_string
        self.call("subscribe", args, timeout=timeout)
        return self._events()

    def _events(self) -> Iterator[dict[str, Any]]:
        while True:
            message = self._read_message(None)
            if "event" in message:
                yield message

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ControlClient", "ControlError", "WorkerGone", "WorkerInfo", "WorkerNotFound", "discovered_workers",
           "list_workers",
           "resolve_worker", "scan_workers", "socket_accepts"]
