"""`dspex top` in a real terminal (tmux), against real workers, one of them stuck in a slow
LM call behind a real Erlang port: find it, sort it up, open it, read its stack, cancel
it, and see the Elixir caller get `cancelled`."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fixtures import ROOT, ELIXIR, wait_for, worker_env

from dspex_cli.top_views import visible_columns

TMUX = shutil.which("tmux")
ELIXIR_BIN = shutil.which("elixir")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")


class Pane:
    """One tmux session running a command in a terminal of a given size."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], width: int, height: int) -> None:
        self.name = name
        shell = " ".join(_quote(part) for part in command) + "; echo TOP-EXITED-$?; sleep 60"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        subprocess.run([TMUX, "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                        f"env {exports} sh -c {_quote(shell)}"], check=True)

    def text(self) -> str:
        return subprocess.run([TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([TMUX, "send-keys", "-t", self.name, *keys], check=True)

    def resize(self, width: int, height: int) -> None:
        subprocess.run([TMUX, "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)], check=True)

    def wait(self, predicate, timeout: float = 20.0) -> str:
        try:
            return wait_for(lambda: (lambda t: t if predicate(t) else None)(self.text()), timeout, 0.1)
        except AssertionError:
            raise AssertionError(f"screen never matched:\n{self.text()}") from None

    def close(self) -> None:
        subprocess.run([TMUX, "kill-session", "-t", self.name], capture_output=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _rows(screen: str) -> list[str]:
    """The pool table's data lines (below the header rule)."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [line for line in lines[start + 1:] if line.strip() and not line.startswith("Enter:")
            and "exited" not in line]


class ElixirCaller:
    """tests/elixir/stuck_request.exs: a port-owning Elixir process with one slow request."""

    def __init__(self, runtime: Path, api_base: str, worker_id: str) -> None:
        env = worker_env(XDG_RUNTIME_DIR=str(runtime), DSPEX_LOG_LEVEL="warning")
        self.proc = subprocess.Popen(
            [ELIXIR_BIN, str(ELIXIR / "stuck_request.exs"), "--python", sys.executable, "--root", str(ROOT),
             "--api-base", api_base, "--worker-id", worker_id], cwd=str(ROOT), env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"the Elixir caller printed no {prefix!r} line; stderr: "
                             f"{self.proc.stderr.read() if self.proc.poll() is not None else '(running)'}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def elixir_bin() -> str:
    if ELIXIR_BIN is None:
        if os.environ.get("CI"):
            pytest.fail("elixir is not installed; CI must run the port test")
        pytest.skip("elixir is not installed (apt-get install elixir erlang-jiffy)")
    return ELIXIR_BIN


@pytest.mark.parametrize("width,height", [(80, 24), (200, 50)])
@pytest.mark.slow
def test_top_finds_sorts_opens_stacks_and_cancels_a_stuck_request(start, runtime: Path, openai_server, elixir_bin,
                                                                  width: int, height: int) -> None:
    calm = [start("--worker-id", "w-a"), start("--worker-id", "w-b")]
    caller = ElixirCaller(runtime, openai_server.base_url, "w-stuck")
    pane = Pane(f"top-{os.getpid()}-{width}", [sys.executable, "-m", "dspex_cli", "top"],
                {"XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                 "TERM": "xterm-256color", "NO_COLOR": "1"}, width, height)
    try:
        stuck_pid = int(caller.expect("STUCK", 60).split()[1])
        # All three, sorted by worker id: the stuck one is last, with one request in flight.
        screen = pane.wait(lambda t: "3 worker(s)" in t and "w-stuck" in t and
                           any("w-stuck" in r and " 1 " in r for r in _rows(t)), 40)
        rows = _rows(screen)
        assert [r.split()[0] for r in rows] == ["w-a", "w-b", "w-stuck"], screen
        assert all(len(line) <= width for line in screen.splitlines())

        # Sorting by "inflight" (a number key, the column's place in the table) moves it to the top.
        place = [c.key for c in visible_columns(width)].index("inflight") + 1
        pane.keys(str(place))
        screen = pane.wait(lambda t: "sort inflight" in t and _rows(t)[0].startswith("w-stuck"))
        assert f"{stuck_pid}" in _rows(screen)[0]

        # Enter opens it: the in-flight request with its phase, program, model and endpoint.
        pane.keys("Enter")
        screen = pane.wait(lambda t: "#4242 execute_program" in t and "phase lm_call" in t)
        assert "program stuck-prog" in screen and "model openai/delay-30000" in screen
        assert "127.0.0.1" in screen and "sk-stuck-elixir-secret-42" not in screen

        # t: the request's stack names the LM call it is stuck in (innermost frames first).
        pane.keys("t")
        screen = pane.wait(lambda t: "stack of request #4242" in t)
        frames = screen.split("innermost first", 1)[1]
        assert any(name in frames for name in ("httpcore", "httpx", "litellm", "dspy/clients")), screen
        # The thread that serves it, or the asyncio task of the DSPy adapter's lane.
        assert any(name in frames for name in ("dspex-request", "dspex-lm-call", "asyncio task"))

        # Esc back, then c and y: cancelled, and the Elixir caller gets error_type cancelled.
        pane.keys("Escape")
        pane.wait(lambda t: "#4242 execute_program" in t)
        pane.keys("c")
        pane.wait(lambda t: "cancel request #4242?" in t)
        pane.keys("y")
        reply = json.loads(caller.expect("REPLY", 15)[len("REPLY "):])
        assert reply["id"] == 4242 and reply["success"] is False and reply["error_type"] == "cancelled", reply
        assert caller.expect("PING", 10) == "PING true"  # the worker serves on

        # A worker that exits while watched: its row goes, the screen stays.
        pane.keys("Escape")
        pane.wait(lambda t: "worker(s)" in t and "sort inflight" in t)
        calm[1].close()
        screen = pane.wait(lambda t: "w-b" not in "".join(r.split()[0] for r in _rows(t)) and "worker(s)" in t)
        assert "Traceback" not in screen

        # Resized to 40 columns: still a table, nothing beyond the edge, no traceback.
        pane.resize(40, height)
        screen = pane.wait(lambda t: "worker" in t and max(len(line) for line in t.splitlines()) <= 40)
        assert "Traceback" not in screen and "w-a" in screen

        pane.keys("q")
        screen = pane.wait(lambda t: "TOP-EXITED-0" in t)
        assert "Traceback" not in screen
    finally:
        pane.close()
        caller.close()
