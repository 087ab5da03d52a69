"""The control socket: a live worker's state for `dspex inspect` and `dspex repl --attach`.

Every `dspex serve` (unless `--control off`) listens on a Unix socket in a private
runtime directory (see `security`) and writes a discovery file beside it. The socket
speaks the port's framing and the wire's messages. It is served on threads of its own
and reads engine state by copying it (deques, dicts) without holding engine locks, so
inspection never delays a request.

What it answers is its `ViewRegistry` (the core's read-only views, the adapters', then
`subscribe` and `exec`); `exec` runs a command of the one engine registry exactly as if
it had come through the port, and nothing else is ever executed. Every value leaving
the socket goes through `public()`, so no secret can be returned.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError, InvalidArguments, UnknownCommand
from ..redact import scrub_text
from ..wire import codec, messages
from ..wire.framing import FrameReader, Oversized, pack
from ..wire.messages import RejectedRequest
from .incident import cancel_request
from .present import DEFAULT_STRING_LIMIT, cut, describe_frame, describe_lm_call, int_arg, public
from .security import (DISCOVERY_SUFFIX, MAX_SOCKET_PATH, SOCKET_SUFFIX, ControlFailure, ensure_runtime_dir,
                       peer_allowed, peer_credentials)
from .streams import RateSampler, Subscription, SubscriptionHub
from .views import CORE_VIEWS, ViewRegistry, adapter_view

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("dspex.control")

DISCOVERY_FORMAT = "dspex-control/1"
# Control frames are small requests; a larger one is a confused or hostile peer.
MAX_CONTROL_FRAME = 1 << 20
MAX_CONNECTIONS = 32
# How often a subscription forwards what the taps queued (and notices a gone client).
SUBSCRIPTION_POLL_SECONDS = 0.05
SUBSCRIPTION_FLUSH_SECONDS = 0.5
DEFAULT_EXEC_TIMEOUT = 600.0


def build_views(engine: Engine) -> ViewRegistry:
    """A server's views: the core's, then each adapter's (DSPy: programs), then the
    socket's own `subscribe` (a stream that owns the connection) and `exec`."""
    views = ViewRegistry()
    for spec in CORE_VIEWS.in_order():
        views.add(spec)
    for adapter in engine.adapters:
        for name, (summary, handler) in adapter.views().items():
            views.add_view(name, summary, adapter_view(handler))
    views.add_view("cancel", "end a queued or running request: its caller gets error_type cancelled "
                             "(args request_id, reason; refused when read-only)",
                   _cancel, read_only=False)
    views.add_view("subscribe", "stream frames and LM calls as they happen, until the client disconnects",
                   _streamed_by_the_connection, stream=True)
    views.add_view("exec", "run a registered engine command in this worker (refused when read-only)",
                   lambda args, server: server.exec_command(args), read_only=False)
    return views


