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
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

FORMAT_NAME = "dspex-transcript"
FORMAT_VERSION = 1

# Prefixes written by TranscriptWriter; readers use them to skip lines cheaply.
FRAME_PREFIX = b'{"type":"frame"'
LM_CALL_PREFIX = b'{"type":"lm_call"'


# The start of a frame line as TranscriptWriter lays it out, up to the frame itself.
_ENVELOPE = re.compile(rb'\{"type":"frame","dir":"(?:in|out)","ms":-?[0-9.eE+]+,"frame":')
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
    from .system import versions

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


def _check_header(path: str, header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise TranscriptError(path, 1, f"not a dspex transcript (first line lacks \"format\": \"{FORMAT_NAME}\")")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TranscriptError(path, 1, f"header has no integer format version (got {version!r})")
    if version > FORMAT_VERSION:
        raise TranscriptError(path, 1, f"format version {version} is newer than this dspex reads "
                                       f"({FORMAT_VERSION}); upgrade dspex to replay it")
    if version < 1:
        raise TranscriptError(path, 1, f"unknown format version {version}")
    ignore = header.get("ignore")
    if ignore is not None and (not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore)):
        raise TranscriptError(path, 1, "header 'ignore' must be a list of JSON path strings")
    return header


def parse_entry(path: str, number: int, obj: Any) -> Entry:
    """Validates one decoded line into an entry; anything malformed is a TranscriptError."""
    if not isinstance(obj, dict):
        raise TranscriptError(path, number, f"line is a JSON {type(obj).__name__}, not an object")
    kind = obj.get("type")
    if kind == "frame":
        direction = obj.get("dir")
        if direction not in ("in", "out"):
            raise TranscriptError(path, number, f"frame has no valid 'dir' (got {direction!r})")
        offset = obj.get("ms")
        if not isinstance(offset, (int, float)) or isinstance(offset, bool):
            raise TranscriptError(path, number, "frame has no numeric 'ms' offset")
        if "frame" in obj:
            return FrameEntry(direction, float(offset), obj["frame"], None, number)
        if isinstance(obj.get("raw"), str):
            return FrameEntry(direction, float(offset), None, obj["raw"].encode("utf-8"), number)
        if isinstance(obj.get("raw_b64"), str):
            try:
                raw = base64.b64decode(obj["raw_b64"], validate=True)
            except ValueError:
                raise TranscriptError(path, number, "frame's 'raw_b64' is not valid base64") from None
            return FrameEntry(direction, float(offset), None, raw, number)
        raise TranscriptError(path, number, "frame entry holds neither 'frame' nor 'raw'/'raw_b64'")
    if kind == "lm_call":
        if not isinstance(obj.get("key"), (str, type(None))):
            raise TranscriptError(path, number, "lm_call 'key' must be a string")
        request = obj.get("request")
        if request is not None and not isinstance(request, dict):
            raise TranscriptError(path, number, "lm_call 'request' must be an object")
        response = obj.get("response")
        if response is not None and not isinstance(response, dict):
            raise TranscriptError(path, number, "lm_call 'response' must be an object or null")
        return LMCallEntry(obj, number)
    if kind == "end":
        return EndEntry(obj, number)
    raise TranscriptError(path, number, f"unknown entry type {kind!r}")


