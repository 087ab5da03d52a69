"""Replaying transcripts: send the recorded requests again and compare the replies.

A transcript is replayed against a fresh in-process engine (default), any worker command
through the real framing (`worker_argv`), or a caller's own target (`submit`, the REPL's
`:replay`). LM calls are answered from the transcript's cassette unless `lm_mode="live"`,
so a replay never touches the network by default.

Ordering follows the recording: a request is sent only after every reply that preceded
it in the transcript has arrived again, and after its own session's previous request has
been answered; requests the recording had in flight together stay in flight together.

Replies are compared (compare.py) after normalising what legitimately varies between
runs (clocks, durations, memory, generated ids, worker identity) and any ignore paths.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from ..wire.codec import salvage_id
from ..record.reader import read_transcript
from ..record.transcript import TranscriptError
from .cassette import Cassette, load_cassette
from .compare import Comparer, IgnoreRules
from .requests import drop_redacted, is_barrier
from .events import CallbackAnswers, EventLog, is_callback_answer, is_event, mentions
from .inbox import Inbox
from .results import Mismatch, ReplayResult
from .targets import (CallerRunsExecutor, EngineTarget, Submit, SubmitTarget, WorkerTarget, expand_worker_argv,
                      replay_worker_env)
from .update import rewrite_transcript

if TYPE_CHECKING:
    from ..engine import Engine

DEFAULT_REPLY_TIMEOUT = 30.0
REPLAY_GC_EVERY = 50_000

class Replayer:
    """One replay of one transcript: sends its requests in the recorded order, compares replies."""

    def __init__(self, path: str, *, lm_mode: str, ignore: Iterable[str], update: bool,
                 reply_timeout: float, on_reply: Callable[[], None] | None = None) -> None:
        self.path = path
        self.lm_mode = lm_mode
        self.update = update
        self.reply_timeout = reply_timeout
        self.transcript = read_transcript(path)
        try:
            ignore = list(ignore)
            rules = IgnoreRules([*ignore, *self.transcript.ignore], watched=ignore)
        except ValueError as exc:
            raise TranscriptError(path, 1, str(exc)) from None
        self.rules = rules
        self.comparer = Comparer(rules)
        self.result = ReplayResult(path=path)
        self.inbox = Inbox(on_reply)
        self.commands: dict[Any, str | None] = {}
        self.sent: dict[Any, int] = defaultdict(int)
        self.requested: dict[Any, int] = defaultdict(int)
        self.session_last: dict[str, tuple[Any, int]] = {}
        self.deferred: dict[str, deque[tuple[bytes, Any, str | None]]] = {}
        self.target: Any = None
        self.collect_every = 0
        self.expected_seen: dict[Any, int] = defaultdict(int)
        self.compared: dict[Any, int] = defaultdict(int)
        self.pending_expected: dict[Any, deque[Any]] = defaultdict(deque)
        self.abandoned: set[tuple[Any, int]] = set()
        self.rewrites: dict[tuple[Any, int], Any] = {}
        self.rewrite_mismatches: list[Mismatch] = []
        self.new_lm_calls: list[dict[str, Any]] = []
        self.events = EventLog()
        # Only a two-way session holds callback answers: others skip the second read.
        self.callbacks = CallbackAnswers(self.transcript.replay_frames() if mentions(path, b'"callback_id"') else ())
        self.inbox.on_event = self._on_event

    def _on_event(self, frame: dict[str, Any]) -> None:
        """An event of a replayed request: kept for comparison; a callback is answered
        from the transcript at once (the request waits for it)."""
        self.events.arrived(frame)
        data = frame.get("data")
        if frame.get("event") == "callback" and isinstance(data, dict):
            self.target.send(self.callbacks.answer_for(frame.get("id"), data), None)

    # sending -------------------------------------------------------------------------

    def _arrived(self, waiting: tuple[Any, int] | None) -> bool:
        return waiting is None or self.inbox.arrived.get(waiting[0], 0) >= waiting[1] or waiting in self.abandoned

    def _dispatch(self, session: str, payload: bytes, rid: Any, command: str | None) -> None:
        self.result.requests += 1
        if rid is not None:
            self.commands[rid] = command
            count = self.sent[rid] + 1
            self.sent[rid] = count
            self.session_last[session] = (rid, count)
        self.target.send(payload, rid)

    def _pump(self) -> None:
        """Sends held-back requests whose session's previous reply has now come."""
        progress = True
        while progress and self.deferred:
            progress = False
            for session in list(self.deferred):
                queue = self.deferred[session]
                while queue and self._arrived(self.session_last.get(session)):
                    self._dispatch(session, *queue.popleft())
                    progress = True
                if not queue:
                    del self.deferred[session]

    def _wait(self, rid: Any, count: int) -> None:
        """Waits for a reply, sending held-back requests as their turn comes meanwhile."""
        inbox = self.inbox
        if inbox.arrived.get(rid, 0) >= count or (rid, count) in self.abandoned:
            return
        deadline = time.monotonic() + self.reply_timeout
        while True:
            seen = inbox.total
            self._pump()
            if inbox.arrived.get(rid, 0) >= count:
                return
            if inbox.dead is not None or time.monotonic() >= deadline:
                break
            inbox.wait_for_any(seen, deadline)
        self.abandoned.add((rid, count))
        reason = inbox.dead or f"no reply within {self.reply_timeout:g} s"
        self.result.mismatches.append(Mismatch(rid, self.commands.get(rid), "", "a reply", reason, "no_reply"))

    def _drain_deferred(self) -> None:
        while self.deferred:
            session = next(iter(self.deferred))
            waiting = self.session_last.get(session)
            if waiting is not None:
                self._wait(*waiting)
            self._pump()

    def run(self, target: Any, cassette: Cassette | None) -> ReplayResult:
        result = self.result
        self.target = target
        started = time.perf_counter()
        must_arrive: list[tuple[Any, int]] = []
        session_last = self.session_last
        deferred = self.deferred
        live = self.lm_mode == "live"
        comparer = self.comparer
        arrived = self.inbox.arrived
        requested = self.requested
        expected_seen = self.expected_seen
        pending_expected = self.pending_expected
        frames = 0
        try:
            collect_every = self.collect_every
            for direction, frame, raw, _line, frame_bytes in self.transcript.replay_frames():
                frames += 1
                if collect_every and frames % collect_every == 0:
                    gc.collect(1)
                if direction == "out":
                    if is_event(frame):
                        self.events.expect(frame)
                        continue
                    rid = frame.get("id") if type(frame) is dict else None
                    if rid is None or type(rid) in (dict, list):
                        continue
                    seen = expected_seen[rid]
                    if requested.get(rid, 0) <= seen:
                        continue  # a reply whose request is not in the transcript: nothing to resend
                    seen += 1
                    expected_seen[rid] = seen
                    pending_expected[rid].append(frame)
                    if arrived.get(rid, 0) >= seen:
                        self._compare_ready(rid)
                    else:
                        must_arrive.append((rid, seen))
                    continue
                if is_callback_answer(frame):
                    continue  # answered from the transcript when the replayed worker asks (events.py)
                # A request: first everything the recording saw answered before it.
                if must_arrive:
                    for rid, count in must_arrive:
                        self._wait(rid, count)
                        self._compare_ready(rid)
                    must_arrive.clear()
                if raw is None:
                    if type(frame) is dict:
                        rid = frame.get("id")
                        if rid is None or type(rid) in (dict, list):
                            rid = None
                        command = frame.get("command")
                        if type(command) is not str:
                            command = None
                        args = frame.get("args")
                        session = args.get("session_id") if type(args) is dict else None
                        if session is None or session == "":
                            session = "anonymous"
                        elif type(session) is not str:
                            session = str(session)
                    else:
                        rid = command = None
                        session = "anonymous"
                    if live:
                        frame = drop_redacted(frame)
                        frame_bytes = None
                    if comparer.aliases:
                        frame = comparer.rewrite(frame)
                        frame_bytes = None
                    payload = frame_bytes if frame_bytes is not None else orjson.dumps(frame)
                else:
                    session = "anonymous"
                    payload = raw
                    rid = salvage_id(payload)
                    command = None
                if rid is not None:
                    requested[rid] += 1
                if deferred:
                    self._pump()
                    if deferred and is_barrier(command):
                        self._drain_deferred()  # a worker-wide command must see every earlier one
                if session in deferred or not self._arrived(session_last.get(session)):
                    # One session's requests go strictly in order; other sessions carry on.
                    deferred.setdefault(session, deque()).append((payload, rid, command))
                else:
                    self._dispatch(session, payload, rid, command)
            for rid, count in must_arrive:
                self._wait(rid, count)
            self._drain_deferred()
            # Replies still owed (recorded after the last request) come back now.
            for rid, queue in list(pending_expected.items()):
                if queue:
                    self._wait(rid, expected_seen[rid])
                    self._compare_ready(rid)
            result.mismatches.extend(self.events.mismatches(self.commands))
            result.mismatches.extend(Mismatch(miss["request_id"], self.commands.get(miss["request_id"]),
                                              f"callback {miss['kind']} {miss['name']}", "a recorded answer",
                                              miss["args"], "callback_miss") for miss in self.callbacks.unknown)
        finally:
            result.frames = frames
            target.close()
            result.duration_s = time.perf_counter() - started
        result.torn = self.transcript.torn
        if cassette is not None:
            result.lm_calls_served = cassette.served
            seen_misses: set[tuple[str, str, str]] = set()
            for miss in cassette.misses:  # DSPy retries a failed call with another adapter
                signature = (miss.path, repr(miss.expected), repr(miss.actual))
                if signature not in seen_misses:
                    seen_misses.add(signature)
                    result.mismatches.append(miss)
        return result

    def _compare_ready(self, rid: Any) -> None:
        expected_queue = self.pending_expected.get(rid)
        replies = self.inbox.replies.get(rid)
        while expected_queue and replies:
            expected = expected_queue.popleft()
            actual = replies.popleft()
            self.compared[rid] += 1
            occurrence = self.compared[rid]
            self.result.replies_compared += 1
            if type(actual) is bytes:
                try:
                    actual = orjson.loads(actual)
                except orjson.JSONDecodeError:
                    actual = {"undecodable_reply": actual.decode("utf-8", "replace")}
            command = self.commands.get(rid)
            if self.rules.watching:
                self.rules.note_reply(command, expected)
                self.rules.note_reply(command, actual)
            differences = self.comparer.compare(expected, actual, command)
            if differences:
                found = [Mismatch(rid, command, path, want, got, kind) for path, want, got, kind in differences]
                self.result.mismatches.extend(found)
                if self.update:
                    self.rewrites[(rid, occurrence)] = self.comparer.merged(expected, actual, command)
                    self.rewrite_mismatches.extend(found)

    def rewrite_file(self) -> bool:
        """`--update`: writes this replay's replies into the transcript; moves what was
        rewritten from `mismatches` to `updates`. Returns whether the file changed."""
        if not rewrite_transcript(self.path, self.rewrites, self.new_lm_calls):
            return False
        rewritten = {id(m) for m in self.rewrite_mismatches}
        self.result.updates = list(self.rewrite_mismatches)
        self.result.mismatches = [m for m in self.result.mismatches if id(m) not in rewritten]
        self.result.lm_calls_rerecorded = len(self.new_lm_calls)
        self.result.updated = True
        return True


