"""`--update`: writing a replay's replies (and a live replay's LM calls) back into the transcript.

Only the reply lines that differ are re-encoded; every other line (the header, requests,
the cassette, the end line) is copied byte for byte, so a re-recorded file's diff shows
only real changes. The file is replaced atomically: a crash leaves the old one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import orjson

from ..redact import redact
from ..record.transcript import TranscriptError


def usable_id(value: Any) -> bool:
    """Whether a frame's id can name a reply (a scalar, not null)."""
    return value is not None and not isinstance(value, (dict, list))


def rewrite_transcript(path: str, rewrites: dict[tuple[Any, int], Any], new_lm_calls: list[dict[str, Any]]) -> bool:
    """Rewrites `path` in place. `rewrites` maps (reply id, occurrence) to the reply to
    record; `new_lm_calls`, when not empty, replace the cassette. Returns whether the
    file changed. Raises TranscriptError when the file changed while it was replayed."""
    if not rewrites and not new_lm_calls:
        return False
    from ..record.scrubbing import scrub_lm_call

    temp = f"{path}.tmp-{os.getpid()}"
    seen: dict[Any, int] = defaultdict(int)
    end_line: bytes | None = None
    try:
        with open(path, "rb") as source, open(temp, "wb") as out:
            out.write(source.readline())
            for raw in source:
                if not raw.strip():
                    continue
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    if not raw.endswith(b"\n"):
                        continue  # a killed writer's torn last line: replay skipped it too
                    raise TranscriptError(path, None, "changed while it was replayed") from None
                kind = entry.get("type") if type(entry) is dict else None
                if kind == "frame" and entry.get("dir") == "out" and type(entry.get("frame")) is dict:
                    rid = entry["frame"].get("id")
                    if usable_id(rid):
                        seen[rid] += 1
                        replacement = rewrites.get((rid, seen[rid]))
                        if replacement is not None:
                            out.write(frame_line_with(raw, entry, redact(replacement)))
                            continue
                elif kind == "lm_call" and new_lm_calls:
                    continue  # a live replay's calls replace the old cassette
                elif kind == "end":
                    end_line = raw if raw.endswith(b"\n") else raw + b"\n"
                    continue  # kept, after any new cassette entries
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            for record in new_lm_calls:
                out.write(orjson.dumps({"type": "lm_call", **scrub_lm_call(record)},
                                       default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
            if end_line is not None and new_lm_calls:
                end = orjson.loads(end_line)
                if "lm_calls" in end:
                    end["lm_calls"] = len(new_lm_calls)
                    end_line = orjson.dumps(end) + b"\n"
            if end_line is not None:
                out.write(end_line)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return True


def frame_line_with(raw: bytes, entry: dict[str, Any], frame: Any) -> bytes:
    """The transcript line `raw` with its frame replaced, keeping the line's own envelope
    bytes (the recorder's `"ms":12.000`) when the frame is its last key, as recorded."""
    body = orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS)
    marker = raw.find(b',"frame":')
    if marker > 0 and raw.startswith(b'{"type":"frame"') and list(entry)[-1] == "frame":
        return raw[:marker + len(b',"frame":')] + body + b"}\n"
    return orjson.dumps({**entry, "frame": frame}, option=orjson.OPT_NON_STR_KEYS) + b"\n"
