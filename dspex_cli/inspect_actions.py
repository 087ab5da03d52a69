"""The parts of `dspex inspect` that act during an incident: `stack`, `cancel`,
`--prometheus`, the LM call log's filters, and the `q` key of the live views."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus, UserError


def _print_json(env: Environment, value: Any) -> None:
    env.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


@dataclass(frozen=True)
class LMFilters:
    """`--session`, `--program`, `--model` of the LM call log."""

    session: str | None = None
    program: str | None = None
    model: str | None = None

    def as_args(self) -> dict[str, str]:
        pairs = (("session_id", self.session), ("program_id", self.program), ("model", self.model))
        return {key: value for key, value in pairs if value}

    def matches(self, call: dict[str, Any]) -> bool:
        return all(str(call.get(key)) == value for key, value in self.as_args().items())


class QuitKey:
    """`q` ends a live view on a terminal: a thread reads keys in cbreak mode (Ctrl-C still
    works) and, for a view blocked on the socket, closes it (`on_quit`)."""

    def __init__(self, env: Environment, on_quit: Callable[[], None] | None = None) -> None:
        self.pressed = False
        self._event = threading.Event()
        self._stopped = threading.Event()
        self._on_quit = on_quit
        self._saved: Any = None
        self._fd: int | None = None
        if not env.interactive:
            return
        try:
            import termios
            import tty

            self._fd = env.stdin.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        except (OSError, ValueError, ImportError, AttributeError):
            self._fd = None
            return
        threading.Thread(target=self._read, name="dspex-quit-key", daemon=True).start()

    def _read(self) -> None:
        import select

        while not self._stopped.is_set() and self._fd is not None:
            readable, _, _ = select.select([self._fd], [], [], 0.1)
            if not readable:
                continue
            data = os.read(self._fd, 64)
            if not data or b"q" in data or b"Q" in data:
                self.pressed = True
                self._event.set()
                if self._on_quit is not None:
                    self._on_quit()
                return

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; True once `q` was pressed."""
        return self._event.wait(seconds)

    def guard(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            if self.pressed:
                return
            yield event

    def stop(self) -> None:
        self._stopped.set()
        if self._fd is not None and self._saved is not None:
            import termios

            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except (OSError, termios.error):
                pass
            self._saved = None


def inspect_stack(spec: str, request_id: str | None, as_json: bool, full: bool, env: Environment) -> int:
    from bridge.control.client import ControlClient, ControlError, resolve_worker

    from dspex_cli.top_views import stack_lines

    worker = resolve_worker(spec)
    with ControlClient(worker.socket) as client:
        try:
            data = client.call("stack", {"request_id": request_id} if request_id is not None else {})
        except ControlError as exc:
            if exc.error_type == "request_not_found":
                raise UserError(exc.message, ExitStatus.USAGE) from None
            raise
    if as_json:
        _print_json(env, data)
        return ExitStatus.OK
    if request_id is not None:
        env.write(f"request #{data.get('request_id')} {data.get('command') or ''} phase {data.get('phase')}\n")
    env.write("\n".join(stack_lines(data, full_paths=full)) + "\n")
    return ExitStatus.OK


def inspect_cancel(spec: str, request_id: str, assume_yes: bool, as_json: bool, env: Environment) -> int:
    from bridge.control.client import ControlClient, ControlError, resolve_worker

    worker = resolve_worker(spec)
    with ControlClient(worker.socket) as client:
        if env.interactive and not assume_yes:
            entry = next((r for r in client.call("inflight")["inflight"] if str(r.get("id")) == request_id), None)
            if entry is None:
                raise UserError(f"no request {request_id!r} is queued or running in worker "
                                     f"{worker.worker_id} (pid {worker.pid})", ExitStatus.USAGE)
            env.stdout.write(f"cancel request #{request_id} ({entry.get('command')}, session "
                             f"{entry.get('session_id')}, {entry.get('phase')}) in worker {worker.worker_id}? "
                             "its caller gets error_type cancelled [y/N] ")
            env.stdout.flush()
            if env.stdin.readline().strip().lower() not in ("y", "yes"):
                env.write("left running\n")
                return ExitStatus.FAILURE
        try:
            result = client.call("cancel", {"request_id": _typed_id(request_id),
                                            "reason": "cancelled with dspex inspect"})
        except ControlError as exc:
            status = ExitStatus.USAGE if exc.error_type == "request_not_found" else ExitStatus.FAILURE
            raise UserError(exc.message, status) from None
    if as_json:
        _print_json(env, result)
    else:
        env.write(f"request #{result.get('request_id')} cancelled: its caller got error_type cancelled\n")
    return ExitStatus.OK


def _typed_id(text: str) -> Any:
    """`42` is the integer id Elixir sent (the worker also matches its text)."""
    return int(text) if text.isdigit() else text


def inspect_prometheus(spec: str, env: Environment) -> int:
    from bridge.control.client import ControlClient, resolve_worker

    worker = resolve_worker(spec)
    with ControlClient(worker.socket) as client:
        env.write(client.call("metrics")["text"])
    return ExitStatus.OK


__all__ = ["LMFilters", "QuitKey", "inspect_cancel", "inspect_prometheus", "inspect_stack"]
