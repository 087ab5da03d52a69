"""Reading transcripts: streaming, line by line, never a whole file at once.

The header is checked when a transcript is opened; entries are validated as they are
read. A torn last line (as a killed writer leaves it) is skipped and noted.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .transcript import (FRAME_ENVELOPE, FORMAT_NAME, FORMAT_VERSION, FRAME_PREFIX, LM_CALL_PREFIX, EndEntry, Entry,
                         FrameEntry, LMCallEntry, TranscriptError)


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
        envelope = FRAME_ENVELOPE.match
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


__all__ = ["Transcript", "TranscriptSummary", "parse_entry", "read_transcript", "summarize"]
