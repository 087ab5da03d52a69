"""The control socket: a live worker's state for `dspex inspect` and `dspex repl --attach`.

Every `dspex serve` (unless `--control off`) listens on a Unix socket in a private
runtime directory and writes a discovery file beside it. The socket speaks the port's
framing and codec. It is served on threads of its own and reads engine state by copying
it (deques, dicts) without holding engine locks, so inspection never delays a request.

Who may connect: the socket lives in a 0700 directory and is itself 0600, and every
peer's credentials (SO_PEERCRED) are checked on accept. A peer must run as the worker's
uid; root is also let in, because root can read the worker's memory anyway and on-call
engineers often debug with sudo. Any other uid gets one `permission_denied` reply and
the connection is closed.

What it answers is the table `VIEWS` below (read-only views, `subscribe`) plus `exec`,
which runs a command of the one engine registry exactly as if it had come through the
port; nothing else is ever executed. Every value leaving the socket goes through
`public()`, so no secret can be returned.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .wire import codec
from .errors import BridgeError, InvalidArguments, UnknownCommand
from .wire.framing import FrameReader, Oversized, pack
from .adapter import session_states
from .redact import TOO_DEEP, TooDeep, redact, scrub_text

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.control")

RUNTIME_SUBDIR = "dspex"
DISCOVERY_SUFFIX = ".json"
SOCKET_SUFFIX = ".sock"
DISCOVERY_FORMAT = "dspex-control/1"
# Control frames are small requests; a larger one is a confused or hostile peer.
MAX_CONTROL_FRAME = 1 << 20
MAX_CONNECTIONS = 32
# How often a subscription forwards what the taps queued (and notices a gone client).
SUBSCRIPTION_POLL_SECONDS = 0.05
SUBSCRIPTION_QUEUE = 2000
SUBSCRIPTION_FLUSH_SECONDS = 0.5
DEFAULT_EXEC_TIMEOUT = 600.0
DEFAULT_STRING_LIMIT = 200
MAX_ITEMS = 20
MAX_DEPTH = 8
# Linux's sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class ControlFailure(BridgeError):
    """A control request that cannot be answered; its error_type travels with it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class UnsafeRuntimeDir(ControlFailure):
    def __init__(self, message: str) -> None:
        super().__init__("unsafe_runtime_dir", message)


# -- the runtime directory ---------------------------------------------------------------


def runtime_dir() -> Path:
    """Where sockets and discovery files live: $XDG_RUNTIME_DIR/dspex, else a per-user temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / RUNTIME_SUBDIR
    return Path(tempfile.gettempdir()) / f"dspex-{os.getuid()}"


def check_private_dir(path: Path, uid: int | None = None) -> None:
    """Refuses a directory another user could control or read (a symlink, wrong owner, group/other bits)."""
    owner = os.getuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeRuntimeDir(f"runtime directory {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRuntimeDir(f"runtime directory {path} is not a plain directory")
    if info.st_uid != owner:
        raise UnsafeRuntimeDir(f"runtime directory {path} belongs to uid {info.st_uid}, not {owner}")
    if info.st_mode & 0o077:
        raise UnsafeRuntimeDir(f"runtime directory {path} has mode {stat.S_IMODE(info.st_mode):o}; "
                               "it must be 700")


def ensure_runtime_dir(path: Path | None = None) -> Path:
    """Creates the runtime directory 0700 if missing; verifies an existing one."""
    path = path or runtime_dir()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeRuntimeDir(f"cannot create runtime directory {path}: {exc.strerror}") from None
    check_private_dir(path)
    return path


# -- peers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(conn: socket.socket) -> PeerCredentials | None:
    """The connecting process's pid/uid/gid as the kernel saw them at connect(); None if unsupported."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, size))
    return PeerCredentials(pid, uid, gid)


def peer_allowed(peer_uid: int, worker_uid: int) -> bool:
    """The worker's own uid, or root (which can read the worker's memory anyway)."""
    return peer_uid == worker_uid or peer_uid == 0


# -- making values safe to show ----------------------------------------------------------


