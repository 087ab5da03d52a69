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

from .wire.framing import DEFAULT_MAX_FRAME, FrameReader, write_all
from .redact import SECRET_NAMES, known_secrets, redact, remember_secret, scrub_unparsed
from .transcript import FRAME_LINE_PREFIXES, TranscriptWriter, frame_line, make_header

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.record")

# Env: comma-separated JSON paths that replay should not compare for this recording.
IGNORE_ENV = "DSPEX_RECORD_IGNORE"

# Folding: ASCII letters to lower case and "-" to "_" (redaction compares names that way:
# X-Api-Key is x_api_key) and every digit to "0". Markers are folded the same way, so a
# folded frame holds a marker exactly where the frame does; frames that differ only in
# numbers (ids, times, counts) fold alike, which lets a memo of folded frames already
# found marker-free skip most searches.
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789-", b"abcdefghijklmnopqrstuvwxyz000000000_")


def _name_markers(names: frozenset[str] | set[str] | tuple[str, ...]) -> tuple[bytes, ...]:
    """The folded secret names, minus any that holds a shorter one (that one finds it too)."""
    kept: list[bytes] = []
    for name in sorted({name.encode().translate(_FOLD) for name in names}, key=len):
        if not any(shorter in name for shorter in kept):
            kept.append(name)
    return tuple(kept)


# Anything in a payload that redaction could change. A frame without any of these (and
# without a registered secret value) is written as the bytes it arrived as, skipping
# decode, redact and encode: most frames, every ping among them. Plain substring tests on
# folded bytes run at memory speed, unlike one case-insensitive regex.
# - the secret key names redaction knows (from redact, the one list);
# - the starts of key shapes (b"xox" for xoxa-/xoxb-/xoxp-): a rare false alarm only
#   sends that batch down the careful path;
# - b"@": URL userinfo (`scheme://user:PASSWORD@host`), however its slashes are escaped;
# - b"\\u": a JSON escape can spell any letter of any marker (`"api_\\u006bey"`);
# - raw line breaks, which a JSON Lines line cannot hold.
_MARKERS = _name_markers(SECRET_NAMES) + tuple(
    marker.translate(_FOLD) for marker in (b"sk-", b"aiza", b"xox", b"gh", b"bearer", b"@", b"\\u", b"\n", b"\r"))
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
    except RecursionError:  # nested deeper than redaction walks: kept, scrubbed as text
        pass
    # latin-1 maps every byte to one character and back, so non-UTF-8 bytes survive.
    return None, scrub_unparsed(payload.decode("latin-1")).encode("latin-1", errors="replace")


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
# read or written alone, b"l" an LM call, b"s" the secret values registered so far, b"d"
# recording stopped early (its footer: why and when), b"e" the end (a clean close).
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
        self.footer: dict[str, Any] | None = None  # from the end record of a clean close
        self.stopped: dict[str, Any] | None = None  # from a b"d" record: nothing after it is recorded

    def decode(self, code: bytes, offset_ms: float, body: bytes) -> list[Group]:
        """The groups one record holds (none for control records: secrets, the end)."""
        if self.stopped is not None and code not in (b"e", b"s"):
            return []  # a stream cut short must not go on past its gap
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
        elif code == b"d":
            self.stopped = orjson.loads(body)
        else:
            log.error("unknown record %r in the recording pipe; skipped", code)
        return []

    def end_line(self, cut_short: str | None = None) -> dict[str, Any]:
        """The footer of the transcript's end line: `complete` says whether it holds the
        whole conversation; otherwise `reason` says why not, `recorded_until_ms` from when."""
        if cut_short is None and self.stopped is None and self.footer is not None:
            return {**self.footer, "complete": True}
        footer: dict[str, Any] = dict(self.footer or {})
        footer.update(self.stopped or {"reason": cut_short or "the worker ended without closing the recording"})
        footer["complete"] = False
        return footer