class Transcript:
    """A transcript opened for streaming: the header is read at once, entries on demand.

    Iterating (or `entries()`) reads the file from the top each time, line by line. A
    torn last line (no newline and not JSON, as a killed writer leaves it) is skipped and
    noted in `torn`; any other bad line raises TranscriptError naming file and line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.torn = False
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
        except FileNotFoundError:
            raise TranscriptError(self.path, None, "no such file") from None
        except IsADirectoryError:
            raise TranscriptError(self.path, None, "is a directory, not a transcript") from None
        except OSError as exc:
            raise TranscriptError(self.path, None, f"cannot read: {exc.strerror or exc}") from None
        if not first.strip():
            raise TranscriptError(self.path, 1, "empty file, not a transcript")
        try:
            header = orjson.loads(first)
        except orjson.JSONDecodeError:
            raise TranscriptError(self.path, 1, "first line is not JSON (not a dspex transcript?)") from None
        self.header: dict[str, Any] = _check_header(self.path, header)

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def ignore(self) -> list[str]:
        return list(self.header.get("ignore") or [])

    def _lines(self) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, bytes, is_last_without_newline) for every line after the header."""
        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            raise TranscriptError(self.path, None, f"cannot read: {exc.strerror or exc}") from None
        with handle:
            handle.readline()
            number = 1
            for raw in handle:
                number += 1
                yield number, raw, not raw.endswith(b"\n")

    def entries(self, skip_frames: bool = False, skip_lm_calls: bool = False) -> Iterator[Entry]:
        """Every entry in file order (optionally skipping kinds without decoding them)."""
        path = self.path
        for number, raw, unterminated in self._lines():
            if skip_frames and raw.startswith(FRAME_PREFIX):
                continue
            if skip_lm_calls and raw.startswith(LM_CALL_PREFIX):
                continue
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if unterminated:
                    self.torn = True  # a killed writer's half line: everything before it stands
                    return
                raise TranscriptError(path, number, f"corrupt line (not JSON: {exc})") from None
            entry = parse_entry(path, number, obj)
            if skip_frames and isinstance(entry, FrameEntry):
                continue
            if skip_lm_calls and isinstance(entry, LMCallEntry):
                continue
            yield entry

    def replay_frames(self) -> Iterator[tuple[str, Any, bytes | None, int, bytes | None]]:
        """The frames only, as (dir, frame, raw, line, frame_bytes), for the replay loop.

        Same validation as entries(), minus the per-line objects; `frame_bytes` are the
        frame's own bytes cut out of the line when the writer's layout allows it, so a
        request is not encoded again.
        """
        loads = orjson.loads
        envelope = _ENVELOPE.match
        for number, raw, unterminated in self._lines():
            if raw.startswith(LM_CALL_PREFIX):
                continue
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:
                if not raw.strip():
                    continue
                if unterminated:
                    self.torn = True  # a killed writer's half line
                    return
                raise TranscriptError(self.path, number, f"corrupt line (not JSON: {exc})") from None
            if type(obj) is dict and obj.get("type") == "frame" and "frame" in obj:
                direction = obj.get("dir")
                if (direction == "in" or direction == "out") and type(obj.get("ms")) in (int, float):
                    frame_bytes = None
                    head = envelope(raw)
                    if head is not None:
                        body = raw.rstrip()
                        if body.endswith(b"}"):
                            frame_bytes = body[head.end():-1]
                    yield direction, obj["frame"], None, number, frame_bytes
                    continue
            entry = parse_entry(self.path, number, obj)
            if isinstance(entry, FrameEntry):
                yield entry.direction, entry.frame, entry.raw, number, None

    def __iter__(self) -> Iterator[Entry]:
        return self.entries()

    def frames(self) -> Iterator[FrameEntry]:
        for entry in self.entries(skip_lm_calls=True):
            if isinstance(entry, FrameEntry):
                yield entry

    def lm_calls(self) -> Iterator[LMCallEntry]:
        for entry in self.entries(skip_frames=True):
            if isinstance(entry, LMCallEntry):
                yield entry


def read_transcript(path: str | os.PathLike[str]) -> Transcript:
    """Opens a transcript for streaming; raises TranscriptError if it is not a readable one."""
    return Transcript(path)


@dataclass
class TranscriptSummary:
    """Counts gathered in one streaming pass (for listings and checks)."""

    path: str
    header: dict[str, Any]
    frames_in: int = 0
    frames_out: int = 0
    lm_calls: int = 0
    complete: bool = False  # an end line says the whole conversation is here
    incomplete_reason: str | None = None
    torn: bool = False
    sessions: set[str] = field(default_factory=set)


def summarize(path: str | os.PathLike[str]) -> TranscriptSummary:
    """Reads a whole transcript once (streaming) and counts what it holds."""
    transcript = read_transcript(path)
    summary = TranscriptSummary(transcript.path, transcript.header)
    for entry in transcript:
        if isinstance(entry, FrameEntry):
            if entry.direction == "in":
                summary.frames_in += 1
                frame = entry.frame
                if isinstance(frame, dict) and isinstance(frame.get("args"), dict):
                    summary.sessions.add(str(frame["args"].get("session_id") or "anonymous"))
            else:
                summary.frames_out += 1
        elif isinstance(entry, LMCallEntry):
            summary.lm_calls += 1
        else:
            summary.complete = entry.complete
            summary.incomplete_reason = None if entry.complete else str(entry.record.get("reason") or "unknown")
    summary.torn = transcript.torn
    return summary


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FRAME_LINE_PREFIXES", "EndEntry", "Entry", "FrameEntry", "LMCallEntry", "Transcript",
           "TranscriptError", "TranscriptSummary", "TranscriptWriter", "frame_line", "make_header",
           "read_transcript", "summarize"]


def request_key(normalised: dict[str, Any]) -> str:
    """The cassette key of an external call: a stable hash of its normalised request (the
    same request gives the same key on any machine; adapters normalise before calling)."""
    data = orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()[:32]