def public(value: Any) -> Any:
    """A copy safe to show: secret-named keys (outside user data) and secret values masked;
    a structure nested too deeply to check is shown as a marker instead."""
    try:
        return redact(value)
    except TooDeep:
        return TOO_DEEP


def cut(value: Any, max_string: int = DEFAULT_STRING_LIMIT, max_items: int = MAX_ITEMS,
        depth: int = 0) -> Any:
    """Shortens long strings and collections, saying how much was left out."""
    if isinstance(value, str):
        if len(value) <= max_string:
            return value
        return value[:max_string] + f"… [+{len(value) - max_string} chars]"
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"{{… {len(value)} keys}}"
        items = list(value.items())
        out = {k: cut(v, max_string, max_items, depth + 1) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["…"] = f"+{len(items) - max_items} more keys"
        return out
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return f"[… {len(value)} items]"
        shown = [cut(v, max_string, max_items, depth + 1) for v in value[:max_items]]
        if len(value) > max_items:
            shown.append(f"… +{len(value) - max_items} more items")
        return shown
    return value


def snapshot(copy: Callable[[], Any], attempts: int = 5) -> Any:
    """Copies a container another thread may be changing; retries the rare collision."""
    for _ in range(attempts - 1):
        try:
            return copy()
        except RuntimeError:  # "deque/dict mutated during iteration"
            time.sleep(0)
    return copy()


def _int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArguments(f"'{name}' must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArguments(f"'{name}' must be between {low} and {high}, got {value}")
    return value


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index], 3)


# -- describing frames and LM calls --------------------------------------------------------


def describe_frame(engine: Engine, direction: str, at: float, payload: bytes, max_string: int,
                   request_times: dict[str, float] | None = None) -> dict[str, Any]:
    """One frame as inspect shows it: decoded, redacted, cut, with the reply's latency."""
    entry: dict[str, Any] = {"direction": direction, "size": len(payload),
                             "timestamp": engine.started_wall + (at - engine.started),
                             "age_ms": round((time.monotonic() - at) * 1000, 1)}
    try:
        message = codec.decode(payload)
    except BridgeError as exc:
        entry["error"] = exc.error_type
        entry["raw"] = cut(scrub_text(payload[:max_string * 2].decode("utf-8", "replace")), max_string)
        return entry
    if isinstance(message, dict):
        rid = message.get("id")
        entry["id"] = rid
        if direction == "in":
            entry["command"] = message.get("command")
            args = message.get("args")
            if isinstance(args, dict) and args.get("session_id"):
                entry["session_id"] = args.get("session_id")
            if request_times is not None:
                request_times[repr(rid)] = at
        else:
            entry["success"] = message.get("success")
            if message.get("error_type"):
                entry["error_type"] = message.get("error_type")
            started = request_times.pop(repr(rid), None) if request_times is not None else None
            if started is not None:
                entry["latency_ms"] = round((at - started) * 1000, 3)
    entry["frame"] = cut(public(message), max_string)
    # command and session id are copied from the frame as sent: a key sent as a command
    # name must be masked here too.
    return public(entry)


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):  # multi-part content: keep the text parts
        content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def describe_lm_call(record: dict[str, Any], preview: int) -> dict[str, Any]:
    """An LM call record as inspect shows it: who, how long, tokens, what was asked and answered."""
    request = record.get("request") or {}
    messages = request.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                     messages[-1] if messages else None)
    response = record.get("response") or {}
    outputs = response.get("outputs") or []
    answer = outputs[0] if outputs else None
    if isinstance(answer, dict):
        answer = answer.get("text", answer)
    entry = {
        "call_id": record.get("call_id"), "request_id": record.get("request_id"),
        "session_id": record.get("session_id"), "command": record.get("command"),
        "model": record.get("model"), "latency_ms": record.get("latency_ms"),
        "usage": record.get("usage") or {}, "error": record.get("error"),
        "timestamp": record.get("timestamp"), "key": record.get("key"),
        "messages": len(messages), "params": request.get("params") or {},
        "prompt_preview": cut(_message_text(last_user) if last_user is not None else "", preview),
        "answer_preview": cut("" if answer is None else str(answer), preview),
    }
    return cut(public(entry), max(preview, DEFAULT_STRING_LIMIT))