def replay_transcript(path: str, *, submit: Submit | Engine | None = None, worker_argv: list[str] | None = None,
                      lm_mode: str = "cassette", ignore: Iterable[str] = (), update: bool = False,
                      reply_timeout: float = DEFAULT_REPLY_TIMEOUT, worker_env: dict[str, str] | None = None,
                      threads: bool = False, on_reply: Callable[[], None] | None = None) -> ReplayResult:
    """Replays one transcript and compares every reply with the recorded one.

    Target: `worker_argv` (a worker command, through the real framing; `{args}` stands
    for the recorded worker's arguments), `submit` (an Engine, or a callable taking
    (payload, send) like Engine.submit_frame), or by default a fresh in-process engine
    with the recorded mode and worker id. That engine runs each request in the replaying
    thread when LM calls come from the cassette (deterministic and fast); `threads=True`
    keeps its thread pool, as `lm_mode="live"` always does. With `update`, the
    transcript's recorded replies are rewritten with the ones seen now. `on_reply` is
    called once per reply as it comes back (a progress counter).

    Raises TranscriptError for a transcript that cannot be read (the caller maps it to
    exit code 3), WorkerStartFailed for a worker command that does not start; every
    other outcome is in the returned ReplayResult.
    """
    if lm_mode not in ("cassette", "live"):
        raise ValueError(f"lm_mode must be 'cassette' or 'live', not {lm_mode!r}")
    path = str(path)
    replayer = Replayer(path, lm_mode=lm_mode, ignore=ignore, update=update, reply_timeout=reply_timeout,
                        on_reply=on_reply)
    header = replayer.transcript.header
    cassette = load_cassette(path) if lm_mode == "cassette" else None
    inbox = replayer.inbox
    from ..engine import Engine as EngineClass
    from ..engine import EngineConfig

    restore: Callable[[], None] | None = None
    target: EngineTarget | SubmitTarget | WorkerTarget
    if worker_argv is not None:
        env = replay_worker_env(worker_env, path if lm_mode == "cassette" else None)
        target = WorkerTarget(expand_worker_argv(worker_argv, header), inbox, env)
        replayer.result.target = "worker"
    elif isinstance(submit, EngineClass):
        engine = submit
        previous = engine.lm_responder
        if cassette is not None:
            engine.lm_responder = cassette.respond

        def restore() -> None:
            engine.lm_responder = previous

        target = EngineTarget(engine, inbox, owned=False)
        replayer.result.target = "submit"
    elif submit is not None:
        target = SubmitTarget(submit, inbox)
        replayer.result.target = "submit"
    else:
        worker_id = header.get("worker_id")
        # Cassette answers come at once: requests run in this thread as the scheduler
        # releases them (deterministic, no thread switches).
        in_caller = cassette is not None and not threads
        engine = EngineClass(EngineConfig(mode=str(header.get("mode") or "standalone"),
                                          worker_id=str(worker_id) if worker_id else None,
                                          argv=[str(a) for a in header.get("argv") or []]),
                             executor=CallerRunsExecutor() if in_caller else None)
        if cassette is not None:
            engine.lm_responder = cassette.respond
        elif update:
            engine.listeners.append(lambda kind, data: replayer.new_lm_calls.append(data)
                                    if kind == "lm_call" else None)
        target = EngineTarget(engine, inbox, owned=True)
    # The cyclic collector rescans the whole heap (DSPy's included) many times during a
    # replay that allocates this much, costing about a fifth of its time: it is paused for
    # an in-process replay, which collects its young garbage every REPLAY_GC_EVERY frames.
    pause_gc = isinstance(target, EngineTarget) and target.owned and gc.isenabled()
    if pause_gc:
        gc.disable()
        replayer.collect_every = REPLAY_GC_EVERY
    try:
        result = replayer.run(target, cassette)
    finally:
        if pause_gc:
            gc.enable()
        if restore is not None:
            restore()
    result.ignore_matched = list(replayer.rules.matched)
    if update:
        replayer.rewrite_file()
    return result


__all__ = ["DEFAULT_REPLY_TIMEOUT", "Replayer", "drop_redacted", "replay_transcript"]
