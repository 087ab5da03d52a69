"""The control socket of real `dspex serve` workers: discovery, permissions, views, exec, cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

import orjson
import pytest
from fixtures import wait_for
from fixtures import worker_env

from bridge import Engine, EngineConfig
from bridge.control import ControlServer, UnsafeRuntimeDir, check_private_dir, cut, peer_allowed, public
from bridge.control.client import (ControlClient, ControlError, WorkerGone, WorkerNotFound, list_workers,
                                   resolve_worker)
from bridge.wire.framing import pack

SECRET = "sk-test-secret-123456"  # the api_key of the lm_args fixture


def control(runtime: Path, worker) -> ControlClient:
    return ControlClient(runtime / "dspex" / f"{worker.pid}.sock")


def test_discovery_file_and_permissions(start, runtime: Path) -> None:
    worker = start("--worker-id", "perm-worker", "--mode", "pool-worker")
    directory = runtime / "dspex"
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    sock = directory / f"{worker.pid}.sock"
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    discovery = directory / f"{worker.pid}.json"
    assert stat.S_IMODE(os.stat(discovery).st_mode) == 0o600
    data = json.loads(discovery.read_text())
    assert data["pid"] == worker.pid
    assert data["worker_id"] == "perm-worker"
    assert data["mode"] == "pool-worker"
    assert data["socket"] == str(sock)
    assert data["version"] and data["started_at"] <= time.time()
    [info] = list_workers(directory)
    assert (info.pid, info.worker_id, info.socket) == (worker.pid, "perm-worker", str(sock))


def test_unsafe_runtime_dir_is_refused_but_worker_serves(spawn_worker, runtime: Path) -> None:
    (runtime / "dspex").mkdir(mode=0o755)
    os.chmod(runtime / "dspex", 0o755)
    worker = spawn_worker(env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    assert worker.request("ping")["success"]
    wait_for(lambda: b"control socket disabled" in worker.stderr_path.read_bytes())
    assert list((runtime / "dspex").iterdir()) == []
    with pytest.raises(ControlError, match="mode 755"):
        list_workers(runtime / "dspex")


def test_check_private_dir_rules(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    os.chmod(good, 0o700)
    check_private_dir(good)
    with pytest.raises(UnsafeRuntimeDir, match="belongs to uid"):
        check_private_dir(good, uid=os.getuid() + 1)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(UnsafeRuntimeDir, match="not a plain directory"):
        check_private_dir(link)


def test_peer_policy() -> None:
    assert peer_allowed(1000, 1000)
    assert peer_allowed(0, 1000)  # root may inspect anyone's worker (documented)
    assert not peer_allowed(65534, 1000)
    assert not peer_allowed(1000, 0)


def _as_other_uid(action) -> dict:
    """Runs action() in a forked child after setuid(65534); returns what it reported."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            try:
                outcome = action()
            except ControlError as exc:
                outcome = {"error_type": exc.error_type, "error": exc.message}
            except BaseException as exc:  # reported to the parent, which fails the test
                outcome = {"error_type": "unexpected", "error": repr(exc)}
            os.write(write_fd, orjson.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return orjson.loads(b"".join(chunks))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to another uid")
def test_other_uid_is_refused_by_peer_credentials() -> None:
    # A socket reachable by everyone, so only the peer-credential check stands in the way.
    open_dir = Path(tempfile.mkdtemp(prefix="dspex-cred-"))
    os.chmod(open_dir, 0o755)
    engine = Engine(EngineConfig(worker_id="cred-test"))
    server = ControlServer(engine, open_dir / "c.sock")
    server.start()
    try:
        os.chmod(open_dir / "c.sock", 0o777)
        refused = _as_other_uid(lambda: ControlClient(open_dir / "c.sock").call("status"))
        assert refused["error_type"] == "permission_denied"
        assert "65534" in refused["error"]
        # The same socket answers its own uid, so the refusal was about the peer.
        assert ControlClient(open_dir / "c.sock").call("status")["worker_id"] == "cred-test"
    finally:
        server.close()
        removed = not (open_dir / "c.sock").exists()
        shutil.rmtree(open_dir, ignore_errors=True)
    assert removed


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to another uid")
def test_other_uid_cannot_reach_a_real_workers_socket(spawn_worker) -> None:
    # A runtime dir whose parents everyone may traverse: only dspex/ (0700) keeps others out.
    open_runtime = Path(tempfile.mkdtemp(prefix="dspex-rt-"))
    os.chmod(open_runtime, 0o755)
    try:
        worker = spawn_worker(env=worker_env(XDG_RUNTIME_DIR=str(open_runtime)))
        assert worker.request("ping")["success"]
        sock = open_runtime / "dspex" / f"{worker.pid}.sock"
        wait_for(sock.exists)
        outcome = _as_other_uid(lambda: ControlClient(sock).call("status"))
        assert ControlClient(sock).call("status")["pid"] == worker.pid
    finally:
        shutil.rmtree(open_runtime, ignore_errors=True)
    assert outcome["error_type"] == "permission_denied"


@pytest.mark.parametrize("how", ["shutdown", "eof", "sigterm"])
def test_socket_and_discovery_removed_at_exit(start, runtime: Path, how: str) -> None:
    worker = start()
    files = [runtime / "dspex" / f"{worker.pid}.sock", runtime / "dspex" / f"{worker.pid}.json"]
    assert all(f.exists() for f in files)
    if how == "shutdown":
        assert worker.request("shutdown")["success"]
    elif how == "eof":
        worker.close_input()
    else:
        worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0
    assert not any(f.exists() for f in files)


def test_stale_files_of_a_killed_worker_are_cleaned_by_readers(start, runtime: Path) -> None:
    worker = start("--worker-id", "doomed")
    directory = runtime / "dspex"
    worker.process.kill()
    worker.process.wait(5)
    assert (directory / f"{worker.pid}.json").exists()  # SIGKILL leaves them behind
    with pytest.raises(WorkerGone, match="gone"):
        resolve_worker(str(worker.pid), directory)
    assert list_workers(directory) == []
    assert not (directory / f"{worker.pid}.json").exists()
    assert not (directory / f"{worker.pid}.sock").exists()
    with pytest.raises(WorkerNotFound):
        resolve_worker("doomed", directory)


def test_views_after_programs_hold_no_secret(start, runtime: Path, lm_args: dict) -> None:
    worker = start("--worker-id", "views")
    assert worker.request("configure_lm", {**lm_args, "session_id": "s1"})["success"]
    created = worker.request("create_program", {"id": "qa", "signature": "question -> answer",
                                                "session_id": "s1"})
    assert created["success"], created
    for _ in range(2):
        ran = worker.request("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"},
                                                 "session_id": "s1"})
        assert ran["success"], ran
    assert worker.request("update_session_data", {"session_id": "s1", "key": "user", "value": "ada"})["success"]
    with control(runtime, worker) as client:
        status = client.call("status")
        assert status["pid"] == worker.pid and status["worker_id"] == "views"
        assert status["counters"]["programs"] == 1 and status["counters"]["lm_calls"] == 2
        assert status["commands_by_name"]["execute_program"] == 2
        assert status["memory"]["rss"] > 0 and status["versions"]["dspex"]
        [session] = [s for s in client.call("sessions")["sessions"] if s["session_id"] == "s1"]
        assert session["programs"] == ["qa"] and session["lm"]["model"] == lm_args["model"]
        assert session["lm"]["api_key_set"] is True and session["data_fields"] == ["user"]
        [program] = client.call("programs")["programs"]
        assert program["program_id"] == "qa" and program["execution_count"] == 2
        assert program["signature_def"] == "question: str -> answer: str"
        assert program["mean_latency_ms"] > 0
        frames = client.call("frames", {"limit": 200})["frames"]
        configure_in = next(f for f in frames if f.get("command") == "configure_lm")
        assert configure_in["frame"]["args"]["api_key"] == "[REDACTED]"
        replies = [f for f in frames if f["direction"] == "out" and f.get("id") == ran["id"]]
        assert replies and replies[0]["latency_ms"] > 0
        calls = client.call("lm")["calls"]
        assert len(calls) == 2 and calls[-1]["model"] == lm_args["model"]
        assert "Why?" in calls[-1]["prompt_preview"] and calls[-1]["usage"]
        assert calls[-1]["answer_preview"]
        everything = orjson.dumps([status, client.call("sessions"), client.call("programs"),
                                   client.call("frames", {"limit": 200, "max_string": 100000}),
                                   client.call("lm", {"preview": 100000})]).decode()
    assert SECRET not in everything
    assert lm_args["api_base"] in everything  # the views do carry real request data


