"""Replaying transcripts: send the recorded requests again and compare the replies.

A transcript is replayed against a fresh in-process engine (default), any worker command
through the real framing (`worker_argv`), or a caller's own target (`submit`, the REPL's
`:replay`). LM calls are answered from the transcript's cassette unless `lm_mode="live"`,
so a replay never touches the network by default.

Ordering follows the recording: a request is sent only after every reply that preceded
it in the transcript has arrived again, and after its own session's previous request has
been answered; requests the recording had in flight together stay in flight together.

Replies are compared after normalising what legitimately varies between runs (clocks,
durations, memory, generated ids, worker identity) and any ignore paths.
"""

from __future__ import annotations

import difflib
import functools
import gc
import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .wire.codec import salvage_id
from .redact import REDACTED, redact, scrub_text
from .replay_compare import (VARYING_KEYS, Comparer, IgnoreRules, format_path, parse_ignore_path,
                             reply_id)
from .record.transcript import TranscriptError, request_key
from .record.reader import read_transcript

log = logging.getLogger("dspex.replay")

if TYPE_CHECKING:
    from .engine import Engine

# Env var a worker reads to answer LM calls from a cassette (set by `--worker` replays).
CASSETTE_ENV = "DSPEX_REPLAY_CASSETTE"
DEFAULT_REPLY_TIMEOUT = 30.0
REPLAY_GC_EVERY = 50_000

@dataclass
class Mismatch:
    """One difference between a recorded and a replayed reply (or a missing LM answer).

    `kind`: "value" (differs), "missing" (recorded key absent now), "extra" (new key),
    "no_reply" (no reply came), "lm_miss" (an LM call the cassette cannot answer).
    """

    request_id: Any
    command: str | None
    path: str
    expected: Any
    actual: Any
    kind: str = "value"

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "command": self.command, "path": self.path,
                "expected": self.expected, "actual": self.actual, "kind": self.kind}


@dataclass
class ReplayResult:
    """What replaying one transcript found."""

    path: str
    mismatches: list[Mismatch] = field(default_factory=list)
    frames: int = 0
    requests: int = 0
    replies_compared: int = 0
    lm_calls_served: int = 0
    duration_s: float = 0.0
    error: str | None = None
    torn: bool = False
    updated: bool = False
    target: str = "in-process"
    # With update: the differences written into the file (empty when nothing changed).
    updates: list[Mismatch] = field(default_factory=list)
    lm_calls_rerecorded: int = 0
    # The caller's ignore paths that named something in at least one reply.
    ignore_matched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "pass" if not self.mismatches else "fail"

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "ok": self.ok, "frames": self.frames,
                "requests": self.requests, "replies_compared": self.replies_compared,
                "lm_calls_served": self.lm_calls_served, "duration_s": round(self.duration_s, 6),
                "error": self.error, "torn": self.torn, "updated": self.updated, "target": self.target,
                "mismatches": [m.to_dict() for m in self.mismatches],
                "updates": [m.to_dict() for m in self.updates], "lm_calls_rerecorded": self.lm_calls_rerecorded,
                "ignore_matched": list(self.ignore_matched)}


# -- the cassette -----------------------------------------------------------------------


class CassetteMiss(RuntimeError):
    """An LM call the cassette has no answer for; the message says what differs."""

    error_type = "lm_cassette_miss"


def _first_differences(expected: Any, actual: Any, path: tuple[Any, ...] = (), limit: int = 3
                       ) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []

    def walk(e: Any, a: Any, p: tuple[Any, ...]) -> None:
        if len(out) >= limit or e == a:
            return
        if isinstance(e, dict) and isinstance(a, dict):
            for key in list(e) + [k for k in a if k not in e]:
                walk(e.get(key), a.get(key), (*p, key))
            return
        if isinstance(e, list) and isinstance(a, list) and len(e) == len(a):
            for index, (x, y) in enumerate(zip(e, a)):
                walk(x, y, (*p, index))
            return
        out.append((format_path(p) or "(request)", e, a))

    walk(expected, actual, path)
    return out


def _preview(value: Any, width: int = 120) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[:width - 1] + "…"


