"""Incident tools against real workers: /metrics scraped over HTTP after a known mix of
requests, `inspect stack`/`cancel`/`--prometheus`, and the bad input around them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures import ROOT, ok, wait_for, worker_env
from prometheus_client.parser import text_string_to_metric_families

from bridge.control.client import ControlClient, list_workers

SIGNATURE = {"name": "QA", "description": "answer", "inputs": [{"name": "question", "type": "string"}],
             "outputs": [{"name": "answer", "type": "string"}]}


def cli(runtime: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dspex_cli", *args], capture_output=True, text=True, input=stdin,
                          env=worker_env(XDG_RUNTIME_DIR=str(runtime), COLUMNS="200", NO_COLOR="1"),
                          cwd=str(ROOT), timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus exposition, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    matching = [v for (n, ls), v in parsed.items() if n == name and set(labels.items()) <= ls]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


def test_metrics_endpoint_counts_a_known_mix_of_requests(start, runtime: Path, lm_args: dict) -> None:
    port = free_port()
    worker = start("--worker-id", "metered", "--metrics", f"127.0.0.1:{port}")  # the fixture pings once
    for _ in range(2):
        ok(worker.request("ping"))
    ok(worker.request("configure_lm", {**lm_args, "session_id": "m"}))
    ok(worker.request("create_program", {"id": "p", "signature": SIGNATURE, "session_id": "m"}))
    for question in ("one", "two"):
        ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": question}, "session_id": "m"}))
    missing = worker.request("execute_program", {"program_id": "nope", "inputs": {}, "session_id": "m"})
    assert missing["success"] is False
    assert worker.request("no_such_command")["error_type"] == "unknown_command"

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    parsed = samples(text)
    assert value(parsed, "dspex_requests_received_total", command="ping", worker_id="metered") == 3
    assert value(parsed, "dspex_requests_received_total", command="execute_program") == 3
    assert value(parsed, "dspex_requests_total", command="execute_program", outcome="ok") == 2
    assert value(parsed, "dspex_requests_total", command="execute_program",
                 outcome=missing["error_type"]) == 1
    assert value(parsed, "dspex_errors_total", error_type="unknown_command") == 1
    assert value(parsed, "dspex_request_duration_seconds_count", command="execute_program") == 3
    assert value(parsed, "dspex_request_duration_seconds_bucket", command="execute_program", le="+Inf") == 3
    assert value(parsed, "dspex_lm_calls_total", model="openai/local-model", status="ok") == 2
    assert value(parsed, "dspex_lm_call_duration_seconds_count", model="openai/local-model") == 2
    prompt_tokens = value(parsed, "dspex_lm_tokens_total", model="openai/local-model", kind="prompt")
    with ControlClient(list_workers(runtime / "dspex")[0].socket) as client:
        status = client.call("status")
    assert prompt_tokens == status["usage"]["prompt_tokens"] > 0
    assert value(parsed, "dspex_inflight_requests") == 0
    assert value(parsed, "dspex_resident_memory_bytes") > 10_000_000
    assert value(parsed, "dspex_uptime_seconds") > 0
    assert "sk-test-secret-123456" not in text

    # The same figures through the control socket, for a worker started without --metrics.
    printed = cli(runtime, "inspect", "metered", "--prometheus")
    assert printed.returncode == 0, printed.stderr
    again = samples(printed.stdout)
    assert value(again, "dspex_requests_total", command="execute_program", outcome="ok") == 2
    assert value(again, "dspex_lm_calls_total", model="openai/local-model", status="ok") == 2

    with pytest.raises(urllib.error.HTTPError) as missing_path:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert missing_path.value.code == 404


def test_a_bad_metrics_address_is_refused_at_start(tmp_path: Path) -> None:
    from bridge.wire.client import dspex_serve_argv

    for bad in ("*:9100", "127.0.0.1:notaport", "127.0.0.1:70000"):
        result = subprocess.run(dspex_serve_argv("--metrics", bad), capture_output=True, text=True, timeout=30,
                                env=worker_env(), cwd=str(ROOT), stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (bad, result.stderr)
        assert "--metrics" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_stack_and_cancel_of_unknown_requests_and_read_only_refusal(start, runtime: Path, openai_server) -> None:
    start("--worker-id", "plain")  # the worker the unknown ids are asked of
    readonly = start("--worker-id", "guarded", "--control", "read-only")
    for args in (("stack", "999"), ("cancel", "999", "--yes")):
        result = cli(runtime, "inspect", "plain", *args)
        assert result.returncode == 2, result
        assert result.stderr.startswith("dspex inspect: no request ") and "999" in result.stderr and "Traceback" not in result.stderr
    missing_id = cli(runtime, "inspect", "plain", "cancel")
    assert missing_id.returncode == 2 and "REQUEST_ID" in missing_id.stderr
    typo = cli(runtime, "inspect", "plain", "stakc")
    assert typo.returncode == 2 and "did you mean 'stack'" in typo.stderr

    # All threads: the worker's reader and request pool are there, frames carry no locals.
    stacks = cli(runtime, "inspect", "plain", "stack", "--json")
    data = json.loads(stacks.stdout)
    names = {t["name"] for t in data["threads"]}
    assert any(n.startswith("dspex-control") for n in names) and data["total"] == len(data["threads"]) >= 3
    assert all(set(frame) == {"file", "line", "function"} for t in data["threads"] for frame in t["frames"])

    # A slow request in the read-only worker is visible but cannot be cancelled from outside.
    ok(readonly.request("configure_lm", {"model": "openai/delay-3000", "api_base": openai_server.base_url,
                                         "api_key": "sk-test-secret-123456", "session_id": "r"}))
    ok(readonly.request("create_program", {"id": "p", "signature": SIGNATURE, "session_id": "r"}))
    slow = readonly.submit("execute_program", {"program_id": "p", "inputs": {"question": "x"}, "session_id": "r"},
                           request_id=31)
    inflight = wait_for(lambda: [r for r in json.loads(cli(runtime, "inspect", "guarded", "inflight", "--json")
                                                       .stdout)["inflight"] if r.get("phase") == "lm_call"], 20, 0.2)
    assert inflight[0]["id"] == 31 and inflight[0]["model"] == "openai/delay-3000" and inflight[0]["attempt"] == 1
    refused = cli(runtime, "inspect", "guarded", "cancel", "31", "--yes")
    assert refused.returncode == 1 and "read-only" in refused.stderr
    assert slow.result(30)["success"] is True  # it ran to its end, untouched


@pytest.mark.slow
def test_cancel_from_the_cli_answers_the_caller(start, runtime: Path, openai_server) -> None:
    worker = start("--worker-id", "victim")
    ok(worker.request("configure_lm", {"model": "openai/delay-20000", "api_base": openai_server.base_url,
                                       "api_key": "sk-test-secret-123456", "session_id": "v"}))
    ok(worker.request("create_program", {"id": "p", "signature": SIGNATURE, "session_id": "v"}))
    slow = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "x"}, "session_id": "v"},
                         request_id=77)
    queued = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "y"}, "session_id": "v"},
                           request_id=78)
    with ControlClient(list_workers(runtime / "dspex")[0].socket) as client:
        wait_for(lambda: any(r.get("phase") == "lm_call" for r in client.call("inflight")["inflight"]), 20)
        stack = client.call("stack", {"request_id": "77"})
    frames = [f"{f['file']}:{f['function']}" for t in stack["threads"] for f in t["frames"]]
    assert stack["phase"] == "lm_call" and any("dspy/clients" in f or "litellm" in f for f in frames), frames
    started = time.monotonic()
    for request_id in ("77", "78"):
        result = cli(runtime, "inspect", "victim", "cancel", request_id, "--yes")
        assert result.returncode == 0 and f"request #{request_id} cancelled" in result.stdout, result
    for future in (slow, queued):
        reply = future.result(10)
        assert reply["success"] is False and reply["error_type"] == "cancelled", reply
    assert time.monotonic() - started < 15  # answered at once, not after the 20 s LM call
    assert ok(worker.request("ping"))["status"] == "ok"


@pytest.mark.slow
def test_top_snapshot_without_a_terminal_and_bad_runtime_dirs(start, runtime: Path) -> None:
    start("--worker-id", "snap-a")
    start("--worker-id", "snap-b")
    # A stale discovery file and socket of a dead worker are skipped (and cleaned).
    directory = runtime / "dspex"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_socket = directory / f"{dead.pid}.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale_socket))
    listener.close()
    (directory / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "worker_id": "ghost", "mode": "x",
                                                            "socket": str(stale_socket)}))
    snapshot = cli(runtime, "top", "--json")
    assert snapshot.returncode == 0, snapshot.stderr
    rows = json.loads(snapshot.stdout)
    assert sorted(r["worker_id"] for r in rows) == ["snap-a", "snap-b"]
    assert all(isinstance(r["rss"], int) and r["inflight"] == 0 for r in rows)
    table = cli(runtime, "top")
    assert table.returncode == 0 and "snap-a" in table.stdout and "ghost" not in table.stdout
    assert "\x1b[" not in table.stdout  # no terminal: no screen control codes
    stale = cli(runtime, "inspect", str(stale_socket), "stack")
    assert stale.returncode == 1 and ("stale" in stale.stderr or "no such" in stale.stderr)

    # A runtime directory someone else owns is refused with one line (as root: chown it away).
    if os.getuid() == 0:
        os.chown(directory, 65534, 65534)
        try:
            refused = cli(runtime, "top")
            assert refused.returncode == 1 and refused.stderr.startswith("dspex top: ")
            assert "belongs to uid 65534" in refused.stderr and "Traceback" not in refused.stderr
        finally:
            os.chown(directory, 0, 0)
