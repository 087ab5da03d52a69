"""Scrubbing what the recorder writes: the marker test that lets clean frames through as
their own bytes, and the careful path (decode, redact, encode) for the rest.

Runs in the writer process (and in the worker only when no writer process could start),
never on the serving thread.
"""

from __future__ import annotations

import logging
from itertools import chain, repeat
from typing import Any

import orjson

from ..redact import SECRET_NAMES, redact, remember_secret, scrub_unparsed
from .transcript import FRAME_LINE_PREFIXES, TranscriptWriter, frame_line

log = logging.getLogger("dspex.record")

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
