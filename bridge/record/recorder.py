"""The recorder: taps an engine's frames and LM calls and writes them as a transcript.

Recording must not slow serving, so the serving thread only appends (code, monotonic
time, bytes) to a deque, once per read or write syscall. A thread forwards what
accumulated every 20 ms, in one write, through a private pipe to a writer process
(`python -m bridge.record.writer`) at idle CPU priority. The writer gathers while the
worker is busy and, in its pauses, splits the frames, scrubs secrets, formats and writes,
flushing each step, so a worker killed at any moment leaves a readable transcript.
Secrets are scrubbed there, when written, never later: anything that reaches the file is
already clean.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..redact import known_secrets, redact
from .records import RECORD, TAP_CODES, RecordDecoder, stop_record
from .scrubbing import BatchFormatter, Group
from .spawn import spawn_writer
from .transcript import TranscriptWriter, make_header, transcript_file_for

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("dspex.record")

class Recorder:
    """Owns the pending deque, the forwarding thread and the writer of one engine.

    The hot path appends one tuple per read or write syscall (its framed bytes, as they
    crossed the port) to a deque: no lock, no wake-up, no formatting. A thread polls the
    deque and forwards what accumulated, as pipe records in one write, to a writer process
    (`python -m bridge.record.writer`, at idle CPU priority), which splits, scrubs, formats,
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
        # `ignore`: JSON paths replay should not compare (dspex serve passes its config's
        # record_ignore, read from DSPEX_RECORD_IGNORE; in-process callers pass their own).
        header = make_header(mode=engine.config.mode, worker_id=engine.worker_id,
                             argv=list(engine.config.argv), ignore=list(ignore or []))
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
            append((TAP_CODES[direction], now, payload))
            if len(pending) > limit:
                self._make_room()

        def listener(kind: str, data: dict[str, Any]) -> None:
            # Encoded here, on the thread that made the LM call (milliseconds long anyway),
            # so the forwarding thread only joins bytes.
            if kind == "lm_call":
                body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
                append(RECORD.pack(b"l", (time.monotonic() - self.started) * 1000.0, len(body)) + body)

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
                self._process = spawn_writer(self.path)
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
                self._emit([stop_record(self._stopped_ms, self.stopped_reason)])
            if self._unsent:
                self._send_unsent()
            if closing and not pending:
                if not self._end_queued and not self._failed:
                    self._end_queued = True
                    body = orjson.dumps({"ms": self._ended_ms})
                    self._emit([RECORD.pack(b"e", self._ended_ms, len(body)) + body])
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
        pack = RECORD.pack
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
                code, offset_ms, length = RECORD.unpack_from(joined, position)
                position += RECORD.size + length
                groups += self._decoder.decode(code, offset_ms, joined[position - length:position])
            lines = self._formatter.format(groups)
            if lines:
                self.writer.write_lines([lines])
            return
        if len(secrets) != self._sent_secrets:
            body = orjson.dumps(list(secrets))
            records.insert(0, RECORD.pack(b"s", 0.0, len(body)) + body)
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


__all__ = ["Recorder", "start_recording"]
