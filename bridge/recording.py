"""The recorder: taps an engine's frames and LM calls and writes them as a transcript.

Recording must not slow serving, so the hot path only appends (direction, monotonic
time, raw payload) to a deque. A thread forwards what accumulated every few
milliseconds, in one write, through a private pipe to a writer process that decodes,
scrubs secrets, formats and writes, flushing each batch of lines, so a worker killed at
any moment leaves a readable transcript. Secrets are scrubbed there, when written,
never later: anything that reaches the file is already clean.
"""

from __future__ import annotations

import fcntl
import logging
import os
from array import array
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .framing import DEFAULT_MAX_FRAME, FrameReader, Oversized, write_all
from .redact import REDACTED, known_secrets, redact, remember_secret, scrub_text
from .transcript import TranscriptWriter, frame_line, make_header

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.record")

# Env: comma-separated JSON paths that replay should not compare for this recording.
IGNORE_ENV = "DSPEX_RECORD_IGNORE"

# In frames that are not JSON the key-name rule still applies, on the text itself.
_SECRET_PAIR = re.compile(
    r'("(?:[^"\\]*(?:key|token|secret|password|authorization|credential)[^"\\]*)"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.I)
_STOP = object()  # never equal to a decoded frame: lets `loads(x) is not _STOP` read as "is JSON"
# Anything in a payload that redaction could change: secret-like key names, key shapes;
# and raw line breaks, which a JSON Lines line cannot hold. A frame without any of these
# (and without a registered secret value) is written as the bytes it arrived as, skipping
# decode, redact and encode: most frames, every ping among them. Plain substring tests on
# the lowered bytes run at memory speed, unlike one case-insensitive regex.
# Prefixes stand for their families (b"xox" for xoxa-/xoxb-/xoxp-, b"authori" for both
# spellings): each search is a pass over the batch, so fewer is faster, and a rare false
# alarm only sends that batch down the careful path.
_MARKERS = (b"key", b"token", b"secret", b"passw", b"authori", b"credential", b"sk-", b"aiza",
            b"xox", b"gh", b"bearer", b"\n", b"\r")


_IN_LINE = b'{"type":"frame","dir":"in","ms":%.3f,"frame":%s}\n'
_OUT_LINE = b'{"type":"frame","dir":"out","ms":%.3f,"frame":%s}\n'


def clean_as_is(payload: bytes, secrets: tuple[bytes, ...]) -> bool:
    """Whether a payload can go into the transcript byte for byte (nothing to scrub, one line)."""
    lowered = payload.lower()
    for marker in _MARKERS:
        if marker in lowered:
            return False
    for secret in secrets:
        if secret in payload:
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


def _format_clean(item: tuple[str, float, Any]) -> bytes:
    kind, offset_ms, data = item
    return (_IN_LINE if kind == "in" else _OUT_LINE) % (offset_ms, data)


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


class BatchFormatter:
    """Turns batches of (kind, offset_ms, data) into scrubbed transcript lines.

    kind is "in"/"out" (data: the raw payload) or "lm" (data: an engine lm_call record).
    """

    def __init__(self, writer: TranscriptWriter) -> None:
        self.writer = writer
        self.secrets: tuple[bytes, ...] = ()

    def chunk_lines(self, direction: str, offset_ms: float, payloads: list[bytes]) -> list[bytes]:
        """Lines for the frames of one read or one reply batch (one direction, one time)."""
        if not payloads:
            return []
        # Replies were encoded by the engine with orjson, so only requests need the JSON check.
        if clean_as_is(b"\x00".join(payloads), self.secrets) and (direction == "out" or _all_json(payloads)):
            # The usual case: one prefix for the whole chunk, one concatenation per frame.
            prefix = (_IN_LINE if direction == "in" else _OUT_LINE).split(b"%s")[0] % offset_ms
            self.writer.frames += len(payloads)
            return [prefix + payload + b"}\n" for payload in payloads]
        return self.lines([(direction, offset_ms, payload) for payload in payloads])

    def lines(self, batch: list[tuple[str, float, Any]]) -> list[bytes]:
        secrets = self.secrets
        writer = self.writer
        frames = [item[2] for item in batch if item[0] != "lm"]
        # One search over the whole batch: usually nothing in it needs scrubbing.
        batch_clean = clean_as_is(b"\x00".join(frames), secrets) if frames else False
        lines: list[bytes] = []
        append = lines.append
        loads = orjson.loads
        if batch_clean and len(frames) == len(batch) and _all_json(frames):
            # The common case, kept to C-level loops: nothing to scrub, no LM call, and
            # every frame proven JSON by one parse of the whole batch.
            writer.frames += len(batch)
            return list(map(_format_clean, batch))
        for kind, offset_ms, data in batch:
            try:
                if kind == "lm":
                    entry = scrub_lm_call(data)
                    append(writer.encode_entry({"type": "lm_call", "ms": round(offset_ms, 3), **entry}))
                    continue
                if batch_clean or clean_as_is(data, secrets):
                    try:
                        if kind == "out" or loads(data) is not _STOP:
                            writer.frames += 1
                            append((_IN_LINE if kind == "in" else _OUT_LINE) % (offset_ms, data))
                            continue
                    except orjson.JSONDecodeError:
                        pass
                frame, raw = scrub_payload(data)
                append(writer.encode_entry(frame_line(kind, offset_ms, frame, raw)))
            except Exception:  # one odd frame must not end the recording
                log.exception("could not record a frame")
        return lines


# The private pipe from a worker to its transcript writer process: records of
# kind (1 byte), offset in ms (float64), length (uint32), body.
_RECORD = struct.Struct(">cdI")
_KINDS = {b"i": "in", b"o": "out", b"l": "lm"}
# Pipe record codes of single frames (b"l" is an LM call); b"I"/b"O" are stream records (framed
# bytes as read or written by the server), b"b" a block of frames, b"s" secrets, b"e" end.
_FRAME_CODES = {"in": b"i", "out": b"o"}


class Recorder:
    """Owns the pending deque, the forwarding thread and the writer of one engine.

    The hot path appends one tuple to a deque (no lock, no wake-up). A thread polls the
    deque and forwards what accumulated, as raw bytes in one write, through a private
    pipe to a writer process (`python -m bridge.recording`), which scrubs, formats,
    writes and flushes on the other core, outside this process's GIL. Secrets cross
    only that pipe, never the disk. If the writer process cannot start, the thread
    formats and writes itself (correct, just dearer for the serving thread).
    """

    POLL_SECONDS = 0.005

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
        self._stream_readers: dict[str, FrameReader] = {}
        self._sent_secrets = 0
        self._pending: deque[Any] = deque()  # stream records (bytes) and (kind, time, data) tuples
        self._stopping = threading.Event()
        self._forward_lock = threading.Lock()
        self._last_forward = time.monotonic()
        self._ready = False
        self._failed = False
        self._closed = False
        append = self._pending.append

        # The hot path: one tuple and one C-level append per frame.
        def tap(direction: str, payload: bytes, now: float) -> None:
            append((direction, now, payload))

        def listener(kind: str, data: dict[str, Any]) -> None:
            # Encoded here, on the thread that made the LM call (milliseconds long anyway),
            # so the forwarding thread only joins bytes.
            if kind == "lm_call":
                body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
                append(_RECORD.pack(b"l", (time.monotonic() - self.started) * 1000.0, len(body)) + body)

        # A server hands over its stream taps: then each read and each write is queued as
        # one ready-made pipe record (framed bytes as they crossed fd 0 or fd 1), so the
        # serving thread does one pack and one append per syscall, whatever it carried;
        # the writer process splits the frames.
        started = self.started
        record_header = _RECORD.pack

        def stream_tap(kind: bytes, data: bytes, now: float) -> None:
            append(record_header(kind, (now - started) * 1000.0, len(data)) + data)

        self._tap = tap
        self._stream_tap = stream_tap
        self._tap_list = engine.frame_taps if stream_taps is None else stream_taps
        self._stream_mode = stream_taps is not None
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="dspex-recorder", daemon=True)
        self._thread.start()
        self._tap_list.append(tap if stream_taps is None else stream_tap)
        engine.listeners.append(listener)

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

    def _run(self) -> None:
        try:
            self._start_writer()
        except OSError as exc:
            self._fail(exc)
        self._ready = True
        stopping = self._stopping
        while True:
            # Forwarding happens here, off the serving thread: when the writer process falls
            # behind, this thread waits on the pipe while serving goes on.
            if self._pending and time.monotonic() - self._last_forward >= self.POLL_SECONDS:
                self._drain()
            elif stopping.is_set():
                if not self._pending:
                    return
                self._drain()
            else:
                stopping.wait(self.POLL_SECONDS)

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

    def _forward(self, batch: list[Any]) -> None:
        """Sends a batch to the writer: stream records (bytes, made by the stream tap) as
        they are, frame and LM-call tuples encoded here."""
        started = self.started
        secrets = known_secrets()
        if self._process is None:
            assert self._formatter is not None
            self._formatter.secrets = tuple(s.encode() for s in secrets)
            lines: list[bytes] = []
            items: list[tuple[str, float, Any]] = []
            for entry in batch:
                if type(entry) is bytes and entry[:1] in (b"l", b"i", b"o"):
                    code, offset_ms, _ = _RECORD.unpack_from(entry)
                    body = entry[_RECORD.size:]
                    items.append((_KINDS[code], offset_ms, orjson.loads(body) if code == b"l" else body))
                elif type(entry) is bytes:
                    lines += self._formatter.lines(items)
                    items = []
                    direction, offset_ms, frames = self._stream_frames(entry)
                    lines += self._formatter.chunk_lines(direction, offset_ms, frames)
                else:
                    kind, now, data = entry
                    items.append((kind, (now - started) * 1000.0, data))
            lines += self._formatter.lines(items)
            if lines:
                self.writer.write_lines(lines)
            return
        pack = _RECORD.pack
        parts: list[bytes] = []
        if len(secrets) != self._sent_secrets:
            body = orjson.dumps(list(secrets))
            parts += (pack(b"s", 0.0, len(body)), body)
            self._sent_secrets = len(secrets)
        # Records (bytes) are ready-made: stream records, and LM calls encoded by the
        # listener. Tuples are single frames from an in-process engine's frame taps.
        if self._stream_mode or not any(type(entry) is tuple for entry in batch):
            parts += batch
        elif all(type(entry) is tuple for entry in batch):
            # Frame taps only: one block built by C-level calls.
            kinds, nows, payloads = zip(*batch)
            kind_text = "".join(kinds).replace("in", "i").replace("out", "o").encode()
            body = b"".join((struct.pack(">I", len(kinds)), kind_text, array("d", nows).tobytes(),
                             array("I", map(len, payloads)).tobytes(), *payloads))
            parts += (pack(b"b", started, len(body)), body)
        else:
            for entry in batch:
                if type(entry) is bytes:
                    parts.append(entry)
                else:
                    kind, now, data = entry
                    parts += (pack(_FRAME_CODES[kind], (now - started) * 1000.0, len(data)), data)
        assert self._process.stdin is not None
        write_all(self._process.stdin.fileno(), b"".join(parts))

    def _stream_frames(self, record: bytes) -> tuple[str, float, list[bytes]]:
        """(direction, offset ms, frames) of one stream record, for in-process formatting."""
        code, offset_ms, _ = _RECORD.unpack_from(record)
        direction = "in" if code == b"I" else "out"
        reader = self._stream_readers.setdefault(direction, FrameReader(DEFAULT_MAX_FRAME))
        frames = [f for f in reader.feed(record[_RECORD.size:]) if not isinstance(f, Oversized)]
        return direction, offset_ms, frames

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
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
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