def _stop_record(offset_ms: float, reason: str) -> bytes:
    body = orjson.dumps({"recorded_until_ms": round(offset_ms, 3), "reason": reason})
    return _RECORD.pack(b"d", offset_ms, len(body)) + body


class Recorder:
    """Owns the pending deque, the forwarding thread and the writer of one engine.

    The hot path appends one tuple per read or write syscall (its framed bytes, as they
    crossed the port) to a deque: no lock, no wake-up, no formatting. A thread polls the
    deque and forwards what accumulated, as pipe records in one write, to a writer process
    (`python -m bridge.recording`, at idle CPU priority), which splits, scrubs, formats,
    writes and flushes outside this process's GIL. Secrets cross only that pipe, never
    the disk. If the writer process cannot start, the thread formats and writes itself
    (correct, just dearer for the worker).

    Serving never waits for recording. A writer that falls behind far enough (see
    MAX_PENDING and MAX_UNSENT_BYTES) ends the recording: the taps come off, one line goes
    to stderr, and the transcript ends with an end line marked `"complete": false`.
    """

    POLL_SECONDS = 0.02
    # Syscalls' worth of records that may wait in memory for the forwarding thread...
    MAX_PENDING = 16384
    # ...and how long a tapping thread that finds the queue this full waits for it to take
    # them (it is woken at once) before recording stops: serving is delayed by this once
    # at most, never made to follow the writer's pace.
    ROOM_WAIT_SECONDS = 0.005
    # Bytes forwarded but not yet taken by the writer's pipe (1 MiB deep); beyond this the
    # writer has fallen behind for good and recording stops, so memory stays bounded.
    MAX_UNSENT_BYTES = 64 << 20
    # At close: how long the forwarding thread may take to hand over what is pending, then
    # how long to wait for the writer to write its backlog (about 0.5 s for a full one)
    # before the worker goes on exiting; the writer then finishes alone, within its own
    # bounded grace (WRITER_GRACE_SECONDS).
    CLOSE_FORWARD_SECONDS = 2.0
    CLOSE_WAIT_SECONDS = 3.0

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
        self._pipe_fd = -1
        self._formatter: BatchFormatter | None = None
        self._decoder: RecordDecoder | None = None
        self._sent_secrets = 0
        # (code, monotonic time, bytes) tuples from the taps; LM-call records (bytes).
        self._pending: deque[Any] = deque()
        # Pipe data the writer's pipe has not taken yet, and how much of its first chunk it did.
        self._unsent: deque[bytes] = deque()
        self._unsent_offset = 0
        self._unsent_bytes = 0
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._forwarded = threading.Event()  # set once the forwarding thread handed over all
        self._abandon = False  # close() gave up on a writer that takes nothing
        self._last_forward = time.monotonic()
        self._failed = False
        self._closed = False
        self._ended_ms = 0.0
        self._end_queued = False
        self._stopped_ms = 0.0
        self._stop_lock = threading.Lock()
        self.stopped_reason: str | None = None  # why recording stopped early, if it did
        self._stop_noted = False  # the b"d" record is on its way
        self.backpressure_waits = 0  # times a tapping thread found the queue full
        pending = self._pending
        append = pending.append
        limit = self.MAX_PENDING

        # A server's stream taps: one call per read or write syscall, whatever it carried.
        def stream_tap(code: bytes, data: bytes, now: float) -> None:
            append((code, now, data))
            if len(pending) > limit:
                self._make_room()

        # An in-process engine's frame taps: one call per frame.
        def tap(direction: str, payload: bytes, now: float) -> None:
            append((_TAP_CODES[direction], now, payload))
            if len(pending) > limit:
                self._make_room()

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

    def _make_room(self) -> None:
        """Called by a tapping thread that found the queue full: wakes the forwarding
        thread and waits for it a few milliseconds at most; if the queue is still full,
        recording stops (serving never waits for the writer)."""
        self.backpressure_waits += 1
        self._wake.set()
        deadline = time.monotonic() + self.ROOM_WAIT_SECONDS
        while len(self._pending) > self.MAX_PENDING // 2:
            if time.monotonic() >= deadline or self._failed or self._forwarded.is_set():
                self._stop_recording(f"the transcript writer fell behind ({len(self._pending)} reads and "
                                     f"writes waiting)")
                return
            time.sleep(0.0005)

    def _unhook(self) -> None:
        for hooks, hook in ((self._tap_list, self._tap), (self._tap_list, self._stream_tap),
                            (self.engine.listeners, self._listener)):
            try:
                hooks.remove(hook)
            except ValueError:
                pass

    def _stop_recording(self, reason: str) -> None:
        """Ends the recording early, from any thread: the taps come off, so the transcript
        holds an unbroken start of each stream; the rest of the session goes unrecorded."""
        with self._stop_lock:
            if self.stopped_reason is not None or self._closed:
                return
            self.stopped_reason = reason
            self._stopped_ms = (time.monotonic() - self.started) * 1000.0
        self._unhook()
        self._wake.set()
        log.error("recording to %s stopped after %.0f ms: %s; serving goes on unrecorded and the transcript "
                  "is marked incomplete", self.path, self._stopped_ms, reason)

    def _start_writer(self) -> None:
        if self._subprocess_writer:
            try:
                self.writer.detach()
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "bridge.recording", self.path, str(os.getpid())],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True, env=_writer_env())
                assert self._process.stdin is not None
                self._pipe_fd = self._process.stdin.fileno()
                # Never blocks: a writer that takes nothing must not hold this thread (close
                # could not end it), so what the pipe does not take waits in _unsent.
                os.set_blocking(self._pipe_fd, False)
                try:
                    # A deep pipe lets the idle-priority writer lag through a burst without
                    # the forwarding thread waking (and taking the GIL) at every 64 KiB.
                    fcntl.fcntl(self._pipe_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
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
            try:
                self._start_writer()
            except OSError as exc:
                self._fail(exc)
            self._forward_until_closed()
        except Exception:  # recording never takes the worker down
            log.exception("recording to %s failed", self.path)
            self._failed = True
        finally:
            self._finish_pipe()
            self._forwarded.set()
        if self._process is not None:
            # Linux ties the writer's parent-death signal to the thread that started it:
            # this thread lives until the writer is done, so the signal means the worker died.
            self._process.wait()

    def _forward_until_closed(self) -> None:
        stopping = self._stopping
        pending = self._pending
        while not self._abandon:
            closing = stopping.is_set()
            # Forwarding happens here, off the serving thread.
            if pending and (closing or len(pending) > self.MAX_PENDING // 2
                            or time.monotonic() - self._last_forward >= self.POLL_SECONDS):
                self._drain()
            if self.stopped_reason is not None and not self._stop_noted and not pending:
                self._stop_noted = True
                self._emit([_stop_record(self._stopped_ms, self.stopped_reason)])
            if self._unsent:
                self._send_unsent()
            if closing and not pending:
                if not self._end_queued and not self._failed:
                    self._end_queued = True
                    body = orjson.dumps({"ms": self._ended_ms})
                    self._emit([_RECORD.pack(b"e", self._ended_ms, len(body)) + body])
                    self._send_unsent()
                if not self._unsent:
                    return
            if self._unsent and self._pipe_fd >= 0:
                # The writer is behind: wait for room in its pipe (or the next poll).
                try:
                    select.select([], [self._pipe_fd], [], self.POLL_SECONDS)
                except (OSError, ValueError) as exc:
                    self._fail(exc)
            else:
                # Woken early by a full queue (see _make_room) or by close().
                self._wake.wait(self.POLL_SECONDS)
                self._wake.clear()

    def _drain(self) -> None:
        """Forwards everything pending (this thread only)."""
        pending = self._pending
        popleft = pending.popleft
        while pending:
            batch = [popleft() for _ in range(min(len(pending), 4096))]
            if not self._failed:
                try:
                    self._emit(self._records(batch))
                except (OSError, ValueError) as exc:
                    self._fail(exc)
        self._last_forward = time.monotonic()
        if self._unsent_bytes > self.MAX_UNSENT_BYTES:
            self._stop_recording(f"the transcript writer fell behind ({self._unsent_bytes >> 20} MiB waiting)")

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

    def _emit(self, records: list[bytes]) -> None:
        """Queues records for the writer process, or formats and writes them here without one."""
        secrets = known_secrets()
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
        data = b"".join(records)
        self._unsent.append(data)
        self._unsent_bytes += len(data)

    def _send_unsent(self) -> None:
        """Writes what the writer's pipe takes now, without waiting."""
        unsent = self._unsent
        while unsent:
            chunk = unsent[0]
            try:
                with memoryview(chunk) as view:
                    written = os.write(self._pipe_fd, view[self._unsent_offset:])
            except BlockingIOError:
                return
            except OSError as exc:  # the writer is gone
                self._fail(exc)
                return
            self._unsent_bytes -= written
            self._unsent_offset += written
            if self._unsent_offset == len(chunk):
                unsent.popleft()
                self._unsent_offset = 0

    def _finish_pipe(self) -> None:
        """Closes this end of the writer's pipe (the writer then ends), or, without a
        writer process, writes the end line here."""
        if self._process is not None:
            self._unsent.clear()
            self._unsent_bytes = 0
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
            except OSError:
                pass
            return
        if self._decoder is None:
            return
        try:
            self.writer.close(self._decoder.end_line(
                None if self._stopping.is_set() and not self._failed and not self._abandon
                else "recording failed before the worker closed it"))
        except (OSError, ValueError) as exc:
            log.error("closing transcript %s failed: %s", self.path, exc)

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            log.error("recording to %s stopped: %s", self.path, exc)
        self._failed = True
        self._unsent.clear()
        self._unsent_bytes = 0
        self._unhook()

    def close(self) -> None:
        """Stops tapping, hands over what is pending and the end record; idempotent.
        Bounded: a writer that has fallen behind is left to finish alone."""
        with self._stop_lock:
            if self._closed:
                return
            self._closed = True
        self._unhook()
        self._ended_ms = round((time.monotonic() - self.started) * 1000.0, 3)
        self._stopping.set()
        self._wake.set()
        if not self._forwarded.wait(self.CLOSE_FORWARD_SECONDS):
            self._abandon = True  # the writer takes nothing: its transcript ends marked incomplete
            log.error("transcript writer for %s is not reading; its transcript ends incomplete", self.path)
            self._forwarded.wait(1.0)
        self._thread.join(self.CLOSE_WAIT_SECONDS)
        if self._thread.is_alive() and self._forwarded.is_set():
            # A large backlog is still being formatted. Killing the writer would lose the
            # transcript's tail; it finishes alone, within its own grace.
            log.warning("transcript writer for %s is still finishing; not waiting for it", self.path)


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
# Formatted per step, between looks at the pipe (and the clock): about 3,000 pings and replies.
FORMAT_STEP = 1 << 20
# Once the worker is gone (its pipe closed, or the parent-death signal), the writer has this
# long to write its backlog; a signal while the worker lives gives WRITER_TERM_SECONDS (the
# worker is draining and will close the pipe). Past either, the writer writes an end line
# marked incomplete and exits: it never outlives its worker for long.
WRITER_GRACE_SECONDS = 5.0
WRITER_TERM_SECONDS = 60.0
# prctl(2) option: the signal this process gets when its parent (thread) dies.
_PR_SET_PDEATHSIG = 1


class WriterDeadline:
    """When the writer must stop, however much is left: never, until shortened."""

    def __init__(self) -> None:
        self.at = float("inf")

    def shorten(self, seconds: float) -> None:
        self.at = min(self.at, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()


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


def _die_with_worker(worker_pid: int | None, deadline: WriterDeadline) -> None:
    """Signals end the writer soon instead of being ignored: the worker decides when
    recording ends (by closing the pipe), so a signal sent to the whole process group only
    starts a long grace while the worker lives, a short one once it is gone. On Linux the
    worker's death itself sends SIGTERM (PR_SET_PDEATHSIG)."""

    def worker_alive() -> bool:
        return worker_pid is None or os.getppid() == worker_pid

    def on_signal(signum: int, frame: object) -> None:
        deadline.shorten(WRITER_TERM_SECONDS if worker_alive() else WRITER_GRACE_SECONDS)
        # A backstop for a step that never returns: the default SIGALRM action ends the process.
        signal.setitimer(signal.ITIMER_REAL, max(deadline.remaining(), 0.0) + WRITER_GRACE_SECONDS)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not worker_alive():  # it died before the signal was armed
        on_signal(signal.SIGTERM, None)


def run_writer_process(path: str, fd: int = 0, worker_pid: int | None = None) -> int:
    """The writer process (`python -m bridge.recording PATH [WORKER_PID]`): its settings,
    then the loop."""
    deadline = WriterDeadline()
    _die_with_worker(worker_pid, deadline)
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
        write_transcript(path, fd, deadline)
    except OSError as exc:  # the disk is full or gone: say so in one line, as the worker does
        log.error("transcript %s: writing stopped: %s", path, exc)
        return 1
    return 0


def write_transcript(path: str, fd: int, deadline: WriterDeadline | None = None) -> None:
    """Reads records from the worker's pipe `fd` until it closes; appends their lines to `path`.

    Lines are written and flushed in steps once the worker pauses, so the file trails a
    busy worker by up to BACKLOG_LIMIT and an idle one by QUIET_SECONDS; whatever the
    worker sent is written before this returns, even if the worker was killed, unless
    `deadline` passes first. The transcript always ends with an end line saying whether it
    is complete (see RecordDecoder.end_line).
    """
    deadline = deadline or WriterDeadline()
    writer = TranscriptWriter(path, {}, append=True)
    formatter = BatchFormatter(writer)
    decoder = RecordDecoder(formatter)
    pending = bytearray()  # records read from the pipe, not yet formatted, from `start` on
    start = 0
    pipe_open = True
    quiet = False  # the worker has sent nothing for QUIET_SECONDS: format until it does
    partial = False  # the last step found only part of a record: the rest must be read first
    cut_short: str | None = None
    watch = select.poll()
    watch.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        if deadline.remaining() <= 0:
            cut_short = "the transcript writer ran out of time before writing everything"
            break
        waiting = len(pending) - start
        if pipe_open and (waiting == 0 or partial or waiting < BACKLOG_LIMIT):
            # While the worker is busy, only gather: formatting then would take CPU time
            # from the worker and its client even at idle priority (measured in
            # docs/benchmarks.md), so it waits for a pause or a full backlog. Nothing to
            # format: wait for data, but look at the clock now and then.
            must_read = waiting == 0 or partial
            wait_ms = min(1000.0, max(deadline.remaining(), 0.0) * 1000) if must_read \
                else (0 if quiet else QUIET_SECONDS * 1000)
            if watch.poll(wait_ms):
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    pipe_open = False
                    deadline.shorten(WRITER_GRACE_SECONDS)  # the worker is done or gone
                else:
                    if start > len(pending) // 2:  # drop what is done before the buffer grows
                        del pending[:start]
                        start = 0
                    pending += chunk
                    quiet = quiet and partial  # completing a record is not new traffic
                partial = False
                continue
            if must_read:
                continue
        if not pipe_open and (waiting == 0 or partial):
            break  # all written, or the worker was cut off mid-record and the rest never comes
        quiet = True
        done = _format_records(pending, start, decoder, writer)
        partial = done == start
        start = done
    writer.close(decoder.end_line(cut_short))


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
    raise SystemExit(run_writer_process(sys.argv[1], 0, int(sys.argv[2]) if len(sys.argv) > 2 else None))


__all__ = ["IGNORE_ENV", "BatchFormatter", "RecordDecoder", "run_writer_process", "write_transcript", "Recorder", "scrub_lm_call", "scrub_payload", "start_recording", "transcript_file_for"]