def _cancel(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    given = args.get("request_id")
    if given is None or isinstance(given, (dict, list, bool)):
        raise InvalidArguments("cancel needs 'request_id': the id of a queued or running request")
    reason = args.get("reason")
    reason = reason if isinstance(reason, str) and reason else "cancelled from the control socket"
    result = cancel_request(server.engine, given, reason[:200])
    log.warning("request %r cancelled through the control socket", result["request_id"])
    return public(result)


def _streamed_by_the_connection(args: dict[str, Any], server: ControlServer) -> dict[str, Any]:
    raise ControlFailure("invalid_request", "subscribe is answered as a stream by the connection")


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
        self.views = build_views(engine)
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
        if len(os.fsencode(path)) + len(".new") > MAX_SOCKET_PATH:  # the staging name is bound first
            raise ControlFailure("path_too_long", f"control socket path is too long for a Unix socket: {path}")
        try:
            os.unlink(path)  # a leftover of a dead worker that had our pid
        except FileNotFoundError:
            pass
        # Bound and listening under a temporary name, then renamed into place: a client that
        # sees the socket's name can always connect (between bind and listen it would be
        # refused, and take a live worker's socket for a stale one).
        staging = f"{path}.new"
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(staging)
        # The directory is already 0700, so nobody can reach the socket before this chmod.
        os.chmod(staging, 0o600)
        listener.listen(16)
        os.replace(staging, path)
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
        from .. import __version__

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
                try:
                    request = self._parse(frame)
                except RejectedRequest as rejected:
                    self._send(conn, self._error(rejected.request_id, rejected.error.error_type,
                                                 rejected.error.message))
                    continue
                spec = self.views.find(request.command)
                if spec is not None and spec.extra.get("stream"):
                    self._subscribe(conn, request.id, request.args)
                    return  # a subscription owns the connection until the client leaves
                self._send(conn, self._answer(request, spec))

    @staticmethod
    def _parse(frame: bytes) -> messages.Request:
        """The request in a frame, checked by the wire's one set of rules; ids are echoed
        as they came (a control peer without ids still gets its answers)."""
        try:
            decoded = codec.decode(frame)
        except BridgeError as exc:
            raise RejectedRequest(exc, codec.salvage_id(frame)) from None
        if type(decoded) is dict and type(decoded.get("id")) is float:  # beyond 64 bits: read exactly
            decoded = codec.decode_exact(frame, decoded)
        return messages.parse_request(decoded, require_id=False)

    def _answer(self, request: messages.Request, spec: Any) -> dict[str, Any]:
        rid, name, args = request.id, request.command, request.args
        try:
            if spec is None:
                raise UnknownCommand(name, self.views.suggest(name))
            if self.read_only and not spec.read_only:
                raise ControlFailure("read_only", "this worker's control socket is read-only "
                                                  f"(dspex serve --control read-only): {name} is refused")
            return messages.reply(rid, spec.handler(args, self))
        except BridgeError as exc:
            return self._error(rid, exc.error_type, exc.message, public(exc.details) if exc.details else None)
        except Exception as exc:  # a view must never take the connection down silently
            log.exception("control command %s failed", name)
            return self._error(rid, "internal_error", f"{type(exc).__name__}: {exc}")

    def exec_command(self, args: dict[str, Any]) -> dict[str, Any]:
        """The `exec` view: one command of the engine's registry, run as if from the port."""
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
        self.engine.submit(messages.request(request_id, name, command_args), done.set_result)
        try:
            reply = codec.decode(done.result(timeout))
        except FutureTimeout:
            raise ControlFailure("timeout", f"{name} did not finish within {timeout:g} s") from None
        return {"reply": public(reply)}

    def _subscribe(self, conn: socket.socket, rid: Any, args: dict[str, Any]) -> None:
        frames = args.get("frames", True) is not False
        events = args.get("lm", True) is not False
        try:
            max_string = int_arg(args, "max_string", DEFAULT_STRING_LIMIT, 16, 100_000)
        except BridgeError as exc:
            self._send(conn, self._error(rid, exc.error_type, exc.message))
            return
        subscription = Subscription(frames, events)
        self.hub.add(subscription)
        with self._count_lock:
            self._streaming += 1
        try:
            self._send(conn, messages.reply(rid, {"subscribed": True, "frames": frames, "lm": events}))
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
                    self._send(conn, messages.event(rid, "dropped",
                                                    {"count": subscription.dropped - reported_drops}))
                    reported_drops = subscription.dropped
                if len(request_times) > 10_000:
                    request_times.clear()
                for kind, name, data, at in batch:
                    if kind == "frame":
                        shown = describe_frame(self.engine, name, at, data, max_string, request_times)
                        self._send(conn, messages.event(rid, "frame", shown))
                    elif name == "lm_call":
                        self._send(conn, messages.event(rid, "lm_call", describe_lm_call(data, max_string)))
                    else:
                        self._send(conn, messages.event(rid, name, cut(public(data), max_string)))
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
    def _error(rid: Any, error_type: str, message: str, details: Any = None) -> dict[str, Any]:
        return messages.error_reply(rid, error_type, scrub_text(message), details)

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        conn.sendall(pack(messages.encode_or_error(message)))


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



__all__ = ["ControlServer", "build_views", "start_control_server"]
