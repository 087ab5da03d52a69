"""What `dspex serve` puts off until after its first reply (issue 11's start-up work):
the control socket opens after the first request is answered, or soon without one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.control.client import ControlClient
from bridge.serve.server import CONTROL_START_DELAY
from bridge.wire.client import WorkerClient
from fixtures import wait_for, worker_env


def test_control_socket_opens_after_the_first_reply(spawn_worker: Callable[..., WorkerClient], runtime: Path) -> None:
    worker = spawn_worker(env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    assert worker.request("ping", timeout=10)["success"]
    socket_path = runtime / "dspex" / f"{worker.pid}.sock"
    wait_for(lambda: (runtime / "dspex" / f"{worker.pid}.json").exists(), timeout=5)
    assert ControlClient(socket_path).call("status")["worker_id"]


def test_control_socket_opens_without_any_request(spawn_worker: Callable[..., WorkerClient], runtime: Path) -> None:
    worker = spawn_worker(env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    # Nothing is sent: the socket still opens, CONTROL_START_DELAY after start (plus the start itself).
    wait_for(lambda: (runtime / "dspex" / f"{worker.pid}.json").exists(), timeout=5 + CONTROL_START_DELAY)
    assert worker.request("ping", timeout=10)["success"]


def test_input_ending_before_the_control_socket_opens_leaves_nothing_behind(
        spawn_worker: Callable[..., WorkerClient], runtime: Path) -> None:
    worker = spawn_worker(env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    worker.close_input()
    assert worker.close(timeout=10) == 0
    directory = runtime / "dspex"
    leftovers = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    assert not [name for name in leftovers if name.startswith(f"{worker.pid}.")], leftovers
