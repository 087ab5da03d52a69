"""What a replay found: each difference (`Mismatch`) and the result of one transcript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass
class Mismatch:
    """One difference between a recorded and a replayed reply (or a missing LM answer).

    `kind`: "value" (differs), "missing" (recorded key absent now), "extra" (new key),
    "no_reply" (no reply came), "lm_miss" (an LM call the cassette cannot answer), "event" (a
    request's events differ), "callback_miss" (a callback the transcript holds no answer for).
    """

    request_id: Any
    command: str | None
    path: str
    expected: Any
    actual: Any
    kind: str = "value"

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "command": self.command, "path": self.path,
                "expected": self.expected, "actual": self.actual, "kind": self.kind}


@dataclass
class ReplayResult:
    """What replaying one transcript found."""

    path: str
    mismatches: list[Mismatch] = field(default_factory=list)
    frames: int = 0
    requests: int = 0
    replies_compared: int = 0
    lm_calls_served: int = 0
    duration_s: float = 0.0
    error: str | None = None
    torn: bool = False
    updated: bool = False
    target: str = "in-process"
    # With update: the differences written into the file (empty when nothing changed).
    updates: list[Mismatch] = field(default_factory=list)
    lm_calls_rerecorded: int = 0
    # The caller's ignore paths that named something in at least one reply.
    ignore_matched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "pass" if not self.mismatches else "fail"

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "ok": self.ok, "frames": self.frames,
                "requests": self.requests, "replies_compared": self.replies_compared,
                "lm_calls_served": self.lm_calls_served, "duration_s": round(self.duration_s, 6),
                "error": self.error, "torn": self.torn, "updated": self.updated, "target": self.target,
                "mismatches": [m.to_dict() for m in self.mismatches],
                "updates": [m.to_dict() for m in self.updates], "lm_calls_rerecorded": self.lm_calls_rerecorded,
                "ignore_matched": list(self.ignore_matched)}

