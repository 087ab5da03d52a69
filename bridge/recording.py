"""The recorder: taps an engine's frames and LM calls and writes them as a transcript.

Recording must not slow serving, so the serving thread only appends (code, monotonic
time, bytes) to a deque, once per read or write syscall. A thread forwards what
accumulated every 20 ms, in one write, through a private pipe to a writer process
(`python -m bridge.recording`) at idle CPU priority. The writer gathers while the worker
is busy and, in its pauses, splits the frames, scrubs secrets, formats and writes,
flushing each step, so a worker killed at any moment leaves a readable transcript.
Secrets are scrubbed there, when written, never later: anything that reaches the file is
already clean.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .framing import DEFAULT_MAX_FRAME, FrameReader, write_all
from .redact import REDACTED, known_secrets, redact, remember_secret, scrub_text
from .transcript import FRAME_LINE_PREFIXES, TranscriptWriter, frame_line, make_header

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.record")

# Env: comma-separated JSON paths that replay should not compare for this recording.
IGNORE_ENV = "DSPEX_RECORD_IGNORE"

# In frames that are not JSON the key-name rule still applies, on the text itself.
_SECRET_PAIR = re.compile(
    r'("(?:[^"\\]*(?:key|token|secret|password|authorization|credential)[^"\\]*)"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.I)
# Anything in a payload that redaction could change: secret-like key names, key shapes;
# and raw line breaks, which a JSON Lines line cannot hold. A frame without any of these
# (and without a registered secret value) is written as the bytes it arrived as, skipping
# decode, redact and encode: most frames, every ping among them. Plain substring tests on
# folded bytes run at memory speed, unlike one case-insensitive regex.
# Prefixes stand for their families (b"xox" for xoxa-/xoxb-/xoxp-, b"authori" for both
# spellings): each search is a pass over the text, so fewer is faster, and a rare false
# alarm only sends that batch down the careful path.
_MARKERS = (b"key", b"token", b"secret", b"passw", b"authori", b"credential", b"sk-", b"aiza",
            b"xox", b"gh", b"bearer", b"\n", b"\r")
# Folding: ASCII letters to lower case (the markers are matched case-insensitively) and every
# digit to "0". No marker holds a digit, so a folded frame holds a marker exactly where the
# frame does; frames that differ only in numbers (ids, times, counts) fold alike, which
# lets a memo of folded frames already found marker-free skip most searches.
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789", b"abcdefghijklmnopqrstuvwxyz000000000")
# Folded frames kept as known marker-free; the memo starts over when full.
_MEMO_LIMIT = 4096


def marker_free(folded: bytes) -> bool:
    """Whether folded text (see _FOLD) holds none of the markers."""
    for marker in _MARKERS:
        if marker in folded:
            return False
    return True


def scrub_payload(payload: bytes) -> tuple[Any, bytes | None]:
    """(decoded and redacted frame, None), or (None, scrubbed raw bytes) when not JSON."""
    try:
        return redact(orjson.loads(payload)), None
    except orjson.JSONDecodeError:
        pass
    # latin-1 maps every byte to one character and back, so non-UTF-8 bytes survive.
    text = payload.decode("latin-1")
    text = _SECRET_PAIR.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    return None, scrub_text(text).encode("latin-1", errors="replace")


def scrub_lm_call(record: dict[str, Any]) -> dict[str, Any]:
    """A cassette entry from an engine lm_call record, redacted, keeping its cassette key."""
    cleaned = redact({k: v for k, v in record.items() if k != "key"})
    cleaned["key"] = record.get("key")
    ordered = {"key": cleaned.pop("key"), "request_id": cleaned.pop("request_id", None)}
    ordered.update(cleaned)
    return ordered


def transcript_file_for(path: str, worker_id: str, started: float) -> tuple[Path, bool]:
    """Where to write: (file, exclusive). A directory (existing or ending in '/') gets
    one file per worker, named by worker id and start time."""
    target = Path(path)
    if path.endswith(os.sep) or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", worker_id or "worker")[:80]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{int(started * 1000) % 1000:03d}"
        return target / f"{safe_id}-{stamp}.jsonl", True
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    return target, False


def _all_json(payloads: list[bytes]) -> bool:
    """Whether every payload is one JSON value, checked with a single parse of them all.

    Joined as a JSON array they parse to exactly one element each; a payload holding a
    bare comma-separated pair would add an element, an invalid one fails the parse.
    """
    try:
        values = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        return False
    return len(values) == len(payloads)


# One syscall's worth of recording: (direction, offset in ms, frames), direction "in" or
# "out" with raw payloads, or "lm" with engine lm_call records.
Group = tuple[str, float, list[Any]]


class BatchFormatter:
    """Turns groups of frames into scrubbed transcript lines."""

    def __init__(self, writer: TranscriptWriter) -> None:
        self.writer = writer
        self.secrets: tuple[bytes, ...] = ()
        self._marker_free_memo: set[bytes] = set()

    def set_secrets(self, secrets: list[str] | tuple[str, ...]) -> None:
        """The secret values to scrub: searched in raw frames here, and registered for
        scrub_text, which the careful path uses."""
        for secret in secrets:
            remember_secret(secret)
        self.secrets = tuple(secret.encode() for secret in secrets)

    def all_clean(self, payloads: list[bytes]) -> bool:
        """Whether every payload can be written as is: C-level passes over the whole lot."""
        joined = b"\x00".join(payloads)
        # Registered secrets may hold digits, so they are searched in the raw bytes.
        for secret in self.secrets:
            if secret in joined:
                return False
        memo = self._marker_free_memo
        unseen = set(map(bytes.translate, payloads, repeat(_FOLD))) - memo
        if unseen:
            if not marker_free(b"\x00".join(unseen)):
                return False
            if len(memo) + len(unseen) > _MEMO_LIMIT:
                memo.clear()
            memo |= unseen
        return True

    def format(self, groups: list[Group]) -> bytes:
        """The transcript lines of `groups`, in order, as one buffer."""
        groups = [group for group in groups if group[2]]  # a read may end inside its only frame
        if not groups:
            return b""
        if all(direction != "lm" for direction, _, _ in groups):
            payloads = list(chain.from_iterable(frames for _, _, frames in groups))
            requests = list(chain.from_iterable(frames for direction, _, frames in groups if direction == "in"))
            # Replies were encoded by the engine with orjson; requests need the JSON proof.
            if self.all_clean(payloads) and _all_json(requests):
                # The common case: per group one prefix and one C-level join of its frames.
                self.writer.frames += len(payloads)
                return b"".join([_group_lines(FRAME_LINE_PREFIXES[direction] % offset_ms, frames)
                                 for direction, offset_ms, frames in groups])
        return b"".join(self._careful_lines(groups))

    def _careful_lines(self, groups: list[Group]) -> list[bytes]:
        """Frame by frame: decode, redact and encode whatever might need it."""
        writer = self.writer
        lines: list[bytes] = []
        append = lines.append
        for kind, offset_ms, items in groups:
            for data in items:
                try:
                    if kind == "lm":
                        entry = scrub_lm_call(data)
                        append(writer.encode_entry({"type": "lm_call", "ms": round(offset_ms, 3), **entry}))
                        continue
                    if self.all_clean([data]) and (kind == "out" or _all_json([data])):
                        writer.frames += 1
                        append(FRAME_LINE_PREFIXES[kind] % offset_ms + data + b"}\n")
                        continue
                    frame, raw = scrub_payload(data)
                    append(writer.encode_entry(frame_line(kind, offset_ms, frame, raw)))
                except Exception:  # one odd frame must not end the recording
                    log.exception("could not record a frame")
        return lines


def _group_lines(prefix: bytes, frames: list[bytes]) -> bytes:
    """prefix + frame + "}\\n" for each frame, as one join."""
    return prefix + (b"}\n" + prefix).join(frames) + b"}\n"


# The private pipe from a worker to its transcript writer process: records of
# kind (1 byte), offset in ms (float64), length (uint32), body. Kinds: b"I"/b"O" the framed
# bytes of one read / one write as they crossed the port, b"i"/b"o" one frame's payload
# read or written alone, b"l" an LM call, b"s" the secret values registered so far, b"e"
# the end.
_RECORD = struct.Struct(">cdI")
# An in-process engine's frame taps say "in"/"out" for one payload.
_TAP_CODES = {"in": b"i", "out": b"o"}
_SINGLE_DIRECTIONS = {code: direction for direction, code in _TAP_CODES.items()}


class RecordDecoder:
    """Turns pipe records back into groups of frames (for the writer process, and for
    the in-process fallback, which formats the same records itself)."""

    def __init__(self, formatter: BatchFormatter) -> None:
        self.formatter = formatter
        # Each direction's stream is split into frames as the server split it: a read may
        # end inside a frame, which the next read completes.
        self.streams = {b"I": ("in", FrameReader(DEFAULT_MAX_FRAME)), b"O": ("out", FrameReader(DEFAULT_MAX_FRAME))}
        self.footer: dict[str, Any] | None = None

    def decode(self, code: bytes, offset_ms: float, body: bytes) -> list[Group]:
        """The groups one record holds (none for control records: secrets, the end)."""
        direction = _SINGLE_DIRECTIONS.get(code)
        if direction is not None:
            return [(direction, offset_ms, [body])]
        stream = self.streams.get(code)
        if stream is not None:
            direction, reader = stream
            oversized = reader.oversized
            frames = reader.feed(body)
            if reader.oversized != oversized:  # a skipped frame is not recorded
                frames = [frame for frame in frames if type(frame) is bytes]
            return [(direction, offset_ms, frames)]
        if code == b"l":
            return [("lm", offset_ms, [orjson.loads(body)])]
        if code == b"s":
            # Applies to the whole batch the writer is making, frames before it included:
            # scrubbing more than needed is harmless, less never is.
            self.formatter.set_secrets(orjson.loads(body))
        elif code == b"e":
            self.footer = orjson.loads(body)
        else:
            log.error("unknown record %r in the recording pipe; skipped", code)
        return []


class Recorder:
    """Owns the pending deque, the forwarding thread and the writer of one engine.

    The hot path appends one tuple per read or write syscall (its framed bytes, as they
    crossed the port) to a deque: no lock, no wake-up, no formatting. A thread polls the
    deque and forwards what accumulated, as pipe records in one write, to a writer process
    (`python -m bridge.recording`, at idle CPU priority), which splits, scrubs, formats,
    writes and flushes outside this process's GIL. Secrets cross only that pipe, never
    the disk. If the writer process cannot start, the thread formats and writes itself
    (correct, just dearer for the worker).
    """

    POLL_SECONDS = 0.02
    # Syscalls' worth of records that may wait in memory. Beyond it (a writer that cannot
    # keep up with a flood, or stopped), the tapping thread waits for room: serving slows
    # to the writer's pace rather than memory growing without bound or frames being lost.
    MAX_PENDING = 16384
    # How long close() waits for the writer to format its backlog (about 0.5 s for a full
    # one) before the worker goes on exiting without it.
    CLOSE_WAIT_SECONDS = 10.0

    def __init__(self, engine: Engine, path: str, *, ignore: list[str] | None = None,
                 subprocess_writer: bool = True,
                 stream_taps: list[Callable[[bytes, bytes, float], None]] | None = None) -> None:
        self.engine = engine
        self.started = time.monotonic()
        started_wall = time.time()
        env_ignore = [p.strip() for p in os.environ.get(IGNORE_ENV, "").split(",") if p.strip()]
        header = make_header(mode=engine.config.mode, worker_id=engine.worker_id,
                             argv=list(engine.config.argv), ignore=[*(ignore or []), *env_ignore])
        header = redact(header)  # argv may carry a secret on a command line
        target, exclusive = transcript_file_for(path, engine.worker_id, started_wall)
        if exclusive:
            for attempt in range(1, 100):
                try:
                    self.writer = TranscriptWriter(target, header, exclusive=True)
                    break
                except FileExistsError:
                    target = target.with_name(f"{target.stem.split('~')[0]}~{attempt}.jsonl")
            else:
                raise FileExistsError(f"no free transcript name in {target.parent}")
        else:
            self.writer = TranscriptWriter(target, header)
        self.writer.flush()
        self.path = str(target)
        self._subprocess_writer = subprocess_writer
        self._process: subprocess.Popen[bytes] | None = None
        self._formatter: BatchFormatter | None = None
        self._decoder: RecordDecoder | None = None
        self._sent_secrets = 0
        # (code, monotonic time, bytes) tuples from the taps; LM-call records (bytes).
        self._pending: deque[Any] = deque()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._forward_lock = threading.Lock()
        self._last_forward = time.monotonic()
        self._failed = False
        self._closed = False
        self.backpressure_waits = 0  # times a tapping thread waited for the writer
        pending = self._pending
        append = pending.append
        limit = self.MAX_PENDING

        # A server's stream taps: one call per read or write syscall, whatever it carried.
        def stream_tap(code: bytes, data: bytes, now: float) -> None:
            append((code, now, data))
            if len(pending) > limit:
                self._wait_for_room()

        # An in-process engine's frame taps: one call per frame.
        def tap(direction: str, payload: bytes, now: float) -> None:
            append((_TAP_CODES[direction], now, payload))
            if len(pending) > limit:
                self._wait_for_room()

        def listener(kind: str, data: dict[str, Any]) -> None:
            # Encoded here, on the thread that made the LM call (milliseconds long anyway),
            # so the forwarding thread only joins bytes.
            if kind == "lm_call":
                body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
                append(_RECORD.pack(b"l", (time.monotonic() - self.started) * 1000.0, len(body)) + body)

        self._tap = tap
        self._stream_tap = stream_tap
        self._tap_list = engine.frame_taps if stream_taps is None else stream_taps
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="dspex-recorder", daemon=True)
        self._thread.start()
        self._tap_list.append(tap if stream_taps is None else stream_tap)
        engine.listeners.append(listener)

    def _wait_for_room(self) -> None:
        """Blocks the tapping thread until the forwarding thread has taken half the queue
        (it forwards at once when the queue is this full), unless recording has stopped."""
        self.backpressure_waits += 1
        self._wake.set()
        while len(self._pending) > self.MAX_PENDING // 2 and not self._failed and self._thread.is_alive():
            time.sleep(0.001)

    def _start_writer(self) -> None:
        if self._subprocess_writer:
            try:
                self.writer.detach()
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "bridge.recording", self.path], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, close_fds=True, env=_writer_env())
                try:
                    # A deep pipe lets the idle-priority writer lag through a burst without
                    # the forwarding thread waking (and taking the GIL) at every 64 KiB.
                    fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
                except (AttributeError, OSError):
                    pass
                return
            except OSError as exc:
                log.warning("transcript writer process unavailable (%s); writing in-process", exc)
                self.writer = TranscriptWriter(self.path, {}, append=True)
        self._formatter = BatchFormatter(self.writer)
        self._decoder = RecordDecoder(self._formatter)

    def _run(self) -> None:
        try:
            self._start_writer()
        except OSError as exc:
            self._fail(exc)
        stopping = self._stopping
        while True:
            # Forwarding happens here, off the serving thread: when the writer process falls
            # behind, this thread waits on the pipe while serving goes on.
            if self._pending and (time.monotonic() - self._last_forward >= self.POLL_SECONDS
                                  or len(self._pending) > self.MAX_PENDING // 2):
                self._drain()
            elif stopping.is_set():
                if not self._pending:
                    return
                self._drain()
            else:
                # Woken early by a full queue (see _wait_for_room) or by close().
                self._wake.wait(self.POLL_SECONDS)
                self._wake.clear()

    def _drain(self) -> None:
        """Forwards everything pending; one thread at a time, others simply skip."""
        if not self._forward_lock.acquire(blocking=False):
            return
        try:
            pending = self._pending
            popleft = pending.popleft
            while pending:
                batch = [popleft() for _ in range(min(len(pending), 4096))]
                if not self._failed:
                    try:
                        self._forward(batch)
                    except (OSError, ValueError) as exc:  # ValueError: pipe closed by close()
                        self._fail(exc)
            self._last_forward = time.monotonic()
        finally:
            self._forward_lock.release()

    def _records(self, batch: list[Any]) -> list[bytes]:
        """Pipe records for a batch, in order: a header and the data of each tapped
        syscall (a loop per syscall, not per frame), LM-call records as they are."""
        started = self.started
        pack = _RECORD.pack
        if not any(type(entry) is bytes for entry in batch):  # the usual batch: taps only
            return [part for code, now, data in batch
                    for part in (pack(code, (now - started) * 1000.0, len(data)), data)]
        records: list[bytes] = []
        for entry in batch:
            if type(entry) is bytes:  # an LM-call record, ready-made by the listener
                records.append(entry)
            else:
                code, now, data = entry
                records += (pack(code, (now - started) * 1000.0, len(data)), data)
        return records

    def _forward(self, batch: list[Any]) -> None:
        """Sends a batch to the writer process, or formats and writes it here without one."""
        secrets = known_secrets()
        records = self._records(batch)
        if self._process is None:
            assert self._formatter is not None and self._decoder is not None
            self._formatter.set_secrets(secrets)
            groups: list[Group] = []
            joined = b"".join(records)
            position = 0
            while position < len(joined):
                code, offset_ms, length = _RECORD.unpack_from(joined, position)
                position += _RECORD.size + length
                groups += self._decoder.decode(code, offset_ms, joined[position - length:position])
            lines = self._formatter.format(groups)
            if lines:
                self.writer.write_lines([lines])
            return
        if len(secrets) != self._sent_secrets:
            body = orjson.dumps(list(secrets))
            records.insert(0, _RECORD.pack(b"s", 0.0, len(body)) + body)
            self._sent_secrets = len(secrets)
        assert self._process.stdin is not None
        write_all(self._process.stdin.fileno(), b"".join(records))

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        log.error("recording to %s stopped: %s", self.path, exc)

    def close(self) -> None:
        """Stops tapping, writes what is pending and the end line; idempotent."""
        if self._closed:
            return
        self._closed = True
        for hooks, hook in ((self._tap_list, self._tap), (self._tap_list, self._stream_tap),
                            (self.engine.listeners, self._listener)):
            try:
                hooks.remove(hook)
            except ValueError:
                pass
        self._stopping.set()
        self._wake.set()
        self._thread.join(5.0)
        ended_ms = round((time.monotonic() - self.started) * 1000.0, 3)
        process = self._process
        if process is not None:
            try:
                if not self._failed and not self._thread.is_alive():
                    body = orjson.dumps({"ms": ended_ms})
                    write_all(process.stdin.fileno(), _RECORD.pack(b"e", ended_ms, len(body)) + body)
                process.stdin.close()
            except OSError as exc:
                log.error("transcript writer for %s is gone: %s", self.path, exc)
            try:
                process.wait(self.CLOSE_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                # A large backlog is still being formatted. Killing the writer would lose
                # the transcript's tail; it ignores the usual signals and finishes alone.
                log.warning("transcript writer for %s is still finishing; not waiting for it", self.path)
            return
        if self._thread.is_alive() or self._failed:
            return
        try:
            self.writer.close({"ms": ended_ms})
        except OSError as exc:
            log.error("closing transcript %s failed: %s", self.path, exc)


def _writer_env() -> dict[str, str]:
    """The writer process imports this package from wherever the worker did."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("DSPEX_RECORD", "DSPEX_REPLAY_CASSETTE", "DSPEX_PLUGINS"):
        env.pop(name, None)
    return env


