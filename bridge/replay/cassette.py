"""The cassette: a transcript's recorded LM answers, given back on replay instead of the network.

Answers are found by the request's key (its redacted form too, since recordings are
scrubbed); a call with no recorded answer raises `CassetteMiss`, whose message names the
closest recorded call and the first place they differ.
"""

from __future__ import annotations

import difflib
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson

from ..redact import redact
from ..record.reader import read_transcript
from ..record.transcript import request_key
from .compare import format_path
from .results import Mismatch

if TYPE_CHECKING:
    from ..engine import Engine


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

