"""The engine: validates requests, schedules them per session, runs handlers, builds replies.

It knows nothing of its transport. `dspex serve` feeds it frames from a port, the REPL
and replay call it in-process, tests do both. Replies leave through the `send` callback
given with each request, already encoded, so every transport gets the same bytes.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import BridgeError, InvalidRequest, ShuttingDown
from .redact import holds_known_secret, remember_environment_secrets
from .registry import REGISTRY, STREAMS, CommandSpec, Registry
from .context import Context, Inflight, OnceReply, session_of
from .catalog import build_registry
from .scheduler import SessionScheduler
from .stats import Stats
from .sessions import SessionStore
from .wire import codec, messages
from .wire.messages import RejectedRequest, describe_error, short_repr
from . import twoway
from .command_loading import BackgroundCommands
from .intake import NOT_CANCELLABLE, FrameIntake
from .lifecycle import Lifecycle
from .plain_record import PlainRecord
from .ping_reply import AnnouncingEvent, PingTemplate
from .twoway import Deferred, RequestContext, RequestOptions, request_options

if TYPE_CHECKING:
    from .adapter import Adapter

log = logging.getLogger("dspex.engine")

Send = Callable[[bytes], None]
FrameTap = Callable[[str, bytes, float], None]
Listener = Callable[[str, dict[str, Any]], None]

DEFAULT_MAX_CONCURRENCY = 64
# Requests accepted but not finished: beyond this a client gets `overloaded` replies
# instead of growing the queue without bound (pings are never queued, so health holds).
DEFAULT_MAX_QUEUED = 10_000
# Unknown command names are counted under one bucket: a client must not grow the
# counters (and get_stats) with names of its choosing.
UNKNOWN_BUCKET = "(unknown)"


class EngineConfig(PlainRecord):
    """How an engine is built (a plain record, not a dataclass: see bridge.plain_record)."""

    _fields = ("mode", "worker_id", "max_concurrency", "max_queued", "argv", "recent_frames",
               "recent_lm_calls", "background_commands")

    def __init__(self, mode: str = "standalone", worker_id: str | None = None,
                 max_concurrency: int = DEFAULT_MAX_CONCURRENCY, max_queued: int = DEFAULT_MAX_QUEUED,
                 argv: list[str] | None = None, recent_frames: int = 200, recent_lm_calls: int = 100,
                 background_commands: bool = False) -> None:
        self.mode = mode
        self.worker_id = worker_id
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.argv: list[str] = [] if argv is None else argv
        self.recent_frames = recent_frames
        self.recent_lm_calls = recent_lm_calls
        # `dspex serve`: the adapters' and plugins' commands load after the first reply
        # (bridge.command_loading); requests that need them meanwhile are held, not refused.
        self.background_commands = background_commands


class Engine(FrameIntake, twoway.TwoWayReplies, Lifecycle, BackgroundCommands):
    """Dispatches requests to registered handlers; owns sessions, stats and scheduling."""

    def __init__(self, config: EngineConfig | None = None, registry: Registry | None = None,
                 adapters: Iterable[Adapter] | None = None, executor: Executor | None = None) -> None:
        """`registry` holds extra commands (default: those plugins registered with @command);
        `adapters` the frameworks to serve (default: every known one, DSPy first). The
        engine's own registry is built from the core commands, the adapters' and these.
        `executor` runs the scheduled requests (default: a pool of `max_concurrency`
        threads); replay passes one that runs each request in the submitting thread. The
        engine shuts it down on close."""
        from .adapters import default_adapters

        self.adapters: list[Adapter] = list(adapters) if adapters is not None else default_adapters()
        self.config = config or EngineConfig()
        extra = REGISTRY if registry is None else registry
        background = self.config.background_commands
        # In the background case only the core's commands (and the jobs') are there at first.
        self.registry = build_registry([], Registry()) if background else build_registry(self.adapters, extra)
        self._start_commands(not background, lambda: build_registry(self.adapters, extra))
        self._adapters_by_name = {adapter.name: adapter for adapter in self.adapters}
        # Provider keys reach LiteLLM through the environment; they are secrets to scrub
        # even though no configure_lm ever carried them.
        remember_environment_secrets()

        self.worker_id = self.config.worker_id or f"{os.uname().nodename}-{os.getpid()}"
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.stats = Stats()
        self.sessions = SessionStore()
        self.executor: Executor = executor if executor is not None else ThreadPoolExecutor(
            max(1, self.config.max_concurrency), thread_name_prefix="dspex-request")
        self.scheduler = SessionScheduler(self.executor)  # type: ignore[arg-type]
        self._ids = itertools.count()
        self.inflight: dict[int, Inflight] = {}
        self._idle = threading.Condition()
        # Accepted requests not yet finished, started or not: a drain must wait for
        # queued ones too, which `inflight` (running only) does not show, and must be
        # able to answer each of them when it gives up (fail_unfinished).
        self._accepted: set[OnceReply] = set()
        # Observation points, all cheap when unused: frame taps (recorder), listeners
        # for events (inspect subscriptions), ring buffers for the inspect views.
        self.frame_taps: list[FrameTap] = []
        self.listeners: list[Listener] = []
        # (direction, monotonic time, payload), or a cached ping's request and reply in one
        # entry: read them through frame_log().
        self.recent_frames: deque[tuple[Any, ...]] = deque(maxlen=self.config.recent_frames)
        self.recent_lm_calls: deque[dict[str, Any]] = deque(maxlen=self.config.recent_lm_calls)
        # Replay installs this to answer LM calls from a cassette instead of the network.
        self.lm_responder: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        # Every ping reports the drain, so its start and end refresh the ping cache.
        self.ping_template = PingTemplate(self)
        self.shutting_down = AnnouncingEvent(self.ping_template.changed)
        from .jobs import JobTable  # here, not at import: engine <- jobs <- context

        self.jobs = JobTable(self)
        self.callbacks = twoway.CallbackTable(self)
        # What inspect shows of two-way frames (counted without locks: figures, not ledgers).
        self.twoway_counts = {"events_sent": 0, "cancelled": 0, "expired": 0}
        self.deadlines = twoway.DeadlineTimer(self._expire)
        self.on_shutdown: Callable[[], None] | None = None
        for adapter in self.adapters:
            adapter.bind(self)
        from .core_commands import COMMANDS as CORE

        # The core's ping, answered from the cached result while adapters' fields are
        # unchanged (bridge.ping_reply); a registry always holds the core's spec.
        self._templated_ping = CORE.find("ping")

    def adapter(self, name: str) -> Adapter:
        """The adapter of that name (KeyError when this engine has none)."""
        return self._adapters_by_name[name]

    @functools.cached_property
    def ping_field_sources(self) -> tuple[Callable[[], dict[str, Any]], ...]:
        """The `ping_fields` of the adapters that add any (the default adds nothing), in
        adapter order; the adapters are fixed when the engine is built, and pings are the
        most frequent request, so the list is found once."""
        from .adapter import Adapter

        return tuple(adapter.ping_fields for adapter in self.adapters
                     if getattr(type(adapter), "ping_fields", None) is not Adapter.ping_fields)

    def ping_fields_changed(self) -> None:
        """An adapter's ping fields changed (see Adapter.announces_ping_changes): the next
        ping asks for them again. Cheap, and safe from any thread."""
        self.ping_template.changed()

    def warm(self) -> None:
        """Lets every adapter start its warm-up (background imports)."""
        for adapter in self.adapters:
            try:
                adapter.warm()
            except Exception:  # warming is an optimisation; the first request will say what failed
                log.warning("warm-up of adapter %s failed", adapter.name, exc_info=True)

    def submit(self, request: Any, send: Send | OnceReply, *, admitted: bool = False) -> bool:
        """Validates a decoded request and runs it, at once or through the scheduler.

        `admitted`: accepted before a drain began (a request held while commands loaded,
        whose `send` is then its OnceReply, already counted as accepted). True when the
        request was scheduled: its reply channel is then freed by its run."""
        if type(request) is dict and "callback_id" in request and "command" not in request:
            self.callbacks.answer(request)  # the client answering a callback of a request
            return False
        if type(send) is not OnceReply and not self._commands_ready.is_set() and self._hold(request, send):
            return False
        try:
            parsed = messages.parse_request(request)
        except RejectedRequest as rejected:
            if rejected.answerable:
                self._reply_error(rejected.request_id, rejected.error, send)
            else:
                self._protocol_error(rejected.error)
            return False
        request_id, name, args = parsed.id, parsed.command, parsed.args
        spec = self.registry.find(name)
        self.stats.count_command(UNKNOWN_BUCKET if spec is None else spec.name)
        try:
            if spec is None:
                spec = self.registry.get(name)  # raises UnknownCommand, with a suggestion
            if spec.validated:
                spec.validate(args)
            session_id = session_of(args)
            options = request_options(request, args)
        except BridgeError as exc:
            self._reply_error(request_id, exc, send)
            return False
        if spec.scheduling == "inline":
            self._run(spec, request_id, args, session_id, send)
            return False
        if self.shutting_down.is_set() and not admitted:
            # Refused on arrival: what came before the drain began still runs.
            self._reply_error(request_id, ShuttingDown("Worker is shutting down; request not accepted"), send)
            return False
        if type(send) is OnceReply:  # held while commands loaded: accepted already
            once = send
            once.command, once.session_id = spec.name, session_id
            overloaded = False
        else:
            once = OnceReply(request_id, send, spec.name, session_id)
            with self._idle:
                overloaded = len(self._accepted) >= self.config.max_queued
                if not overloaded:
                    self._accepted.add(once)
        if overloaded:
            self._reply_error(request_id, self.overloaded_error(), send)
            return False
        if options.deadline_ms is not None:
            self.deadlines.add(once, options.deadline_ms)
        self.scheduler.schedule(session_id, spec.scheduling,
                                lambda: self._run_accepted(spec, request_id, args, session_id, once, options))
        return True

    def _run_accepted(self, spec: CommandSpec, request_id: Any, args: dict[str, Any], session_id: str,
                      once: OnceReply, options: RequestOptions) -> None:
        deferred = False
        try:
            if not once.answered:  # else cancelled or expired while it waited its turn
                deferred = self._run(spec, request_id, args, session_id, once, options)  # type: ignore[arg-type]
        finally:
            if not deferred:
                self._release(once)

    def _release(self, once: OnceReply) -> None:
        with self._idle:
            self._accepted.discard(once)
            self._idle.notify_all()

    def call(self, command: str, args: dict[str, Any] | None = None, *, request_id: Any = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Runs one command and waits for its reply (REPL, replay and tests use this)."""
        done: Future[bytes] = Future()
        rid = request_id if request_id is not None else next(self._ids) + 1
        request = messages.request(rid, command, args)
        if self.frame_taps:  # a recorder must see in-process calls as the frames they stand for
            self.submit_frame(codec.encode(request), done.set_result)
        else:
            self.submit(request, done.set_result)
        return codec.decode(done.result(timeout))

    # -- running --------------------------------------------------------------------

    def _run(self, spec: CommandSpec, request_id: Any, args: dict[str, Any], session_id: str,
             send: Send, options: RequestOptions = twoway.PLAIN) -> bool:
        """Runs a handler and sends its reply; True when the reply is deferred (a job the
        request waits for), in which case the in-flight entry and `send` outlive this call."""
        warning = None
        if spec.scheduling == "inline":
            # Inline commands (ping, get_stats) finish in microseconds on the reader thread;
            # a cancel Event and an in-flight entry would cost more than the ping itself.
            key = None
            ctx: Context = Context(self, request_id, spec.name, session_id, NOT_CANCELLABLE)
        else:
            key = next(self._ids)
            once = send if type(send) is OnceReply else None
            wants_events = options.stream and spec.has(STREAMS)
            if options.stream and not wants_events:
                warning = f"{spec.name} cannot stream; answered as if 'stream' were false"
            ctx = RequestContext(self, request_id, spec.name, session_id, once, options,  # type: ignore[arg-type]
                                 wants_events, takes_callbacks=twoway.asks_for_callbacks(args))
            entry = Inflight(request_id, spec.name, session_id, ctx.started, ctx.cancel,
                             {"phase": "running"}, threading.get_ident())
            ctx.inflight = entry
            self.inflight[key] = entry
        failure: BaseException | None = None
        try:
            result = spec.handler(args, ctx)
            if type(result) is Deferred:
                self._defer(result, request_id, send, key,
                            lambda failure: self._finished(spec.name, ctx, failure))
                key = None  # the deferred reply removes the in-flight entry
                return True
            if not isinstance(result, dict):
                raise BridgeError(f"Handler for {spec.name} returned {type(result).__name__}, not an object")
            reply = messages.reply(request_id, result)
            if warning is not None:
                reply["warning"] = warning
            try:
                data = codec.encode(reply)
            except BridgeError as exc:
                failure = exc
                self._reply_error(request_id, exc, send)
                return False
            self._send(data, send)
        except BaseException as exc:  # a handler must never take the worker down
            failure = exc
            if not isinstance(exc, Exception):
                log.warning("%s (id %s) interrupted: %s", spec.name, request_id, type(exc).__name__)
            self._reply_error(request_id, exc, send)
        finally:
            if key is not None:
                self._finished(spec.name, ctx, failure)
                self._leave_inflight(key)
        return False

    def _finished(self, command: str, ctx: Context, failure: BaseException | None) -> None:
        outcome = describe_error(failure)[0] if failure is not None else "cancelled" if ctx.cancel.is_set() else "ok"
        self.stats.count_finished(command, time.monotonic() - ctx.started, outcome)

    def _leave_inflight(self, key: int) -> None:
        del self.inflight[key]
        if not self.inflight:
            with self._idle:
                self._idle.notify_all()

    def _send(self, data: bytes, send: Send) -> None:
        if holds_known_secret(data):
            # A handler's reply quotes a configured key (an LM that echoes headers, a key
            # used as input): masked here, the one door every handled reply goes through.
            data = messages.scrubbed_reply(data)
        if type(send) is OnceReply:
            if not send.claim():  # already answered by a drain that gave up on it
                log.info("late reply to request %r dropped: it was already answered", send.request_id)
                return
            send = send.send
        now = time.monotonic()
        self.recent_frames.append(("out", now, data))
        for tap in self.frame_taps:
            tap("out", data, now)
        send(data)

    def _reply_error(self, request_id: Any, exc: BaseException, send: Send) -> None:
        """Sends an error reply. Never raises: if even the id cannot be encoded, the frame is
        logged and counted as unanswerable instead."""
        reply = messages.error_reply_for(request_id, exc)
        error_type, message = reply["error_type"], reply["error"]
        self.stats.count_error(error_type)
        if error_type == "internal_error":
            log.error("request %s failed: %s", short_repr(request_id), message)
        try:
            data = codec.encode(reply)
        except BridgeError:
            reply.pop("details", None)
            try:
                data = codec.encode(reply)
            except BridgeError:
                self._protocol_error(InvalidRequest(
                    f"Request id {short_repr(request_id)} cannot be written back; no reply sent ({message})"))
                return
        self._send(data, send)

    def _protocol_error(self, exc: BridgeError) -> None:
        """A frame that cannot be answered: logged and counted, and serving goes on."""
        self.stats.count_error(exc.error_type, protocol=True)
        log.warning("dropped frame (%s): %s", exc.error_type, exc.message)
        self.publish("protocol_error", {"error_type": exc.error_type, "error": exc.message})
