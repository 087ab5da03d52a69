"""`dspex inspect FILE.jsonl`: a recorded transcript read once into the data behind its views.

What each recorded command did (created a program, ran one, configured an LM) is read
from the command's effect tags in the registry, never from its name.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

DEFAULT_TRANSCRIPT_LIMIT = 100


def _summary_of(message: Any, direction: str) -> str:
    if not isinstance(message, dict):
        return "" if message is None else str(message)
    if direction == "in":
        return orjson.dumps(message.get("args") or {}, option=orjson.OPT_NON_STR_KEYS).decode()
    if message.get("success") is False:
        return f"{message.get('error_type')}: {message.get('error')}"
    return orjson.dumps(message.get("result"), option=orjson.OPT_NON_STR_KEYS).decode()


def transcript_report(path: str, limit: int = DEFAULT_TRANSCRIPT_LIMIT) -> dict[str, Any]:
    """Reads a transcript once (streaming) into the data behind its views."""
    from bridge.control import cut, describe_lm_call, public
    from bridge.record.reader import read_transcript
    from bridge.record.transcript import EndEntry, FrameEntry, LMCallEntry

    from bridge import catalog
    from bridge.registry import CONFIGURES_LM

    # What each recorded command did is read from its tags in the registry, not its name.
    commands = catalog()
    transcript = read_transcript(path)
    pending: dict[str, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    programs: dict[tuple[str, str], dict[str, Any]] = {}
    timeline: deque[dict[str, Any]] = deque(maxlen=limit)
    lm_calls: deque[dict[str, Any]] = deque(maxlen=limit)
    counts = {"frames_in": 0, "frames_out": 0, "requests": 0, "errors": 0, "lm_calls": 0, "unanswered": 0}
    complete = False
    last_ms = 0.0

    def session(sid: str, at: float) -> dict[str, Any]:
        entry = sessions.get(sid)
        if entry is None:
            entry = sessions[sid] = {"session_id": sid, "requests": 0, "errors": 0, "programs": [], "lm": None,
                                     "first_ms": at, "last_ms": at}
        entry["last_ms"] = at
        return entry

    for entry in transcript:
        if isinstance(entry, EndEntry):
            complete = True
            continue
        if isinstance(entry, LMCallEntry):
            counts["lm_calls"] += 1
            lm_calls.append(describe_lm_call(entry.record, 160))
            continue
        assert isinstance(entry, FrameEntry)
        last_ms = max(last_ms, entry.offset_ms)
        message = entry.frame if entry.decoded else None
        item: dict[str, Any] = {"offset_ms": entry.offset_ms, "direction": entry.direction, "line": entry.line}
        if message is None:
            item["error"] = "not JSON"
            item["summary"] = (entry.raw or b"")[:200].decode("utf-8", "replace")
        elif isinstance(message, dict):
            rid = message.get("id")
            item["id"] = rid
            key = repr(rid)
            if entry.direction == "in":
                counts["requests"] += 1
                command = message.get("command")
                args = message.get("args") if isinstance(message.get("args"), dict) else {}
                sid = str(args.get("session_id") or "anonymous")
                item["command"] = command
                item["session_id"] = sid
                session(sid, entry.offset_ms)["requests"] += 1
                if commands.has_tag(command, CONFIGURES_LM) and args.get("model"):
                    if args.get("session_id"):
                        session(sid, entry.offset_ms)["lm"] = str(args.get("model"))
                pending[key] = {"at": entry.offset_ms, "command": command, "session_id": sid, "args": args}
            else:
                request = pending.pop(key, None)
                item["success"] = message.get("success")
                if message.get("success") is False:
                    counts["errors"] += 1
                    item["error_type"] = message.get("error_type")
                if request is not None:
                    latency = round(entry.offset_ms - request["at"], 3)
                    item["latency_ms"] = latency
                    item["command"] = request["command"]
                    _account(commands, request, message, latency, sessions, programs, session)
        item["summary"] = item.get("summary") or _summary_of(cut(public(message), 200), entry.direction)
        if entry.direction == "in":
            counts["frames_in"] += 1
        else:
            counts["frames_out"] += 1
        timeline.append(item)
    counts["unanswered"] = len(pending)
    program_list = []
    for record in programs.values():
        runs = record.pop("_latencies")
        record["mean_latency_ms"] = round(sum(runs) / len(runs), 3) if runs else None
        program_list.append(record)
    return public({"path": str(path), "header": transcript.header, "complete": complete, "torn": transcript.torn,
                   "duration_ms": last_ms, "counts": counts, "sessions": list(sessions.values()),
                   "programs": program_list, "timeline": list(timeline), "lm_calls": list(lm_calls)})


def _account(commands: Any, request: dict[str, Any], reply: dict[str, Any], latency: float,
             sessions: dict[str, Any], programs: dict[tuple[str, str], dict[str, Any]], session: Any) -> None:
    """Credits a reply to its session and program."""
    from bridge.registry import CREATES_PROGRAM, RUNS_PROGRAM

    sid = request["session_id"]
    args = request["args"]
    ok = reply.get("success") is True
    result = reply.get("result") if isinstance(reply.get("result"), dict) else {}
    if not ok:
        session(sid, request["at"])["errors"] += 1
    command = request["command"]
    if commands.has_tag(command, CREATES_PROGRAM) and ok:
        program_id = str(result.get("program_id") or args.get("id") or args.get("program_id"))
        signature = result.get("signature_def") or args.get("signature")
        programs[(sid, program_id)] = {"session_id": sid, "program_id": program_id,
                                       "program_type": result.get("program_type") or args.get("program_type"),
                                       "signature": signature if isinstance(signature, str) else None,
                                       "execution_count": 0, "error_count": 0, "_latencies": []}
        listed = sessions[sid]["programs"]
        if program_id not in listed:
            listed.append(program_id)
    elif commands.has_tag(command, RUNS_PROGRAM):
        program_id = str(args.get("program_id"))
        record = programs.get((sid, program_id))
        if record is None and not ok:
            return  # most likely a program that never existed; the session counted the error
        if record is None:  # created before the recording started
            record = programs[(sid, program_id)] = {"session_id": sid, "program_id": program_id,
                                                    "program_type": None, "signature": None,
                                                    "execution_count": 0, "error_count": 0, "_latencies": []}
        record["execution_count"] += 1
        record["_latencies"].append(latency)
        if not ok:
            record["error_count"] += 1



__all__ = ["DEFAULT_TRANSCRIPT_LIMIT", "transcript_report"]