# -- the views -----------------------------------------------------------------------------


View = Callable[["ControlServer", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ViewSpec:
    name: str
    summary: str
    handler: View


VIEWS: dict[str, ViewSpec] = {}


def view(name: str, summary: str) -> Callable[[View], View]:
    """Registers a read-only view of the control socket (these are not engine commands)."""
    def register(handler: View) -> View:
        VIEWS[name] = ViewSpec(name, summary, handler)
        return handler
    return register


@view("status", "pid, worker id, mode, uptime, versions, memory, counters, rates, errors by type")
def _status(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    from .system import memory_usage, versions

    engine = server.engine
    stats = engine.stats
    sessions = engine.sessions.all()
    latencies = [c.get("latency_ms") for c in snapshot(lambda: list(engine.recent_lm_calls))]
    latencies = [x for x in latencies if isinstance(x, (int, float))]
    status = {
        "pid": os.getpid(), "ppid": os.getppid(), "worker_id": engine.worker_id,
        "mode": engine.config.mode, "control": "read-only" if server.read_only else "on",
        "started_at": engine.started_wall, "uptime": round(engine.uptime(), 3),
        "versions": versions(), "memory": memory_usage(), "threads": threading.active_count(),
        "shutting_down": engine.shutting_down.is_set(), "argv": list(engine.config.argv),
        "control_connections": server.connections,
        "counters": {
            "commands": stats.command_count, "errors": stats.error_count,
            "protocol_errors": stats.protocol_errors, "lm_calls": stats.lm_calls,
            "sessions": len(sessions), "inflight": len(engine.inflight),
        },
        "commands_by_name": dict(stats.by_command), "errors_by_type": dict(stats.errors_by_type),
        "usage": dict(stats.usage), "rates": server.rates.rates(),
        "lm_latency_ms": {"recent": len(latencies), "p50": _percentile(latencies, 0.5),
                          "p95": _percentile(latencies, 0.95),
                          "max": round(max(latencies), 3) if latencies else None},
    }
    for adapter in engine.adapters:  # what each framework adds (DSPy: loaded, default LM, programs)
        fields = adapter.status_fields(session_states(engine, adapter, sessions))
        status["counters"].update(fields.pop("counters", {}))
        status.update(fields)
    return public(status)


@view("sessions", "sessions with what each adapter keeps in them (DSPy: programs, LM) and last activity")
def _sessions(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    sessions = []
    for session in server.engine.sessions.all():
        entry: dict[str, Any] = {"session_id": session.session_id}
        for adapter in server.engine.adapters:
            state = session.state.get(adapter.name)
            if state is not None:
                entry.update(snapshot(lambda: adapter.session_fields(state, view=True)))
        sessions.append({
            **entry,
            "data_fields": snapshot(lambda: sorted(map(str, session.data))),
            "created_at": session.created_at, "last_activity": session.last_activity,
            "idle_s": round(now - session.last_activity, 3),
        })
    sessions.sort(key=lambda s: -s["last_activity"])
    return public({"sessions": sessions, "total": len(sessions)})


@view("inflight", "requests being worked on: id, command, session, age")
def _inflight(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    entries = snapshot(lambda: list(server.engine.inflight.values()))
    work = [{"id": e.request_id, "command": e.command, "session_id": e.session_id,
             "age_ms": round((now - e.started) * 1000, 1), "cancelled": e.cancel.is_set()}
            for e in entries]
    work.sort(key=lambda w: -w["age_ms"])
    return public({"inflight": work, "total": len(work)})


@view("frames", "the last N frames in and out, decoded, redacted, long values cut")
def _frames(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    engine = server.engine
    limit = _int_arg(args, "limit", 20, 1, 100_000)  # more than the ring holds means all of it
    max_string = _int_arg(args, "max_string", DEFAULT_STRING_LIMIT, 16, 100_000)
    frames = snapshot(lambda: list(engine.recent_frames))
    shown = frames[-limit:]
    # Replies in the window need their requests' arrival times; earlier requests are only
    # decoded for their id (cheap), never redacted or cut.
    request_times: dict[str, float] = {}
    for direction, at, payload in frames[:len(frames) - len(shown)]:
        if direction == "in":
            try:
                message = codec.decode(payload)
            except BridgeError:
                continue
            if isinstance(message, dict):
                request_times[repr(message.get("id"))] = at
    described = [describe_frame(engine, d, at, p, max_string, request_times) for d, at, p in shown]
    return {"frames": described, "total": len(frames), "capacity": engine.recent_frames.maxlen}


@view("lm", "the last N LM calls: model, latency, tokens, prompt and answer previews")
def _lm(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    engine = server.engine
    limit = _int_arg(args, "limit", 20, 1, 100_000)
    preview = _int_arg(args, "preview", 160, 16, 100_000)
    calls = snapshot(lambda: list(engine.recent_lm_calls))
    return {"calls": [describe_lm_call(c, preview) for c in calls[-limit:]], "total": len(calls),
            "capacity": engine.recent_lm_calls.maxlen}


@view("commands", "the control commands and views this socket answers")
def _commands(server: ControlServer, args: dict[str, Any]) -> dict[str, Any]:
    names = {name: spec.summary for name, spec in server.views.items()}
    names["subscribe"] = "stream frames and LM calls as they happen, until the client disconnects"
    names["exec"] = "run a registered engine command in this worker (refused when read-only)"
    return {"commands": names, "read_only": server.read_only}


# -- rates -----------------------------------------------------------------------------------


class RateSampler:
    """Samples the engine's counters once a second so status can report recent rates."""

    def __init__(self, engine: Engine, period: float = 1.0, keep: int = 62) -> None:
        self.engine = engine
        self.period = period
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=keep)
        self.stopped = threading.Event()
        self.sample()

    def sample(self) -> None:
        stats = self.engine.stats
        self.samples.append((time.monotonic(), stats.command_count, stats.error_count, stats.lm_calls))

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.sample()

    def rates(self) -> dict[str, dict[str, float]]:
        stats = self.engine.stats
        now = (time.monotonic(), stats.command_count, stats.error_count, stats.lm_calls)
        samples = snapshot(lambda: list(self.samples))
        out: dict[str, dict[str, float]] = {}
        for label, window in (("10s", 10.0), ("60s", 60.0)):
            base = next((s for s in samples if now[0] - s[0] <= window + 0.5), samples[0] if samples else now)
            span = max(now[0] - base[0], 1e-3)
            out[label] = {"window_s": round(span, 1),
                          "requests_per_s": round(max(0, now[1] - base[1]) / span, 3),
                          "errors_per_s": round(max(0, now[2] - base[2]) / span, 3),
                          "lm_calls_per_s": round(max(0, now[3] - base[3]) / span, 3)}
        uptime = max(self.engine.uptime(), 1e-3)
        out["lifetime"] = {"window_s": round(uptime, 1), "requests_per_s": round(now[1] / uptime, 3),
                           "errors_per_s": round(now[2] / uptime, 3),
                           "lm_calls_per_s": round(now[3] / uptime, 3)}
        return out


# -- subscriptions ---------------------------------------------------------------------------


class Subscription:
    """A subscriber's queue. The hot path only appends to it; the subscriber's thread does the rest."""

    def __init__(self, frames: bool, events: bool) -> None:
        self.frames = frames
        self.events = events
        self.queue: deque[tuple[str, Any, Any, float]] = deque(maxlen=SUBSCRIPTION_QUEUE)
        # Approximate (unlocked) count of items the full queue pushed out: reported, not exact.
        self.dropped = 0

    def push(self, item: tuple[str, Any, Any, float]) -> None:
        if len(self.queue) == SUBSCRIPTION_QUEUE:
            self.dropped += 1
        self.queue.append(item)


class SubscriptionHub:
    """One frame tap and one listener shared by every subscriber, installed on first use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._installed = False

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            # Copy-on-write: the hot path iterates the list without a lock.
            self.subscribers = [*self.subscribers, subscription]
            if not self._installed:
                # Appended once and never removed, so the engine's loops over its taps and
                # listeners are never disturbed by a subscriber leaving.
                self.engine.frame_taps.append(self._tap)
                self.engine.listeners.append(self._listen)
                self._installed = True

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            self.subscribers = [s for s in self.subscribers if s is not subscription]

    def _tap(self, direction: str, payload: bytes, at: float) -> None:
        for sub in self.subscribers:
            if sub.frames:
                sub.push(("frame", direction, payload, at))

    def _listen(self, kind: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        for sub in self.subscribers:
            if sub.events:
                sub.push(("event", kind, data, now))


# -- the server --------------------------------------------------------------------------------


def known_views() -> list[str]:
    """The views a default worker answers: the core's, then each adapter's."""
    from .adapters import default_adapters

    names = list(VIEWS)
    for adapter in default_adapters():
        names += [name for name in adapter.views() if name not in names]
    return names


def _engine_view(adapter_view: Callable[[Engine, dict[str, Any]], dict[str, Any]]) -> View:
    """An adapter's view (given the engine) as a control view (given the server)."""
    return lambda server, args: adapter_view(server.engine, args)


class ControlServer:
    """Accepts control connections and answers them, each on its own thread."""

    def __init__(self, engine: Engine, socket_path: Path, *, read_only: bool = False,
                 discovery_path: Path | None = None,
                 allow_peer: Callable[[int, int], bool] = peer_allowed) -> None:
        self.engine = engine
        self.socket_path = Path(socket_path)
        self.discovery_path = discovery_path
        self.read_only = read_only
        self.allow_peer = allow_peer
        self.uid = os.getuid()
        self.rates = RateSampler(engine)
        self.hub = SubscriptionHub(engine)
        # The core's views, then each adapter's (DSPy: programs).
        self.views: dict[str, ViewSpec] = dict(VIEWS)
        for adapter in engine.adapters:
            for name, (summary, adapter_view) in adapter.views().items():
                self.views[name] = ViewSpec(name, summary, _engine_view(adapter_view))
        self._listener: socket.socket | None = None
        self._connections = 0
        self._count_lock = threading.Condition()
        self._streaming = 0
        self._exec_ids = itertools.count(1)
        self._closed = threading.Event()

    @property
    def connections(self) -> int:
        """Open control connections, this one included (who else is looking?)."""
        return self._connections

    # lifecycle

    def start(self) -> None:
        path = str(self.socket_path)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ControlFailure("path_too_long", f"control socket path is too long for a Unix socket: {path}")
        try:
            os.unlink(path)  # a leftover of a dead worker that had our pid
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        # The directory is already 0700, so nobody can reach the socket before this chmod.
        os.chmod(path, 0o600)
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="dspex-control", daemon=True).start()
        threading.Thread(target=self.rates.run, name="dspex-control-rates", daemon=True).start()

    def close(self) -> None:
        """Stops accepting and removes the socket and discovery file (the exit hook)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.rates.stopped.set()
        # Give subscriptions a moment to send what they queued: the last frames before an
        # exit are the ones someone following a dying worker needs most.
        with self._count_lock:
            self._count_lock.wait_for(lambda: self._streaming == 0, timeout=SUBSCRIPTION_FLUSH_SECONDS)
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for path in (self.socket_path, self.discovery_path):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("cannot remove %s: %s", path, exc.strerror)

    def discovery(self) -> dict[str, Any]:
        from . import __version__

        return public({"format": DISCOVERY_FORMAT, "pid": os.getpid(), "worker_id": self.engine.worker_id,
                       "mode": self.engine.config.mode, "started_at": self.engine.started_wall,
                       "socket": str(self.socket_path), "version": __version__,
                       "control": "read-only" if self.read_only else "on", "uid": self.uid})

    def write_discovery(self) -> None:
        if self.discovery_path is None:
            return
        temporary = self.discovery_path.with_name(f".{self.discovery_path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.discovery(), handle)
        os.replace(temporary, self.discovery_path)  # readers never see half a file

    # connections

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.05)
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), name="dspex-control-conn",
                             daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with self._count_lock:
            self._connections += 1
            busy = self._connections > MAX_CONNECTIONS
        try:
            peer = peer_credentials(conn)
            if peer is not None and not self.allow_peer(peer.uid, self.uid):
                log.warning("refused control connection from pid %d uid %d", peer.pid, peer.uid)
                self._refuse(conn, "permission_denied",
                             f"refused: peer uid {peer.uid} is not the worker's uid {self.uid}")
                return
            if busy:
                self._refuse(conn, "busy", f"too many control connections (limit {MAX_CONNECTIONS})")
                return
            self._converse(conn)
        except OSError:
            pass  # the peer went away; nothing to tell anyone
        except Exception:
            log.exception("control connection failed")
        finally:
            with self._count_lock:
                self._connections -= 1
            try:
                conn.close()
            except OSError:
                pass

    def _converse(self, conn: socket.socket) -> None:
        reader = FrameReader(MAX_CONTROL_FRAME)
        while not self._closed.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                return
            for frame in reader.feed(chunk):
                if isinstance(frame, Oversized):
                    self._send(conn, self._error(None, "frame_too_large",
                                                 f"control frame of {frame.length} bytes exceeds {MAX_CONTROL_FRAME}"))
                    continue
                request, failure = self._parse(frame)
                if failure is not None:
                    self._send(conn, failure)
                    continue
                if request["command"] == "subscribe":
                    self._subscribe(conn, request["id"], request["args"])
                    return  # a subscription owns the connection until the client leaves
                self._send(conn, self._answer(request))

    def _parse(self, frame: bytes) -> tuple[dict[str, Any], None] | tuple[None, dict[str, Any]]:
        try:
            request = codec.decode(frame)
        except BridgeError as exc:
            return None, self._error(codec.salvage_id(frame), exc.error_type, exc.message)
        if not isinstance(request, dict):
            return None, self._error(None, "invalid_request", "a control request must be a JSON object")
        rid = request.get("id")
        name = request.get("command")
        args = request.get("args") or {}
        if not isinstance(name, str) or not name:
            return None, self._error(rid, "invalid_request", "'command' must be a non-empty string")
        if not isinstance(args, dict):
            return None, self._error(rid, "invalid_arguments", "'args' must be an object")
        return {"id": rid, "command": name, "args": args}, None

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        rid, name, args = request["id"], request["command"], request["args"]
        try:
            if name == "exec":
                result = self._exec(args)
            else:
                spec = self.views.get(name)
                if spec is None:
                    raise UnknownCommand(name, _suggest(name, self.views))
                result = spec.handler(self, args)
            return {"id": rid, "success": True, "result": result, "timestamp": time.time()}
        except BridgeError as exc:
            reply = self._error(rid, exc.error_type, exc.message)
            if exc.details:
                reply["details"] = public(exc.details)
            return reply
        except Exception as exc:  # a view must never take the connection down silently
            log.exception("control command %s failed", name)
            return self._error(rid, "internal_error", f"{type(exc).__name__}: {exc}")

    def _exec(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.read_only:
            raise ControlFailure("read_only", "this worker's control socket is read-only "
                                              "(dspex serve --control read-only): exec is refused")
        name = args.get("command")
        if not isinstance(name, str) or not name:
            raise InvalidArguments("exec needs 'command': the name of a registered command")
        command_args = args.get("args")
        if command_args is None:
            command_args = {}
        if not isinstance(command_args, dict):
            raise InvalidArguments("exec 'args' must be an object")
        timeout = args.get("timeout", DEFAULT_EXEC_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidArguments("exec 'timeout' must be a positive number of seconds")
        request_id = args.get("id")
        if request_id is None or isinstance(request_id, (dict, list)):
            request_id = f"control-{os.getpid()}-{next(self._exec_ids)}"
        done: Future[bytes] = Future()
        # The engine validates the name against the one registry; unknown names get its
        # own unknown_command reply. Nothing but registered handlers can run.
        self.engine.submit({"id": request_id, "command": name, "args": command_args}, done.set_result)
        try:
            reply = codec.decode(done.result(timeout))
        except FutureTimeout:
            raise ControlFailure("timeout", f"{name} did not finish within {timeout:g} s") from None
        return {"reply": public(reply)}

    def _subscribe(self, conn: socket.socket, rid: Any, args: dict[str, Any]) -> None:
        frames = args.get("frames", True) is not False
        events = args.get("lm", True) is not False
        try:
            max_string = _int_arg(args, "max_string", DEFAULT_STRING_LIMIT, 16, 100_000)
        except BridgeError as exc:
            self._send(conn, self._error(rid, exc.error_type, exc.message))
            return
        subscription = Subscription(frames, events)
        self.hub.add(subscription)
        with self._count_lock:
            self._streaming += 1
        try:
            self._send(conn, {"id": rid, "success": True, "result": {"subscribed": True, "frames": frames,
                                                                     "lm": events}, "timestamp": time.time()})
            request_times: dict[str, float] = {}
            reported_drops = 0
            while True:
                closing = self._closed.is_set()  # read first: one more pass flushes the queue
                if not closing:
                    readable, _, _ = select.select([conn], [], [], SUBSCRIPTION_POLL_SECONDS)
                    if readable and not conn.recv(4096):
                        return  # the client disconnected
                batch = []
                while subscription.queue:
                    batch.append(subscription.queue.popleft())
                if subscription.dropped > reported_drops:
                    self._send(conn, {"id": rid, "event": "dropped",
                                      "data": {"count": subscription.dropped - reported_drops},
                                      "timestamp": time.time()})
                    reported_drops = subscription.dropped
                if len(request_times) > 10_000:
                    request_times.clear()
                for kind, name, data, at in batch:
                    if kind == "frame":
                        event = {"id": rid, "event": "frame",
                                 "data": describe_frame(self.engine, name, at, data, max_string, request_times)}
                    elif name == "lm_call":
                        event = {"id": rid, "event": "lm_call", "data": describe_lm_call(data, max_string)}
                    else:
                        event = {"id": rid, "event": name, "data": cut(public(data), max_string)}
                    event["timestamp"] = time.time()
                    self._send(conn, event)
                if closing:
                    return
        finally:
            self.hub.remove(subscription)
            with self._count_lock:
                self._streaming -= 1
                self._count_lock.notify_all()

    def _refuse(self, conn: socket.socket, error_type: str, message: str) -> None:
        """Says why, then lingers briefly so the peer's first request does not hit a closed socket."""
        self._send(conn, self._error(None, error_type, message))
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1.0)
        try:
            conn.recv(4096)
        except OSError:
            pass

    @staticmethod
    def _error(rid: Any, error_type: str, message: str) -> dict[str, Any]:
        return {"id": rid, "success": False, "error": scrub_text(message), "error_type": error_type,
                "timestamp": time.time()}

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        try:
            data = codec.encode(message)
        except BridgeError as exc:
            data = codec.encode({"id": message.get("id"), "success": False, "error": exc.message,
                                 "error_type": exc.error_type, "timestamp": time.time()})
        conn.sendall(pack(data))


def _suggest(name: str, views: dict[str, ViewSpec]) -> str | None:
    import difflib

    if len(name) > 64:
        return None
    found = difflib.get_close_matches(name, [*views, "exec", "subscribe"], n=1)
    return found[0] if found else None


def start_control_server(engine: Engine, read_only: bool = False) -> Callable[[], None]:
    """Starts the control socket for a serving worker; returns the exit hook that removes it.

    A worker without a usable runtime directory still serves its port: the problem is
    logged and inspection is simply unavailable.
    """
    try:
        directory = ensure_runtime_dir()
        pid = os.getpid()
        server = ControlServer(engine, directory / f"{pid}{SOCKET_SUFFIX}", read_only=read_only,
                               discovery_path=directory / f"{pid}{DISCOVERY_SUFFIX}")
        server.start()
        server.write_discovery()
    except (ControlFailure, OSError) as exc:
        message = exc.message if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
        log.warning("control socket disabled: %s", message)
        return lambda: None
    log.info("control socket at %s%s", server.socket_path, " (read-only)" if read_only else "")
    return server.close


__all__ = ["ControlFailure", "ControlServer", "DISCOVERY_SUFFIX", "SOCKET_SUFFIX", "UnsafeRuntimeDir", "VIEWS",
           "check_private_dir", "cut", "ensure_runtime_dir", "peer_allowed", "peer_credentials", "public",
           "runtime_dir", "start_control_server"]
