"""Where the console's requests run: an in-process engine, a spawned worker, a live one.

Every target takes a request dict and returns a Future of the reply dict, so the console
waits the same way on all of them and can stop waiting (Ctrl-C) on any of them. A target
that cannot reach its worker answers with an error reply instead of raising: the console
shows it in red and carries on.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from .control_views import control_lm_calls, socket_of

FrameTap = Callable[[str, dict[str, Any], float], None]
Prelude = Sequence[tuple[dict[str, Any], dict[str, Any]]]


def error_reply(request_id: Any, message: str, error_type: str, suggestion: str | None = None) -> dict[str, Any]:
    """A reply in the engine's shape for failures that happen on the console's side."""
    reply: dict[str, Any] = {"id": request_id, "success": False, "error": message,
                             "error_type": error_type, "timestamp": time.time()}
    if suggestion:
        reply["suggestion"] = suggestion
    return reply


def _resolved(value: dict[str, Any]) -> Future[dict[str, Any]]:
    future: Future[dict[str, Any]] = Future()
    future.set_result(value)
    return future


class Target:
    """Common behaviour: frame taps for recording through the console itself."""

    kind = "target"

    def __init__(self) -> None:
        self._taps: list[FrameTap] = []
        self._started = time.monotonic()
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    # -- what subclasses provide ----------------------------------------------------

    def label(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Heavy set-up, run after the first prompt is on screen."""

    def _submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def cancel(self, request_id: Any) -> None:
        """Asks the worker to stop a request, where the target can; the console stops waiting anyway."""

    def inflight(self) -> int | None:
        return None

    def lm_calls(self, limit: int) -> list[dict[str, Any]] | None:
        """The worker's last LM calls (oldest first), or None when the target cannot tell."""
        return None

    def describe(self) -> dict[str, Any]:
        """Header fields for a transcript recorded through this target."""
        return {"mode": "standalone", "worker_id": None, "argv": []}

    def close(self) -> None:
        """Releases the target."""

    def answer(self, frame: dict[str, Any]) -> None:
        """Sends a callback's answer `{callback_id, result|error}` (not through --attach)."""

    # -- shared -------------------------------------------------------------------

    def _event(self, frame: dict[str, Any]) -> None:
        handler = self.on_event
        if handler is not None:
            handler(frame)

    def submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        taps = list(self._taps)
        if taps:
            sent = time.monotonic()
            for tap in taps:
                tap("in", request, sent)
        future = self._submit(request)
        if taps:
            def tap_reply(done: Future[dict[str, Any]]) -> None:
                if done.exception() is None:
                    at = time.monotonic()
                    for tap in taps:
                        tap("out", done.result(), at)
            future.add_done_callback(tap_reply)
        return future

    def start_recording(self, path: Path, prelude: Prelude = ()) -> Callable[[], None]:
        """Writes what follows as a transcript; returns the function that finishes it.

        `prelude` (request, reply) pairs are written first: the commands that built the
        state the recorded requests rely on, so the transcript replays on its own.
        """
        from bridge.redact import redact
        from bridge.record.transcript import TranscriptWriter, make_header

        described = self.describe()
        header = make_header(mode=described["mode"], worker_id=described["worker_id"], argv=described["argv"],
                             extra={"source": "dspex repl", "target": self.label()})
        writer = TranscriptWriter(str(path), header)
        origin = time.monotonic()
        lock = threading.Lock()

        def tap(direction: str, frame: dict[str, Any], at: float) -> None:
            with lock:
                writer.frame(direction, round((at - origin) * 1000, 3), redact(frame))

        for request, reply in prelude:
            tap("in", request, origin)
            tap("out", reply, origin)
        self._taps.append(tap)

        def stop() -> None:
            if tap in self._taps:
                self._taps.remove(tap)
            with lock:
                writer.close()

        return stop