# The writer formats once the worker has sent nothing for this long...
QUIET_SECONDS = 0.1
# ...or once this much waits, whatever the traffic (about 100,000 pings and replies).
BACKLOG_LIMIT = 32 << 20
# Formatted per step, between looks at the pipe: about 3,000 pings and replies.
FORMAT_STEP = 1 << 20


def _format_records(pending: bytearray, start: int, decoder: RecordDecoder, writer: TranscriptWriter) -> int:
    """Formats and writes the whole records in pending[start:] up to about FORMAT_STEP
    bytes, with one write and one flush; returns where the first unformatted record starts."""
    header_size = _RECORD.size
    unpack_header = _RECORD.unpack_from
    decode = decoder.decode
    groups: list[Group] = []
    end = len(pending)
    limit = start + FORMAT_STEP
    with memoryview(pending) as view:  # one copy per record body, not two
        while end - start >= header_size and start < limit:
            code, offset_ms, length = unpack_header(pending, start)
            body_start = start + header_size
            if end - body_start < length:
                break
            start = body_start + length
            try:
                groups += decode(code, offset_ms, bytes(view[body_start:start]))
            except ValueError as exc:  # orjson's errors among them: one bad record, not the rest
                log.error("skipped an unreadable %r record in the recording pipe: %s", code, exc)
    data = decoder.formatter.format(groups)
    if data:
        writer.write_lines([data])
    return start


