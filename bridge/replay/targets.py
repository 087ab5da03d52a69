"""Where replayed requests go: an engine in this process, a caller's submit function, a worker process.

Each target has `send(payload, rid)` and `close()` and hands every reply to the replay's
`Inbox`. `SpawnedWorker` is the one way a worker process is started and spoken to over
the port framing: `dspex replay --worker`, the REPL's `--spawn` target and the REPL's
scratch replays all use it, so they fail to start, and report a worker that left, alike.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from typing import IO, TYPE_CHECKING, Any

from .inbox import Inbox

if TYPE_CHECKING:
    from ..wire.client import WorkerClient
    from ..engine import Engine

Submit = Callable[[bytes, Callable[[bytes], None]], None]
# Env var a worker reads to answer LM calls from a cassette (set for replays through a worker).
CASSETTE_ENV = "DSPEX_REPLAY_CASSETTE"


class WorkerStartFailed(RuntimeError):
    """A worker command that could not be started (not found, not executable...)."""


class CallerRunsExecutor(Executor):
    """Runs each task at once in the submitting thread.

    A cassette answers LM calls instantly, so threads buy a replay nothing but thread
    switches and run-to-run differences; running each request when the scheduler
    releases it keeps the engine's session ordering and makes replays deterministic.
    Given to the engine when it is built: `Engine(config, executor=CallerRunsExecutor())`.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # No Future: the scheduler ignores the return value, and one per request costs.
        fn(*args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def replay_worker_env(base: dict[str, str] | None = None, cassette: str | None = None) -> dict[str, str]:
    """The environment of a worker that replays: it records over nothing, and answers LM
    calls from `cassette` (a transcript path) when one is given."""
    env = dict(base if base is not None else os.environ)
    env.pop(CASSETTE_ENV, None)
    env.pop("DSPEX_RECORD", None)
    if cassette is not None:
        env[CASSETTE_ENV] = os.path.abspath(cassette)
    return env


def expand_worker_argv(argv: Iterable[str], header: dict[str, Any]) -> list[str]:
    """The worker command with `{args}` replaced by the recorded worker's own arguments."""
    recorded: list[str] = []
    skip = False
    for item in header.get("argv") or []:
        item = str(item)
        if skip:
            skip = False
            continue
        if item == "--record":  # the replayed worker must not record over anything
            skip = True
            continue
        if item.startswith("--record="):
            continue
        recorded.append(item)
    expanded: list[str] = []
    for item in argv:
        if item == "{args}":
            expanded.extend(recorded)
        else:
            expanded.append(item)
    return expanded


class SpawnedWorker:
    """A worker process of its own, spoken to over the port framing."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 stderr: int | IO[bytes] = subprocess.DEVNULL) -> None:
        from ..wire.client import WorkerClient

        self.argv = list(argv)
        try:
            self.client: WorkerClient = WorkerClient(self.argv, env=env, stderr=stderr)
        except OSError as exc:
            raise WorkerStartFailed(f"cannot start worker {self.argv[0]}: {exc.strerror or exc}") from None

    @property
    def pid(self) -> int:
        return self.client.pid

    def exit_code(self) -> int | None:
        """The worker's exit code, or None while it runs."""
        return self.client.process.poll()

    def gone_reason(self) -> str:
        """Why the worker no longer answers, in words."""
        code = self.exit_code()
        return f"exited with code {code}" if code is not None else "closed its output"

    def request(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        """Sends a request object; the future holds its reply, or fails when the worker leaves."""
        return self.client.submit_request(request)

    def send_frame(self, payload: bytes, rid: Any, on_reply: Callable[[Any], None],
                   on_gone: Callable[[str], None]) -> None:
        """Sends an already encoded request as is (a recorded frame, byte for byte);
        `on_reply` gets its decoded reply, `on_gone` why none will come."""
        from ..wire.framing import pack

        future = self.client.expect(rid) if rid is not None else None
        try:
            self.client.send_raw(pack(payload))
        except OSError as exc:
            on_gone(f"worker stopped reading: {exc}")
            return
        if future is not None:
            def done(finished: Future[Any]) -> None:
                try:
                    reply = finished.result()
                except Exception as exc:  # the worker exited before answering
                    on_gone(str(exc))
                    return
                on_reply(reply)

            future.add_done_callback(done)

    def close(self, timeout: float = 5.0) -> None:
        self.client.close(timeout=timeout)


class EngineTarget:
    """An Engine in this process, fed the recorded frames through its frame entry point."""

    def __init__(self, engine: Engine, inbox: Inbox, owned: bool) -> None:
        self.engine = engine
        self.inbox = inbox
        self.owned = owned
        # Replies of an engine that runs requests in the caller come back before
        # submit_frame returns: nobody can be waiting for them yet.
        synchronous = isinstance(engine.executor, CallerRunsExecutor)
        self._deliver = inbox.deliver_now if synchronous else inbox.deliver_bytes
        self._submit = engine.submit_frame

    def send(self, payload: bytes, rid: Any) -> None:
        self._submit(payload, self._deliver)

    def close(self) -> None:
        if self.owned:
            self.engine.wait_idle(5.0)
            self.engine.close()


class SubmitTarget:
    """A caller's own `submit(payload, send)` (the REPL's replay into an attached worker)."""

    def __init__(self, submit: Submit, inbox: Inbox) -> None:
        self.submit = submit
        self.inbox = inbox

    def send(self, payload: bytes, rid: Any) -> None:
        self.submit(payload, self.inbox.deliver_bytes)

    def close(self) -> None:
        pass


class WorkerTarget:
    """A worker command, started for this replay and stopped after it."""

    def __init__(self, argv: list[str], inbox: Inbox, env: dict[str, str]) -> None:
        self.inbox = inbox
        self.worker = SpawnedWorker(argv, env=env)
        self.worker.client.on_event = inbox.deliver  # events (callbacks to answer) reach the replayer

    def send(self, payload: bytes, rid: Any) -> None:
        self.worker.send_frame(payload, rid, self.inbox.deliver, self.inbox.gone)

    def close(self) -> None:
        self.worker.close(timeout=5.0)


__all__ = ["CASSETTE_ENV", "CallerRunsExecutor", "EngineTarget", "SpawnedWorker", "Submit", "SubmitTarget",
           "WorkerStartFailed", "WorkerTarget", "expand_worker_argv", "replay_worker_env"]
