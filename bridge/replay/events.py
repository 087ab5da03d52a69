"""Events and callbacks in a replay.

A transcript of a two-way session holds, besides requests and replies, the events the
worker sent (`{"id", "event", "data"}`) and the client's answers to callbacks
(`{"callback_id", "result"|"error"}`). Replaying it, the recorded answers are not sent
again as they stand (callback ids are the worker's own and differ between runs): each
callback the replayed worker sends is answered with the recorded answer of the same
request, kind, name and arguments, in recorded order, so a session whose tools lived in
the client replays offline. Events are compared per request, by what is stable between
runs: chunk deltas joined per field (a model may split its text differently), callbacks
as the set of (kind, name, args) asked, and every other event type by its count.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from typing import Any

import orjson

from .results import Mismatch

# What a replay answers a callback with when the transcript holds no answer for it: an
# error the program sees (as the client's own error would be), never a hang.
NOT_RECORDED = "this callback is not in the transcript (the replayed program asked something the recording did not)"


def is_event(frame: Any) -> bool:
    return type(frame) is dict and "event" in frame and "success" not in frame


def is_callback_answer(frame: Any) -> bool:
    return type(frame) is dict and "callback_id" in frame and "command" not in frame


def _key(rid: Any, data: dict[str, Any]) -> bytes:
    return orjson.dumps([rid, data.get("kind"), data.get("name"), data.get("args")], option=orjson.OPT_SORT_KEYS)


class CallbackAnswers:
    """The recorded answers, by (request id, kind, name, args), each list in recorded order."""

    def __init__(self, frames: Any) -> None:
        asked: dict[str, bytes] = {}
        self._answers: dict[bytes, deque[dict[str, Any]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.recorded = 0
        self.answered = 0
        self.unknown: list[dict[str, Any]] = []
        for direction, frame, *_ in frames:
            if direction == "out" and is_event(frame) and frame.get("event") == "callback":
                data = frame.get("data")
                if isinstance(data, dict) and isinstance(data.get("callback_id"), str):
                    asked[data["callback_id"]] = _key(frame.get("id"), data)
            elif direction == "in" and is_callback_answer(frame):
                key = asked.get(frame["callback_id"]) if isinstance(frame["callback_id"], str) else None
                if key is not None:  # an answer to nothing (stray) was never part of the session
                    self._answers[key].append({k: frame[k] for k in ("result", "error") if k in frame})
                    self.recorded += 1

    def answer_for(self, rid: Any, data: dict[str, Any]) -> bytes:
        """The answer frame to send for a callback event the replayed worker sent."""
        with self._lock:
            queue = self._answers.get(_key(rid, data))
            recorded = queue.popleft() if queue else None
            if recorded is None:
                self.unknown.append({"request_id": rid, "kind": data.get("kind"), "name": data.get("name"),
                                     "args": data.get("args")})
            else:
                self.answered += 1
        return orjson.dumps({"callback_id": data.get("callback_id"), **(recorded or {"error": NOT_RECORDED})})


def mentions(path: str, marker: bytes) -> bool:
    """Whether a file holds these bytes anywhere (a fast look before a second read)."""
    import mmap

    with open(path, "rb") as handle:
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return data.find(marker) >= 0
        except ValueError:  # an empty file
            return False


def summarize_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What is compared of one request's events."""
    chunks: dict[str, str] = {}
    callbacks: list[bytes] = []
    counts: Counter[str] = Counter()
    for event in events:
        kind, data = event.get("event"), event.get("data")
        data = data if isinstance(data, dict) else {}
        if kind == "chunk":
            field = str(data.get("field"))
            chunks[field] = chunks.get(field, "") + str(data.get("delta") or "")
        elif kind == "callback":
            callbacks.append(orjson.dumps([data.get("kind"), data.get("name"), data.get("args")],
                                          option=orjson.OPT_SORT_KEYS))
        else:
            counts[str(kind)] += 1
    return {"chunks": chunks, "callbacks": sorted(c.decode() for c in callbacks), "counts": dict(sorted(counts.items()))}


class EventLog:
    """Recorded and replayed events, per request id."""

    def __init__(self) -> None:
        self.expected: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.actual: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()

    def expect(self, frame: dict[str, Any]) -> None:
        self.expected[frame.get("id")].append(frame)

    def arrived(self, frame: dict[str, Any]) -> None:
        with self._lock:
            self.actual[frame.get("id")].append(frame)

    def mismatches(self, commands: dict[Any, str | None]) -> list[Mismatch]:
        found: list[Mismatch] = []
        with self._lock:
            rids = list(dict.fromkeys([*self.expected, *self.actual]))
            for rid in rids:
                if rid not in commands:  # events of a request the transcript does not resend
                    continue
                want = summarize_events(self.expected.get(rid, []))
                got = summarize_events(self.actual.get(rid, []))
                for part in ("chunks", "callbacks", "counts"):
                    if want[part] != got[part]:
                        found.append(Mismatch(rid, commands.get(rid), f"events.{part}", want[part], got[part],
                                              "event"))
        return found


__all__ = ["CallbackAnswers", "EventLog", "NOT_RECORDED", "is_callback_answer", "is_event", "mentions", "summarize_events"]
