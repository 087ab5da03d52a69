"""The engine's frame intake: one raw frame in, decoded, and the inline commands (ping,
get_stats) answered on the spot; everything else goes on to `Engine.submit`.

This is the hot path of a worker (every health ping passes here), so the module binds
what it calls once, and `submit_frame` is one function on purpose (see its comment).
A mixin of `bridge.engine.Engine`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from orjson import JSONDecodeError

from .context import MAX_SESSION_ID, Context, session_of
from .errors import BridgeError
from .registry import CommandSpec
from .sessions import ANONYMOUS
from .wire import codec
from .wire.messages import describe_error

log = logging.getLogger("dspex.engine")

Send = Callable[[bytes], None]

# Handed to inline commands, which run to completion at once and are never cancelled.
NOT_CANCELLABLE = threading.Event()
# Bound once: the inline path runs for every health ping.
_loads = orjson.loads
_dumps = orjson.dumps
_monotonic = time.monotonic
_time = time.time
_PLAIN_IDS = (int, str)
# Marks an entry of `recent_frames` that holds a request and its reply (a cached ping's):
# one append instead of two on the ping path. `frame_log` expands it.
EXCHANGE = "in+out"


class FrameIntake:
    """Decoding a frame and the inline fast path (see Engine)."""

    # What the engine provides (declared for readers and type checkers).
    recent_frames: Any
    frame_taps: list[Any]
    stats: Any
    ping_template: Any
    started: float
    _templated_ping: Any
    submit: Callable[[Any, Send], None]
    _reply_error: Callable[..., None]
    _protocol_error: Callable[..., None]

    @property
    def registry(self) -> Any:
        """The commands this engine serves (a `Registry`)."""
        return self._registry

    @registry.setter
    def registry(self, registry: Any) -> None:
        # The inline commands' table is bound here, where the registry is replaced (at the
        # engine's start, and when the adapters' commands have loaded): the ping path then
        # reads one attribute instead of two. `Registry.add` keeps the table up to date in place.
        self._registry = registry
        self._inline_commands = registry.fast_inline

    def submit_frame(self, payload: bytes, send: Send, inline_send: Send | None = None) -> None:
        """Takes one raw frame payload; every outcome ends in a reply or a counted log line.

        `inline_send`, when given, takes the replies of inline commands (ping, get_stats),
        which are made before this call returns: a reader working through a burst of frames
        hands its batch's `append` here, so those replies skip the thread check `send`
        needs for replies that may come later from other threads.

        Never raises: it runs on the reader thread, and an exception there would end the
        worker for every client because of one frame.
        """
        # One function for the whole decode-and-dispatch step, the inline reply included:
        # a health ping arrives alone and finds the interpreter's caches cold, so each
        # Python call layer it passes costs several times what a warm loop shows. For the
        # same reason a cached ping is recorded once, request and reply together, at its end;
        # every other path records its request before anything can reply to it.
        recorded = False  # whether the request is in recent_frames (see the last handler)
        try:
            now = _monotonic()
            taps = self.frame_taps
            if taps:
                for tap in taps:
                    tap("in", payload, now)
            try:
                request = _loads(payload)
            except JSONDecodeError:
                self.recent_frames.append(("in", now, payload))
                recorded = True
                self._undecodable(payload, send)
                return
            if type(request) is dict:
                command = request.get("command")
                request_id = request.get("id")
                if type(request_id) is float:  # an integer beyond 64 bits, read as a float by orjson
                    request = codec.decode_exact(payload, request)
                    request_id = request.get("id")
                try:
                    spec = self._inline_commands.get(command)
                except TypeError:  # a list or an object as command: validation will say so
                    spec = None
                if spec is not None:
                    args = request.get("args")
                    if type(request_id) in _PLAIN_IDS and (args is None or type(args) is dict):
                        if spec is self._templated_ping and (args is None or args.get("session_id") is None):
                            # The ping from its cached result (bridge.ping_reply), written out
                            # here rather than in a helper: no Python call on this path.
                            cached = self.ping_template.result
                            if cached is None:
                                cached = self.ping_template.build()
                            if cached:
                                try:
                                    # One orjson call writes the three values; floats hold no
                                    # comma, so two splits cut them whatever the id is.
                                    timestamp, uptime, written_id = _dumps(
                                        (_time(), now - self.started, request_id))[1:-1].split(b",", 2)
                                except TypeError:  # an id orjson cannot write: beyond 64 bits, lone surrogates
                                    cached = None
                            if cached:
                                head, tail = cached
                                data = b"".join((b'{"id":', written_id, head, timestamp, b',"uptime":', uptime,
                                                 tail, timestamp, b"}"))
                                self.stats.pings += 1  # counted apart (Stats.pings says why)
                                # Request and reply in one entry (see frame_log).
                                self.recent_frames.append((EXCHANGE, now, payload, data))
                                if taps:
                                    for tap in taps:
                                        tap("out", data, now)
                                (inline_send or send)(data)
                                return
                        self.recent_frames.append(("in", now, payload))
                        recorded = True
                        self._run_inline(spec, request_id, args or {}, inline_send or send)
                        return
            self.recent_frames.append(("in", now, payload))
            recorded = True
            self.submit(request, send)
        except BaseException as exc:  # the last line of defence; each path above has its own
            if not isinstance(exc, Exception):
                raise
            if not recorded:  # the frame that failed belongs in inspect's view of recent frames
                self.recent_frames.append(("in", _monotonic(), payload))
            self.stats.count_error("internal_error", protocol=True)
            log.error("frame of %d bytes could not be handled: %s", len(payload), describe_error(exc)[1])

    def frame_log(self) -> list[tuple[str, float, bytes]]:
        """The recent frames in and out as (direction, monotonic time, payload), oldest
        first: a cached ping's request and reply, kept as one entry, become two here."""
        frames: list[tuple[str, float, bytes]] = []
        for entry in list(self.recent_frames):
            if entry[0] == EXCHANGE:
                frames.append(("in", entry[1], entry[2]))
                frames.append(("out", entry[1], entry[3]))
            else:
                frames.append(entry)
        return frames

    def _undecodable(self, payload: bytes, send: Send) -> None:
        try:
            codec.decode(payload)  # for the precise error: not UTF-8, or not JSON
        except BridgeError as exc:
            salvaged = codec.salvage_id(payload)
            if salvaged is None:
                # JSON whose numbers orjson cannot hold (1e999): its id, of any type, is
                # still readable by the standard library, and the client gets its answer.
                salvaged = codec.id_of_out_of_range_json(payload)
            if salvaged is None:
                self._protocol_error(exc)
            else:
                self._reply_error(salvaged, exc, send)

    def _run_inline(self, spec: CommandSpec, request_id: Any, args: dict[str, Any], send: Send) -> None:
        """The short path of an unvalidated inline command (ping): no scheduling, no bookkeeping
        beyond the counters; errors still become replies."""
        name = spec.name
        self.stats.count_command(name)
        try:
            session_id = args.get("session_id")
            if session_id is None:
                session_id = ANONYMOUS
            elif type(session_id) is not str or not 0 < len(session_id) <= MAX_SESSION_ID:
                session_id = session_of(args)  # the rules and their errors, for anything unusual
            result = spec.handler(args, Context(self, request_id, name, session_id, NOT_CANCELLABLE))
            if not isinstance(result, dict):
                raise BridgeError(f"Handler for {spec.name} returned {type(result).__name__}, not an object")
        except BaseException as exc:  # a handler must never take the worker down
            self._reply_error(request_id, exc, send)
            return
        reply = {"id": request_id, "success": True, "result": result, "timestamp": _time()}
        try:
            # Without options: OPT_NON_STR_KEYS alone costs a third of this call, and
            # results with non-string keys are rare enough to take the careful encoder.
            data = _dumps(reply)
        except TypeError:
            try:  # the careful encoder: non-string keys, integers beyond 64 bits kept exact
                data = codec.encode(reply)
            except BridgeError as exc:
                self._reply_error(request_id, exc, send)
                return
        now = _monotonic()
        self.recent_frames.append(("out", now, data))
        for tap in self.frame_taps:
            tap("out", data, now)
        send(data)