class InProcessTarget(Target):
    """A bridge.Engine in this process: the default, and the only one `:record` taps directly."""

    kind = "in-process"

    def __init__(self) -> None:
        super().__init__()
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Any:
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    from bridge import Engine, EngineConfig

                    from .parsing import registry as console_registry

                    # The console's plugins first: an engine takes the commands registered
                    # when it is built, and the console loads plugins on its first use of them.
                    console_registry()
                    self._engine = Engine(EngineConfig(mode="standalone", worker_id=f"repl-{os.getpid()}",
                                                       argv=["dspex", "repl"]))
                engine = self._engine
        return engine

    def label(self) -> str:
        return "in-process"

    def start(self) -> None:
        self.engine.warm()

    def _submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()

        def deliver(payload: bytes) -> None:
            frame = orjson.loads(payload)
            if type(frame) is dict and "event" in frame and "success" not in frame:
                self._event(frame)  # a chunk, progress or callback of the request, before its reply
            elif not future.done():
                future.set_result(frame)

        # Through the frame entry point, so frame taps (the recorder) see the request too.
        self.engine.submit_frame(orjson.dumps(request), deliver)
        return future

    def cancel(self, request_id: Any) -> None:
        for entry in list(self.engine.inflight.values()):
            if entry.request_id == request_id:
                entry.cancel.set()

    def inflight(self) -> int | None:
        return len(self._engine.inflight) if self._engine is not None else 0

    def answer(self, frame: dict[str, Any]) -> None:
        self.engine.submit_frame(orjson.dumps(frame), lambda _reply: None)  # an answer gets no reply

    def lm_calls(self, limit: int) -> list[dict[str, Any]] | None:
        calls = list(self.engine.recent_lm_calls)
        return calls[-limit:] if limit > 0 else calls

    def describe(self) -> dict[str, Any]:
        return {"mode": "standalone", "worker_id": self.engine.worker_id, "argv": ["dspex", "repl"]}

    def start_recording(self, path: Path, prelude: Prelude = ()) -> Callable[[], None]:
        try:
            from bridge.record.recorder import start_recording
        except ImportError:
            return super().start_recording(path, prelude)
        # The engine's own recorder also writes the LM cassette, so `dspex replay` runs offline.
        engine = self.engine
        before = list(engine.frame_taps)
        stop = start_recording(engine, str(path))
        added = [tap for tap in engine.frame_taps if tap not in before]
        if not added:
            raise OSError(f"cannot record to {path} (see the log in the state directory)")
        now = time.monotonic()
        for request, reply in prelude:
            for tap in added:  # only the new recorder hears the prelude
                tap("in", orjson.dumps(request), now)
                tap("out", orjson.dumps(reply), now)
        return stop

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close(wait=False)