def run_writer_process(path: str, fd: int = 0) -> int:
    """The writer process (`python -m bridge.recording PATH`): its settings, then the loop."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # The worker decides when recording ends (by closing the pipe), not a signal
        # sent to the whole process group, which would lose the transcript's tail.
        signal.signal(sig, signal.SIG_IGN)
    # Transcripts may trail by milliseconds; the worker and its client may not wait. Where
    # the OS allows, the writer only runs on otherwise idle CPU time.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    try:
        write_transcript(path, fd)
    except OSError as exc:  # the disk is full or gone: say so in one line, as the worker does
        log.error("transcript %s: writing stopped: %s", path, exc)
        return 1
    return 0


def write_transcript(path: str, fd: int) -> None:
    """Reads records from the worker's pipe `fd` until it closes; appends their lines to `path`.

    Lines are written and flushed in steps once the worker pauses, so the file trails a
    busy worker by up to BACKLOG_LIMIT and an idle one by QUIET_SECONDS; whatever the
    worker sent is written before this returns, even if the worker was killed. The end
    line is written only when the worker closed cleanly.
    """
    writer = TranscriptWriter(path, {}, append=True)
    formatter = BatchFormatter(writer)
    decoder = RecordDecoder(formatter)
    pending = bytearray()  # records read from the pipe, not yet formatted, from `start` on
    start = 0
    pipe_open = True
    quiet = False  # the worker has sent nothing for QUIET_SECONDS: format until it does
    partial = False  # the last step found only part of a record: the rest must be read first
    watch = select.poll()
    watch.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        waiting = len(pending) - start
        if pipe_open and (waiting == 0 or partial or (waiting < BACKLOG_LIMIT and
                                                      watch.poll(0 if quiet else QUIET_SECONDS * 1000))):
            # While the worker is busy, only gather: formatting then would take CPU time
            # from the worker and its client even at idle priority (measured in
            # docs/benchmarks.md), so it waits for a pause or a full backlog.
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                pipe_open = False
            else:
                if start > len(pending) // 2:  # drop what is done before the buffer grows
                    del pending[:start]
                    start = 0
                pending += chunk
                quiet = quiet and partial  # completing a record is not new traffic
            partial = False
            continue
        if not pipe_open and (waiting == 0 or partial):
            break  # all written, or the worker was cut off mid-record and the rest never comes
        quiet = True
        done = _format_records(pending, start, decoder, writer)
        partial = done == start
        start = done
    footer = decoder.footer
    if footer is not None:
        writer.close(footer)
    else:
        writer.detach()


def start_recording(engine: Engine, path: str, *, ignore: list[str] | None = None,
                    stream_taps: list[Callable[[bytes, bytes, float], None]] | None = None
                    ) -> Callable[[], None]:
    """Records everything `engine` receives, sends and asks LMs into a transcript at `path`.

    `path` is a file, or a directory (existing, or ending in '/') that gets one file per
    worker. Returns the hook that finishes the transcript. A transcript that cannot be
    created is logged and serving goes on unrecorded: recording never takes a worker down.
    """
    try:
        recorder = Recorder(engine, path, ignore=ignore, stream_taps=stream_taps)
    except (OSError, ValueError) as exc:
        log.error("cannot record to %s: %s", path, exc)
        return lambda: None
    log.info("recording to %s", recorder.path)
    engine.recorder = recorder  # type: ignore[attr-defined]  (lets inspect and the REPL find it)
    return recorder.close


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s dspex-recorder[%(process)d] %(levelname)s %(name)s: %(message)s")
    raise SystemExit(run_writer_process(sys.argv[1]))


__all__ = ["IGNORE_ENV", "BatchFormatter", "RecordDecoder", "run_writer_process", "write_transcript", "Recorder", "scrub_lm_call", "scrub_payload", "start_recording", "transcript_file_for"]
