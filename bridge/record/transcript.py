"""The transcript format: JSON Lines holding one worker's conversation and its LM cassette.

Line 1 is a header (format name and version, versions, mode, worker id, argv, optional
ignore paths). Every later line is an entry with a `type`:

- `frame`: one frame in arrival order: `dir` ("in"/"out"), `ms` (offset from the start)
  and the decoded `frame`; a payload that was not JSON is kept as `raw` (UTF-8 text) or
  `raw_b64` (other bytes) so broken input replays byte for byte.
- `lm_call`: one LM call made while serving (the cassette): `key` (stable hash of the
  normalised request), `request_id`, `request`, `response` or `error`.
- `end`: the last line, with the counts and `complete`: true when the recording was
  closed cleanly; false (with a `reason`, and `recorded_until_ms` when recording stopped
  early) when the worker died first, the writer fell behind or ran out of time. Absent
  only when the writer process itself was killed; transcripts of older versions have no
  `complete` field and an end line only on a clean close.

Writers flush every line, and readers accept a torn last line, so a killed worker still
leaves a usable transcript. Readers stream: nothing ever loads a whole file.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

FORMAT_NAME = "dspex-transcript"
FORMAT_VERSION = 1

# Prefixes written by TranscriptWriter; readers use them to skip lines cheaply.
FRAME_PREFIX = b'{"type":"frame"'
LM_CALL_PREFIX = b'{"type":"lm_call"'


# The start of a frame line as TranscriptWriter lays it out, up to the frame itself.
FRAME_ENVELOPE = re.compile(rb'\{"type":"frame","dir":"(?:in|out)","ms":-?[0-9.eE+]+,"frame":')
# The same start, to be filled with the offset in ms, for writers that put a payload that
# is already compact JSON into a line as it is (the recorder); the line ends with b"}\n".
FRAME_LINE_PREFIXES = {direction: b'{"type":"frame","dir":"%s","ms":%%.3f,"frame":' % direction.encode()
                       for direction in ("in", "out")}


class TranscriptError(Exception):
    """A transcript that cannot be read or replayed: names the file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FrameEntry:
    """One recorded frame; `frame` is the decoded JSON, or None when `raw` holds bytes."""

    direction: str
    offset_ms: float
    frame: Any
    raw: bytes | None
    line: int

    @property
    def decoded(self) -> bool:
        return self.raw is None

    def payload(self) -> bytes:
        """The frame's bytes as the worker received or sent them."""
        return self.raw if self.raw is not None else orjson.dumps(self.frame)


@dataclass(frozen=True)
class LMCallEntry:
    """One cassette entry."""

    record: dict[str, Any]
    line: int

    @property
    def key(self) -> str | None:
        return self.record.get("key")


@dataclass(frozen=True)
class EndEntry:
    record: dict[str, Any]
    line: int

    @property
    def complete(self) -> bool:
        """Whether the transcript holds the whole conversation (older end lines have no
        `complete` field and were written only on a clean close)."""
        return self.record.get("complete", True) is not False


Entry = FrameEntry | LMCallEntry | EndEntry


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _dumps_lenient(value: Any) -> bytes:
    """Like _dumps, but values JSON cannot hold become their repr instead of failing."""
    try:
        return _dumps(value)
    except TypeError:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS)


def make_header(*, mode: str, worker_id: str | None, argv: list[str], ignore: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header of a new transcript for a worker with these settings."""
    from ..system import versions

    now = time.time()
    header: dict[str, Any] = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "created_at_epoch": now, "versions": versions(), "mode": mode,
        "worker_id": worker_id, "argv": list(argv), "pid": os.getpid(),
    }
    if ignore:
        header["ignore"] = list(ignore)
    if extra:
        header.update(extra)
    return header


def frame_line(direction: str, offset_ms: float, frame: Any = None, raw: bytes | None = None) -> dict[str, Any]:
    """The entry for one frame; undecodable payloads keep their bytes."""
    entry: dict[str, Any] = {"type": "frame", "dir": direction, "ms": round(offset_ms, 3)}
    if raw is None:
        entry["frame"] = frame
    else:
        try:
            entry["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_b64"] = base64.b64encode(raw).decode("ascii")
    return entry


class TranscriptWriter:
    """Writes a transcript line by line, flushing each, so a killed writer loses nothing.

    Callers hand it data that is already scrubbed of secrets (the recorder does that);
    the writer only formats and persists.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *, exclusive: bool = False,
                 append: bool = False) -> None:
        """A new transcript starting with `header`; with append=True, continue one
        whose header is already written (`header` is then ignored)."""
        self.path = str(path)
        header = dict(header)
        header.setdefault("format", FORMAT_NAME)
        header.setdefault("version", FORMAT_VERSION)
        self.header = header
        self.frames = 0
        self.lm_calls = 0
        mode = "ab" if append else ("xb" if exclusive else "wb")
        self._file: IO[bytes] | None = open(self.path, mode, buffering=1 << 16)
        if not append:
            self._write(header)

    def detach(self) -> None:
        """Flushes and closes without an end line (another writer carries on, or the
        recording ended without a clean close)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"transcript {self.path} is closed")
        self._file.write(_dumps_lenient(entry) + b"\n")

    def write_entry(self, entry: dict[str, Any], flush: bool = True) -> None:
        """Writes a prepared entry (frame_line output or an lm_call record)."""
        kind = entry.get("type")
        if kind == "frame":
            self.frames += 1
        elif kind == "lm_call":
            self.lm_calls += 1
        self._write(entry)
        if flush:
            self.flush()

    def encode_entry(self, entry: dict[str, Any]) -> bytes:
        """One entry as a finished line, for write_lines (counts it as written)."""
        kind = entry.get("type")
        if kind == "frame":
            self.frames += 1
        elif kind == "lm_call":
            self.lm_calls += 1
        return _dumps_lenient(entry) + b"\n"

    def write_lines(self, lines: list[bytes]) -> None:
        """Writes finished lines in one go and flushes."""
        if self._file is None:
            raise ValueError(f"transcript {self.path} is closed")
        self._file.write(b"".join(lines))
        self._file.flush()

    def frame(self, direction: str, offset_ms: float, frame: Any, *, raw: bytes | None = None,
              flush: bool = True) -> None:
        """One frame: `frame` decoded, or `raw` bytes for a payload that was not JSON."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        self.write_entry(frame_line(direction, offset_ms, frame, raw), flush)

    def lm_call(self, record: dict[str, Any], flush: bool = True) -> None:
        """One cassette entry from an engine lm_call record."""
        entry = {"type": "lm_call"}
        entry.update({k: v for k, v in record.items() if k != "type"})
        self.write_entry(entry, flush)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, footer: dict[str, Any] | None = None) -> None:
        """Writes the end line (counts) and closes; safe to call twice."""
        if self._file is None:
            return
        end = {"type": "end", "frames": self.frames, "lm_calls": self.lm_calls}
        if footer:
            end.update(footer)
        self._write(end)
        self._file.close()
        self._file = None

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def request_key(normalised: dict[str, Any]) -> str:
    """The cassette key of an external call: a stable hash of its normalised request (the
    same request gives the same key on any machine; adapters normalise before calling)."""
    import hashlib

    data = orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()[:32]


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FRAME_LINE_PREFIXES", "FRAME_PREFIX", "LM_CALL_PREFIX", "EndEntry",
           "Entry", "FrameEntry", "LMCallEntry", "TranscriptError", "TranscriptWriter", "frame_line", "make_header",
           "request_key", "transcript_file_for"]