class SpawnTarget(Target):
    """Any worker command, spawned and spoken to over the port framing.

    The process is replay's `SpawnedWorker` (bridge/replay/targets.py), the same one
    `dspex replay --worker` and `:replay` start: one way to start a worker, one way to
    say that it left.
    """

    kind = "spawn"

    def __init__(self, command: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("--spawn needs a command, e.g. --spawn \"dspex serve\"")
        self.log_path = log_path
        self._env = env
        self._worker: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def label(self) -> str:
        worker = self._worker
        if worker is None:
            return f"spawn {self.argv[0]}"
        code = worker.exit_code()
        state = "" if code is None else f", exited {code}"
        return f"spawn pid {worker.pid}{state}"

    def start(self) -> None:
        self._ensure()

    def _ensure(self) -> Any:
        with self._lock:
            if self._worker is None and self._error is None:
                from bridge.replay.targets import SpawnedWorker, WorkerStartFailed

                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                # The worker's logs must not garble the console; 0600: they may quote prompts.
                stderr = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
                try:
                    self._worker = SpawnedWorker(self.argv, env=self._env, stderr=stderr)
                    self._worker.client.on_event = self._event
                except WorkerStartFailed as exc:
                    self._error = str(exc)
                finally:
                    stderr.close()
            return self._worker

    def _submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        worker = self._ensure()
        if worker is None:
            return _resolved(error_reply(request.get("id"), self._error or "worker not started",
                                         "worker_gone", "check the --spawn command"))
        if worker.exit_code() is not None:
            return _resolved(self._gone(request, worker))
        inner = worker.request(request)
        outer: Future[dict[str, Any]] = Future()

        def relay(done: Future[dict[str, Any]]) -> None:
            exc = done.exception()
            outer.set_result(done.result() if exc is None else self._gone(request, worker))

        inner.add_done_callback(relay)
        return outer

    def answer(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # a worker that left answers its requests worker_gone
            self._worker.client.send_frame(frame)

    def _gone(self, request: dict[str, Any], worker: Any) -> dict[str, Any]:
        return error_reply(request.get("id"), f"The spawned worker {worker.gone_reason()}", "worker_gone",
                           f"its stderr is in {self.log_path}; restart the console to spawn a new one")

    def lm_calls(self, limit: int) -> list[dict[str, Any]] | None:
        worker = self._worker
        if worker is None or worker.exit_code() is not None:
            return None
        return control_lm_calls(str(worker.pid), limit)

    def describe(self) -> dict[str, Any]:
        return {"mode": "standalone", "worker_id": None, "argv": list(self.argv)}

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close(timeout=3)


class AttachTarget(Target):
    """A live `dspex serve`, reached through its control socket's `exec`."""

    kind = "attach"

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self._info: Any = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._generation = 0

    def label(self) -> str:
        info = self._info
        if info is None:
            return f"attach {self.spec} (not connected)"
        return f"attach {getattr(info, 'worker_id', None) or self.spec} (pid {getattr(info, 'pid', '?')})"

    def start(self) -> None:
        try:
            self._connect()
        except Exception:  # reported on the first command, where the user looks
            pass

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                from bridge.control.client import ControlClient, resolve_worker

                self._info = resolve_worker(self.spec)
                self._client = ControlClient(socket_of(self._info))
            return self._client

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._generation += 1
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _failure(self, request: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        text = str(exc) or type(exc).__name__
        return error_reply(request.get("id"), f"Cannot reach worker {self.spec}: {text}",
                           getattr(exc, "error_type", None) or "worker_unreachable",
                           "`dspex inspect` lists live workers; attach by pid, worker id or socket path")

    def _submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()

        def run() -> None:
            try:
                client = self._connect()
                # Through `exec` with the console's own id, so replies (and recordings)
                # carry the ids the console showed; the worker bounds the run time itself.
                reply = client.call("exec", {"command": request["command"], "args": request.get("args") or {},
                                             "id": request.get("id")}, timeout=None)["reply"]
            except ImportError:
                reply = error_reply(request.get("id"), "This installation has no control-socket client",
                                    "unsupported", "use --spawn \"dspex serve\" instead")
            except Exception as exc:
                self._drop()
                reply = self._failure(request, exc)
            if not isinstance(reply, dict):
                reply = error_reply(request.get("id"), f"Unexpected reply from worker: {reply!r}"[:300],
                                    "invalid_reply")
            if not future.done():
                future.set_result(reply)

        threading.Thread(target=run, name="repl-attach-call", daemon=True).start()
        return future

    def cancel(self, request_id: Any) -> None:
        # The control socket answers one exchange at a time; a fresh connection lets the
        # next command through while the abandoned one finishes in the worker.
        self._drop()

    def lm_calls(self, limit: int) -> list[dict[str, Any]] | None:
        info = self._info
        return control_lm_calls(socket_of(info), limit) if info else None

    def describe(self) -> dict[str, Any]:
        info = self._info
        return {"mode": getattr(info, "mode", "standalone") if info else "standalone",
                "worker_id": getattr(info, "worker_id", None) if info else None, "argv": []}

    def close(self) -> None:
        self._drop()