def _focus(expected: str, actual: str, width: int = 100) -> tuple[str, str]:
    """The region around the first differing character of two long strings."""
    matcher = difflib.SequenceMatcher(None, expected, actual, autojunk=False)
    for tag, i1, _i2, j1, _j2 in matcher.get_opcodes():
        if tag != "equal":
            start_e, start_a = max(0, i1 - 30), max(0, j1 - 30)
            return (("…" if start_e else "") + expected[start_e:start_e + width],
                    ("…" if start_a else "") + actual[start_a:start_a + width])
    return expected[:width], actual[:width]


class Cassette:
    """Recorded LM answers by request key; repeated requests get their answers in order."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[dict[str, Any]]] = {}
        self._served: dict[str, int] = defaultdict(int)
        self.entries: list[dict[str, Any]] = []
        self.misses: list[Mismatch] = []
        self.served = 0
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        response = record.get("response")
        if not isinstance(response, dict):
            return  # a recorded failure has no answer to give
        self.entries.append(record)
        keys = {record.get("key")}
        request = record.get("request")
        if isinstance(request, dict):
            # Recorded requests are redacted; a replayed request carries the redacted
            # inputs, so it is found by the key of its redacted form too.
            keys.add(request_key(request))
        for key in keys:
            if isinstance(key, str):
                self._by_key.setdefault(key, []).append(response)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, request: dict[str, Any]) -> dict[str, Any] | None:
        for key in (request_key(request), request_key(redact(request))):
            answers = self._by_key.get(key)
            if answers:
                with self._lock:
                    index = self._served[key]
                    self._served[key] = index + 1
                    self.served += 1
                return answers[min(index, len(answers) - 1)]
        return None

    def respond(self, request: dict[str, Any]) -> dict[str, Any]:
        """engine.lm_responder: the recorded answer, or CassetteMiss naming the closest call."""
        answer = self.lookup(request)
        if answer is not None:
            return answer
        miss = self.describe_miss(request)
        with self._lock:
            self.misses.append(miss)
        raise CassetteMiss(f"no recorded LM response for this request: {miss.path}: "
                           f"recorded {_preview(miss.expected)!s} but now {_preview(miss.actual)!s}")

    def closest(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if not self.entries:
            return None
        wanted = orjson.dumps(redact(request), option=orjson.OPT_SORT_KEYS).decode()
        best, best_score = None, -1.0
        for record in self.entries:
            recorded = record.get("request") or {}
            score = 1.0 if recorded.get("model") == request.get("model") else 0.0
            text = orjson.dumps(recorded, option=orjson.OPT_SORT_KEYS).decode()
            score += difflib.SequenceMatcher(None, wanted, text, autojunk=False).quick_ratio()
            if score > best_score:
                best, best_score = record, score
        return best

    def describe_miss(self, request: dict[str, Any]) -> Mismatch:
        closest = self.closest(request)
        if closest is None:
            return Mismatch(None, "lm_call", "lm_call", None, _preview(redact(request).get("messages")),
                            "lm_miss")
        differences = _first_differences(closest.get("request") or {}, redact(request))
        path, expected, actual = differences[0] if differences else ("(request)", None, None)
        if isinstance(expected, str) and isinstance(actual, str):
            expected, actual = _focus(expected, actual)
        return Mismatch(closest.get("request_id"), "lm_call", f"lm_call.request.{path}",
                        expected, actual, "lm_miss")


def load_cassette(path: str) -> Cassette:
    """The cassette of a transcript (one streaming pass over its lm_call lines)."""
    cassette = Cassette()
    for entry in read_transcript(path).lm_calls():
        cassette.add(entry.record)
    return cassette


def install_cassette(engine: Engine, path: str) -> Cassette:
    """Makes `engine` answer every LM call from the cassette in `path` (worker side of --worker)."""
    cassette = load_cassette(path)
    engine.lm_responder = cassette.respond
    return cassette


# -- targets ----------------------------------------------------------------------------

Submit = Callable[[bytes, Callable[[bytes], None]], None]


class _Inbox:
    """Replies as they come back, counted per request id, from any thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.arrived: dict[Any, int] = defaultdict(int)
        self.replies: dict[Any, deque[Any]] = defaultdict(deque)
        self.dead: str | None = None
        self.total = 0

    def _store(self, rid: Any, reply: Any) -> None:
        self.replies[rid].append(reply)
        self.arrived[rid] += 1
        self.total += 1

    def deliver(self, reply: Any) -> None:
        rid = reply.get("id") if isinstance(reply, dict) else None
        if isinstance(rid, (dict, list)):
            rid = None
        with self.cond:
            self._store(rid, reply)
            self.cond.notify_all()

    def deliver_now(self, payload: bytes) -> None:
        """deliver_bytes for replies sent from the replaying thread itself: nobody can be
        waiting for them, so no lock or wake-up is needed. Replies stay bytes until a
        comparison needs them decoded."""
        self._store(reply_id(payload), payload)

    def deliver_bytes(self, payload: bytes) -> None:
        rid = reply_id(payload)
        with self.cond:
            self._store(rid, payload)
            self.cond.notify_all()

    def gone(self, reason: str) -> None:
        with self.cond:
            self.dead = reason
            self.cond.notify_all()

    def wait_for_any(self, seen_total: int, deadline: float) -> None:
        """Sleeps until a reply arrives after `seen_total` had, the deadline, or the target dies."""
        with self.cond:
            while self.total == seen_total and self.dead is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(min(remaining, 0.25))