def test_inflight_shows_running_requests(start, runtime: Path, lm_args: dict) -> None:
    worker = start()
    slow = {**lm_args, "model": "openai/local-delay-200"}
    assert worker.request("configure_lm", slow)["success"]
    assert worker.request("create_program", {"id": "slow", "signature": "q -> a", "session_id": "s9"})["success"]
    pending = [worker.submit("execute_program", {"program_id": "slow", "inputs": {"q": str(i)},
                                                 "session_id": "s9"}) for i in range(3)]
    with control(runtime, worker) as client:
        # (a request whose reply was just sent may still be listed for a moment)
        work = wait_for(lambda: [w for w in client.call("inflight")["inflight"]
                                 if w["command"] == "execute_program"], timeout=10, interval=0.01)
        assert {w["session_id"] for w in work} == {"s9"}
        assert all(w["age_ms"] >= 0 for w in work)
        later = wait_for(lambda: [w for w in client.call("inflight")["inflight"] if w["age_ms"] >= 100])
        assert later[0]["command"] == "execute_program"  # still running while the LM sleeps
        for future in pending:
            assert future.result(10)["success"]
        wait_for(lambda: client.call("inflight")["inflight"] == [])


def test_exec_runs_registered_commands_only(start, runtime: Path) -> None:
    worker = start()
    with control(runtime, worker) as client:
        assert client.exec("configure_lm", {"model": "mock", "session_id": "x"})["success"]
        reply = client.exec("create_program", {"id": "p1", "signature": "a -> b", "session_id": "x"})
        assert reply["success"] and reply["result"]["program_id"] == "p1"
        listed = client.exec("list_programs", {"session_id": "x"})
        assert [p["program_id"] for p in listed["result"]["programs"]] == ["p1"]
        unknown = client.exec("os.system", {"command": "touch /tmp/pwned"})
        assert unknown["success"] is False and unknown["error_type"] == "unknown_command"
    # The program created through exec lives in the worker the port also talks to.
    assert worker.request("list_programs", {"session_id": "x"})["result"]["total_count"] == 1