def _unpack_block(body: bytes, started: float) -> list[tuple[str, float, bytes]]:
    """The frames of one block forwarded by Recorder._forward."""
    (count,) = struct.unpack_from(">I", body, 0)
    position = 4
    kinds = body[position:position + count]
    position += count
    nows = array("d")
    nows.frombytes(body[position:position + 8 * count])
    position += 8 * count
    lengths = array("I")
    lengths.frombytes(body[position:position + 4 * count])
    position += 4 * count
    # Comprehensions and maps rather than one Python loop body per frame: the writer
    # shares two cores with the worker and its client.
    bounds = list(accumulate(lengths, initial=position))
    names = ["in" if code == 105 else "out" for code in kinds]
    offsets_ms = [(now - started) * 1000.0 for now in nows]
    payloads = map(body.__getitem__, map(slice, bounds[:-1], bounds[1:]))
    return list(zip(names, offsets_ms, payloads))


def run_writer_process(path: str, fd: int = 0) -> int:
    """The writer process: reads records from the worker's pipe until it closes.

    Lines are written and flushed per read, so the file trails the worker by
    milliseconds; the end line is written only when the worker closed cleanly.
    """
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
    writer = TranscriptWriter(path, {}, append=True)
    formatter = BatchFormatter(writer)
    buffer = bytearray()
    header_size = _RECORD.size
    # Each direction's stream is split into frames as the server split it.
    streams = {b"I": ("in", FrameReader(DEFAULT_MAX_FRAME)), b"O": ("out", FrameReader(DEFAULT_MAX_FRAME))}
    footer: dict[str, Any] | None = None
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buffer += chunk
        batch: list[tuple[str, float, Any]] = []
        start = 0
        end = len(buffer)
        while end - start >= header_size:
            code, offset_ms, length = _RECORD.unpack_from(buffer, start)
            if end - start - header_size < length:
                break
            body = bytes(buffer[start + header_size:start + header_size + length])
            start += header_size + length
            if code == b"b":
                batch.extend(_unpack_block(body, offset_ms))
            elif code in streams:
                if batch:  # keep the order of lines: what came before this chunk goes first
                    writer.write_lines(formatter.lines(batch))
                    batch = []
                direction, reader = streams[code]
                frames = [f for f in reader.feed(body) if not isinstance(f, Oversized)]
                writer.write_lines(formatter.chunk_lines(direction, offset_ms, frames))
            elif code == b"s":
                formatter.secrets = tuple(s.encode() for s in orjson.loads(body))
                for secret in orjson.loads(body):
                    remember_secret(secret)
            elif code == b"e":
                footer = orjson.loads(body)
            elif code == b"l":
                batch.append(("lm", offset_ms, orjson.loads(body)))
            else:
                batch.append((_KINDS[code], offset_ms, body))
        del buffer[:start]
        if batch:
            writer.write_lines(formatter.lines(batch))
    if footer is not None:
        writer.close(footer)
    else:
        writer.detach()
    return 0


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
    raise SystemExit(run_writer_process(sys.argv[1]))


__all__ = ["IGNORE_ENV", "BatchFormatter", "run_writer_process", "Recorder", "scrub_lm_call", "scrub_payload", "start_recording", "transcript_file_for"]