class CallerRunsExecutor:
    """Runs each task at once in the submitting thread.

    A cassette answers LM calls instantly, so threads buy a replay nothing but thread
    switches and run-to-run differences; running each request when the scheduler
    releases it keeps the engine's session ordering and makes replays deterministic.
    """

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        fn(*args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def run_requests_in_caller(engine: Engine) -> None:
    """Switches an idle engine to CallerRunsExecutor (before it has served anything)."""
    from .engine import SessionScheduler

    engine.executor.shutdown(wait=False)
    engine.executor = CallerRunsExecutor()  # type: ignore[assignment]
    engine.scheduler = SessionScheduler(engine.executor)  # type: ignore[arg-type]


class _EngineTarget:
    def __init__(self, engine: Engine, inbox: _Inbox, owned: bool) -> None:
        self.engine = engine
        self.inbox = inbox
        self.owned = owned
        synchronous = isinstance(engine.executor, CallerRunsExecutor)
        self._deliver = inbox.deliver_now if synchronous else inbox.deliver_bytes
        self._submit = engine.submit_frame

    def send(self, payload: bytes, rid: Any) -> None:
        self._submit(payload, self._deliver)

    def close(self) -> None:
        if self.owned:
            self.engine.wait_idle(5.0)
            self.engine.close()


class _SubmitTarget:
    def __init__(self, submit: Submit, inbox: _Inbox) -> None:
        self.submit = submit
        self.inbox = inbox

    def send(self, payload: bytes, rid: Any) -> None:
        self.submit(payload, self.inbox.deliver_bytes)

    def close(self) -> None:
        pass


class _WorkerTarget:
    def __init__(self, argv: list[str], inbox: _Inbox, env: dict[str, str]) -> None:
        import subprocess

        from .wire.client import WorkerClient

        self.inbox = inbox
        try:
            self.client = WorkerClient(argv, env=env, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise WorkerStartFailed(f"cannot start worker {' '.join(argv)}: {exc.strerror or exc}") from None

    def send(self, payload: bytes, rid: Any) -> None:
        from .wire.framing import pack

        future = self.client.expect(rid) if rid is not None else None
        try:
            self.client.send_raw(pack(payload))
        except OSError as exc:
            self.inbox.gone(f"worker stopped reading: {exc}")
            return
        if future is not None:
            future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        try:
            self.inbox.deliver(future.result())
        except Exception as exc:  # the worker exited before answering
            self.inbox.gone(str(exc))

    def close(self) -> None:
        self.client.close(timeout=5.0)


class WorkerStartFailed(RuntimeError):
    pass


# -- replay -----------------------------------------------------------------------------


def _usable_id(value: Any) -> bool:
    return value is not None and not isinstance(value, (dict, list))


_BARRIERS: dict[str, bool] = {}


def _is_barrier(command: str | None) -> bool:
    """Whether a command acts on the whole worker (the engine runs it after everything earlier)."""
    if command is None:
        return False
    known = _BARRIERS.get(command)
    if known is None:
        try:
            known = _catalog().get(command).scheduling == "global"
        except Exception:
            known = False
        _BARRIERS[command] = known
    return known


def _drop_redacted(frame: Any) -> Any:
    """A request for a live replay: what recording scrubbed is left out, and each adapter
    may fill it in within its own rules (DSPy: a provider key from the environment, never
    for an api_base the transcript names)."""
    if isinstance(frame, dict) and isinstance(frame.get("args"), dict):
        for adapter in _live_adapters():
            frame = adapter.live_replay_frame(frame)
        frame = {**frame, "args": {k: v for k, v in frame["args"].items() if v != REDACTED}}
    return frame


@functools.cache
def _catalog() -> Any:
    from .engine import catalog

    return catalog()


@functools.cache
def _live_adapters() -> list[Any]:
    from .adapters import default_adapters

    return default_adapters()


class _Replayer:
    def __init__(self, path: str, *, lm_mode: str, ignore: Iterable[str], update: bool,
                 reply_timeout: float) -> None:
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
        self.inbox = _Inbox()
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

    # sending ---------------------------------------------------------------------------

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
                        frame = _drop_redacted(frame)
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
                    if deferred and _is_barrier(command):
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

    # --update ----------------------------------------------------------------------------

    def rewrite_file(self) -> bool:
        """Writes this replay's replies into the transcript, in place.

        Only the reply lines that differ are re-encoded; every other line (the header,
        requests, the cassette, the end line) is copied byte for byte, so a re-recorded
        file's diff shows only real changes. Returns whether the file changed.
        """
        if not self.rewrites and not self.new_lm_calls:
            return False
        from .record.scrubbing import scrub_lm_call

        temp = f"{self.path}.tmp-{os.getpid()}"
        seen: dict[Any, int] = defaultdict(int)
        end_line: bytes | None = None
        try:
            with open(self.path, "rb") as source, open(temp, "wb") as out:
                out.write(source.readline())
                for raw in source:
                    if not raw.strip():
                        continue
                    try:
                        entry = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        if not raw.endswith(b"\n"):
                            continue  # a killed writer's torn last line: replay skipped it too
                        raise TranscriptError(self.path, None, "changed while it was replayed") from None
                    kind = entry.get("type") if type(entry) is dict else None
                    if kind == "frame" and entry.get("dir") == "out" and type(entry.get("frame")) is dict:
                        rid = entry["frame"].get("id")
                        if _usable_id(rid):
                            seen[rid] += 1
                            replacement = self.rewrites.get((rid, seen[rid]))
                            if replacement is not None:
                                out.write(_frame_line_with(raw, entry, redact(replacement)))
                                continue
                    elif kind == "lm_call" and self.new_lm_calls:
                        continue  # a live replay's calls replace the old cassette
                    elif kind == "end":
                        end_line = raw if raw.endswith(b"\n") else raw + b"\n"
                        continue  # kept, after any new cassette entries
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                for record in self.new_lm_calls:
                    out.write(orjson.dumps({"type": "lm_call", **scrub_lm_call(record)},
                                           default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
                if end_line is not None and self.new_lm_calls:
                    end = orjson.loads(end_line)
                    if "lm_calls" in end:
                        end["lm_calls"] = len(self.new_lm_calls)
                        end_line = orjson.dumps(end) + b"\n"
                if end_line is not None:
                    out.write(end_line)
            os.replace(temp, self.path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        rewritten = {id(m) for m in self.rewrite_mismatches}
        self.result.updates = list(self.rewrite_mismatches)
        self.result.mismatches = [m for m in self.result.mismatches if id(m) not in rewritten]
        self.result.lm_calls_rerecorded = len(self.new_lm_calls)
        self.result.updated = True
        return True


def _frame_line_with(raw: bytes, entry: dict[str, Any], frame: Any) -> bytes:
    """The transcript line `raw` with its frame replaced, keeping the line's own envelope
    bytes (the recorder's `"ms":12.000`) when the frame is its last key, as recorded."""
    body = orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS)
    marker = raw.find(b',"frame":')
    if marker > 0 and raw.startswith(b'{"type":"frame"') and list(entry)[-1] == "frame":
        return raw[:marker + len(b',"frame":')] + body + b"}\n"
    return orjson.dumps({**entry, "frame": frame}, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def expand_worker_argv(argv: Iterable[str], header: dict[str, Any]) -> list[str]:
    """The worker command with `{args}` replaced by the recorded worker's own arguments."""
    recorded: list[str] = []
    skip = False
    for item in header.get("argv") or []:
        item = str(item)
        if skip:
            skip = False
            continue
        if item == "--record":  # the replayed worker must not record over anything
            skip = True
            continue
        if item.startswith("--record="):
            continue
        recorded.append(item)
    expanded: list[str] = []
    for item in argv:
        if item == "{args}":
            expanded.extend(recorded)
        else:
            expanded.append(item)
    return expanded


def replay_transcript(path: str, *, submit: Submit | Engine | None = None, worker_argv: list[str] | None = None,
                      lm_mode: str = "cassette", ignore: Iterable[str] = (), update: bool = False,
                      reply_timeout: float = DEFAULT_REPLY_TIMEOUT, worker_env: dict[str, str] | None = None,
                      threads: bool = False) -> ReplayResult:
    """Replays one transcript and compares every reply with the recorded one.

    Target: `worker_argv` (a worker command, through the real framing), `submit` (an
    Engine, or a callable taking (payload, send) like Engine.submit_frame), or by default
    a fresh in-process engine with the recorded mode and worker id. That engine runs each
    request in the replaying thread when LM calls come from the cassette (deterministic
    and fast); `threads=True` keeps its thread pool, as `lm_mode="live"` always does.
    With `update`, the
    transcript's recorded replies are rewritten with the ones seen now.

    Raises TranscriptError for a transcript that cannot be read (the caller maps it to
    exit code 3); every other outcome is in the returned ReplayResult.
    """
    if lm_mode not in ("cassette", "live"):
        raise ValueError(f"lm_mode must be 'cassette' or 'live', not {lm_mode!r}")
    path = str(path)
    replayer = _Replayer(path, lm_mode=lm_mode, ignore=ignore, update=update, reply_timeout=reply_timeout)
    header = replayer.transcript.header
    cassette = load_cassette(path) if lm_mode == "cassette" else None
    inbox = replayer.inbox
    from .engine import Engine as EngineClass

    restore: Callable[[], None] | None = None
    if worker_argv is not None:
        env = dict(worker_env if worker_env is not None else os.environ)
        env.pop(CASSETTE_ENV, None)
        if lm_mode == "cassette":
            env[CASSETTE_ENV] = os.path.abspath(path)
        env.pop("DSPEX_RECORD", None)
        target: Any = _WorkerTarget(expand_worker_argv(worker_argv, header), inbox, env)
        replayer.result.target = "worker"
    elif submit is not None:
        if isinstance(submit, EngineClass):
            engine = submit
            previous = engine.lm_responder
            if cassette is not None:
                engine.lm_responder = cassette.respond

            def restore() -> None:
                engine.lm_responder = previous

            target = _EngineTarget(engine, inbox, owned=False)
        else:
            target = _SubmitTarget(submit, inbox)
        replayer.result.target = "submit"
    else:
        from .engine import EngineConfig

        worker_id = header.get("worker_id")
        engine = EngineClass(EngineConfig(mode=str(header.get("mode") or "standalone"),
                                          worker_id=str(worker_id) if worker_id else None,
                                          argv=[str(a) for a in header.get("argv") or []]))
        if cassette is not None:
            engine.lm_responder = cassette.respond
            if not threads:
                run_requests_in_caller(engine)
        elif update:
            engine.listeners.append(lambda kind, data: replayer.new_lm_calls.append(data)
                                    if kind == "lm_call" else None)
        target = _EngineTarget(engine, inbox, owned=True)
    # The cyclic collector rescans the whole heap (DSPy's included) many times during a
    # replay that allocates this much, costing about a fifth of its time: it is paused for
    # an in-process replay, which collects its young garbage every REPLAY_GC_EVERY frames.
    pause_gc = isinstance(target, _EngineTarget) and target.owned and gc.isenabled()
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


__all__ = ["CASSETTE_ENV", "Cassette", "CassetteMiss", "Comparer", "IgnoreRules", "Mismatch", "ReplayResult",
           "VARYING_KEYS", "WorkerStartFailed", "install_cassette", "load_cassette", "parse_ignore_path",
           "replay_transcript"]
