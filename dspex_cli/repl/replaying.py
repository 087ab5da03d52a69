"""`:replay FILE`: a transcript's requests, replayed where they cannot hurt anything.

A transcript holds whatever its recording did, `cleanup`, `reset_state` and `shutdown`
included, so it never runs in the console's own state:
  in-process   a scratch Engine (the console's engine and its programs are untouched);
  --spawn      a scratch worker started with the same command;
  --attach     a scratch `dspex serve`; only `:replay FILE --into-attached`, confirmed,
               sends it into the live worker, and even then no destructive command
               reaches anything the replay did not create itself (see IntoAttached).
LM calls are answered from the transcript's cassette. Progress (replies / requests)
shows while it runs. The scratch engine and worker are replay's own targets
(bridge/replay/targets.py); this module adds only what a console needs around them.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .guard import Refused, is_destructive
from .parsing import ParseError, registry, split_words

if TYPE_CHECKING:
    from .shell import Shell

Send = Callable[[bytes], None]
INTO_ATTACHED = "--into-attached"
SKIPPED = "skipped_by_console"


class Progress:
    """Counts replies as they arrive (from any thread) and shows `done/total`."""

    def __init__(self, shell: Shell, name: str, total: int) -> None:
        self.shell = shell
        self.name = name
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self.show()

    def show(self, final: bool = False) -> None:
        report = getattr(self.shell.out, "progress", None)
        if report is not None:
            report(f"replay {self.name}", min(self.done, self.total), self.total, final)

    def reply(self) -> None:
        with self._lock:
            self.done += 1
        self.show()


class IntoAttached:
    """Replays into a live worker without harming what was there before.

    A destructive command (from the registry) is not sent when it acts on the whole
    worker (`shutdown`, `cleanup`, `reset_state`: no session argument), nor when it names
    a session that existed before the replay (`cleanup_session`, `delete_program`): it
    gets a `skipped_by_console` reply, so the replay shows it as a difference.
    """

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.skipped: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        reply = shell.target.submit({"id": "replay-sessions", "command": "list_sessions", "args": {}}).result(30)
        if not reply.get("success"):
            raise ParseError(f"Cannot list the attached worker's sessions: {reply.get('error')}",
                             "the replay needs them to know which sessions it may clean up")
        self.existing = {"anonymous"} | {str(s.get("session_id")) for s in reply["result"].get("sessions") or []}

    def _refusal(self, frame: dict[str, Any]) -> str | None:
        command = frame.get("command")
        if not isinstance(command, str) or command not in registry():
            return None
        spec = registry().get(command)
        if not is_destructive(spec):
            return None
        args = frame.get("args") if isinstance(frame.get("args"), dict) else {}
        if "session_id" not in spec.arg_names:
            return f"{spec.name} acts on the whole attached worker"
        session = str(args.get("session_id") or "anonymous")
        if session in self.existing:
            return f"{spec.name} would touch session {session}, which the replay did not create"
        return None

    def submit(self, payload: bytes, send: Send) -> None:
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # an undecodable recorded frame: the live worker does not need to see it
        if not isinstance(frame, dict):
            return
        reason = self._refusal(frame)
        if reason is not None:
            with self._lock:
                self.skipped.append({"id": frame.get("id"), "command": frame.get("command"), "reason": reason})
            send(orjson.dumps({"id": frame.get("id"), "success": False, "error_type": SKIPPED,
                               "error": f"not sent: {reason}", "timestamp": time.time()}))
            return

        def deliver(done: Any) -> None:
            send(orjson.dumps(done.result(), default=str))

        self.shell.target.submit({"id": frame.get("id"), "command": frame.get("command"),
                                  "args": frame.get("args") or {}}).add_done_callback(deliver)

    def close(self) -> None:
        pass


def scratch_worker_argv(shell: Shell, header: dict[str, Any]) -> list[str]:
    """The worker command a replay spawns: the console's own --spawn command, else `dspex serve`."""
    from bridge.replay import expand_worker_argv

    from .targets import SpawnTarget

    if isinstance(shell.target, SpawnTarget):
        return list(shell.target.argv)
    return expand_worker_argv([sys.executable, "-m", "dspex_cli", "serve", "{args}"], header)


def parse_replay_argument(argument: str) -> tuple[Path, bool]:
    words = split_words(argument)
    into_attached = INTO_ATTACHED in words
    words = [w for w in words if w != INTO_ATTACHED]
    if len(words) != 1:
        raise ParseError(":replay needs one transcript file", f":replay session.jsonl  (or FILE {INTO_ATTACHED})")
    path = Path(words[0]).expanduser()
    if not path.is_file():
        raise ParseError(f"No such transcript: {path}", "give the path of a .jsonl transcript")
    return path, into_attached


def run_replay(shell: Shell, argument: str) -> None:
    path, into_attached = parse_replay_argument(argument)
    try:
        from bridge.replay import WorkerStartFailed, replay_transcript
        from bridge.record.reader import read_transcript, summarize
        from bridge.record.transcript import TranscriptError
    except ImportError:
        raise ParseError("Replay is not available in this installation",
                         "it needs bridge.replay (the record/replay feature)") from None
    if into_attached:
        if not shell.attached():
            raise ParseError(f"{INTO_ATTACHED} is for a console attached to a worker",
                             "without it, :replay runs in a scratch engine")
        if shell.read_only:
            raise Refused(f"Read-only console: {INTO_ATTACHED} would change the worker",
                          "drop --into-attached to replay in a scratch worker")
        question = (f"You're about to replay {path.name} into the attached worker {shell.target.label()}; "
                    "its own sessions are not cleaned up and it is not shut down. Do you want to proceed?")
        if not shell.ask_confirmation(question):
            raise Refused("Replay into the attached worker not confirmed, nothing was sent",
                          "answer y, start the console with --yes, or replay without --into-attached")
    try:
        total = summarize(str(path)).frames_in
        transcript = read_transcript(str(path))
    except TranscriptError as exc:
        raise ParseError(f"Cannot replay {path}: {exc}",
                         "check it is a transcript written by `dspex serve --record` or :record") from None
    progress = Progress(shell, path.name, total)
    skipped: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        # The targets are replay's own (bridge/replay/targets.py): a scratch engine built
        # from the transcript's header, or a scratch worker answering LM calls from the
        # cassette; only the replay into the attached worker goes through the console.
        if into_attached:
            into = IntoAttached(shell)
            where = f"attached worker {shell.target.label()}"
            result = replay_transcript(str(path), submit=into.submit, on_reply=progress.reply)
            skipped = into.skipped
        elif shell.attached() or shell.target.kind == "spawn":
            where = "a scratch worker"
            result = replay_transcript(str(path), worker_argv=scratch_worker_argv(shell, transcript.header),
                                       on_reply=progress.reply)
        else:
            where = "a scratch engine"
            result = replay_transcript(str(path), on_reply=progress.reply)
    except (ParseError, KeyboardInterrupt):
        raise
    except WorkerStartFailed as exc:
        raise ParseError(f"Cannot start a scratch worker: {exc}", "check the --spawn command") from None
    except Exception as exc:
        raise ParseError(f"Cannot replay {path}: {exc}",
                         "check it is a transcript written by `dspex serve --record` or :record") from None
    finally:
        progress.show(final=True)
    shell.out.data("replay", {"file": str(path), "ok": bool(result.ok), "error": result.error,
                              "requests": result.requests, "replies": progress.done, "total": total,
                              "where": where, "skipped": skipped,
                              "mismatches": [m.to_dict() for m in result.mismatches],
                              "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
    if not result.ok:
        shell.failures += 1