def test_read_only_control_refuses_exec(start, runtime: Path) -> None:
    worker = start("--control", "read-only")
    with control(runtime, worker) as client:
        assert client.call("status")["control"] == "read-only"
        with pytest.raises(ControlError) as caught:
            client.exec("reset_state", {})
        assert caught.value.error_type == "read_only"
    assert json.loads((runtime / "dspex" / f"{worker.pid}.json").read_text())["control"] == "read-only"


def test_no_control_means_no_socket(spawn_worker, runtime: Path) -> None:
    worker = spawn_worker("--no-control", env=worker_env(XDG_RUNTIME_DIR=str(runtime)))
    assert worker.request("ping")["success"]
    time.sleep(0.2)
    assert not (runtime / "dspex").exists() or list((runtime / "dspex").iterdir()) == []


def test_subscribe_streams_frames_and_lm_calls(start, runtime: Path) -> None:
    worker = start()
    events: list[dict] = []
    subscriber = control(runtime, worker)
    stream = subscriber.subscribe()
    first = threading.Event()

    def consume() -> None:
        try:
            for event in stream:
                events.append(event)
                first.set()
        except ControlError:
            pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    worker.request("configure_lm", {"model": "mock", "api_key": "sk-live-abcdefgh12345"})
    worker.request("create_program", {"id": "s", "signature": "q -> a"})
    worker.request("execute_program", {"program_id": "s", "inputs": {"q": "hello"}})
    wait_for(lambda: any(e["event"] == "lm_call" for e in events) and
             sum(e["event"] == "frame" for e in events) >= 6)
    commands = [e["data"].get("command") for e in events if e["event"] == "frame" and e["data"]["direction"] == "in"]
    assert commands == ["configure_lm", "create_program", "execute_program"]
    assert "sk-live-abcdefgh12345" not in orjson.dumps(events).decode()
    worker.close()
    thread.join(5)
    assert not thread.is_alive()  # the stream ended when the worker went away
    subscriber.close()


def test_bad_control_requests_get_clear_errors(start, runtime: Path) -> None:
    worker = start()
    with control(runtime, worker) as client:
        with pytest.raises(ControlError) as caught:
            client.call("statsu")
        assert caught.value.error_type == "unknown_command"
        with pytest.raises(ControlError) as caught:
            client.call("frames", {"limit": 0})
        assert caught.value.error_type == "invalid_arguments"
        with pytest.raises(ControlError) as caught:
            client.call("exec", {"args": {}})
        assert caught.value.error_type == "invalid_arguments"
        assert client.call("status")["pid"] == worker.pid  # the connection survived all of that
    raw = control(runtime, worker)
    raw._sock.sendall(pack(b'{"id": 7, "command": '))
    reply = raw._read_message(5)
    assert reply["id"] == 7 and reply["error_type"] == "invalid_json"
    raw.close()
    assert worker.request("ping")["success"]


def test_control_requests_follow_the_wire_rules_and_echo_ids(start, runtime: Path) -> None:
    worker = start()
    raw = control(runtime, worker)
    try:
        raw._sock.sendall(pack(b'{"id": 8, "command": ""}'))
        reply = raw._read_message(5)
        assert (reply["id"], reply["success"], reply["error_type"]) == (8, False, "invalid_request")
        raw._sock.sendall(pack(b'{"id": "x-9", "command": "status", "args": [1]}'))
        reply = raw._read_message(5)
        assert reply["id"] == "x-9" and reply["error_type"] == "invalid_arguments"
        assert reply["error"] == "'args' must be an object, got list"
        raw._sock.sendall(pack(b'[1, 2]'))
        reply = raw._read_message(5)
        assert reply["id"] is None and reply["error_type"] == "invalid_request"
        raw._sock.sendall(pack(b'{"id": 123456789012345678901234567890, "command": "commands"}'))
        reply = raw._read_message(5)
        assert reply["id"] == 123456789012345678901234567890 and reply["success"] is True
        assert list(reply) == ["id", "success", "result", "timestamp"]
        names = list(reply["result"]["commands"])
        assert names[:7] == ["status", "sessions", "inflight", "jobs", "frames", "lm", "commands"]
        assert "programs" in names and names[-2:] == ["subscribe", "exec"]
    finally:
        raw.close()


def test_each_server_builds_its_own_view_registry() -> None:
    from bridge.control import CORE_VIEWS, build_views
    from bridge.engine import Engine

    first, second = Engine(), Engine()
    try:
        views, other = build_views(first), build_views(second)
        assert views is not other and views is not CORE_VIEWS
        assert "subscribe" not in CORE_VIEWS and "exec" not in CORE_VIEWS
        assert views.find("exec").read_only is False and views.find("status").read_only is True
        assert views.find("subscribe").extra == {"stream": True}
        assert views.suggest("statsu") == "status"
    finally:
        first.close()
        second.close()


def test_public_and_cut_keep_secrets_out_and_say_what_was_cut() -> None:
    shown = public({"api_key": "abc12345", "api_key_set": True, "nested": [{"token": "t0k3n-value"}],
                    "text": "key sk-abcdefghijklmnop inside"})
    assert shown["api_key"] == "[REDACTED]" and shown["api_key_set"] is True
    assert shown["nested"][0]["token"] == "[REDACTED]"
    assert "sk-abcdefghijklmnop" not in shown["text"]
    assert cut("x" * 300, 100) == "x" * 100 + "… [+200 chars]"
    assert cut(list(range(30)), max_items=5)[-1] == "… +25 more items"
