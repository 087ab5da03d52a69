"""Two-way frames through a real worker: events only when asked, cancel, deadlines,
callbacks into the client, deferred job replies (no DSPy needed: a test plugin)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fixtures import PLUGINS, ok, wait_for, worker_env

from bridge.wire.client import WorkerClient


@pytest.fixture
def worker(spawn_worker: Callable[..., WorkerClient]) -> WorkerClient:
    client = spawn_worker("--plugin", "twoway_plugin", "--no-control", env=worker_env(PLUGINS))
    assert client.request("ping")["success"]
    return client


def test_events_go_only_to_a_request_that_asked(worker: WorkerClient) -> None:
    streamed = worker.submit("tw_stream", {"n": 3, "stream": True}).result(10)
    plain = worker.submit("tw_stream", {"n": 3}).result(10)
    events = worker.events_of(streamed["id"])
    assert [e["event"] for e in events] == ["chunk"] * 3
    assert all("success" not in e and e["id"] == streamed["id"] for e in events)
    assert "".join(e["data"]["delta"] for e in events) == ok(streamed)["text"]
    assert worker.events_of(plain["id"]) == [] and ok(plain)["text"] == ok(streamed)["text"]


def test_stream_on_a_command_that_cannot_stream_is_answered_with_a_warning(worker: WorkerClient) -> None:
    reply = worker.submit("tw_sleep", {"seconds": 0.01, "stream": True}).result(10)
    assert ok(reply)["slept"] is True and "cannot stream" in reply["warning"]
    assert worker.events_of(reply["id"]) == []


def test_cancel_answers_the_request_at_once_and_stops_its_work(worker: WorkerClient) -> None:
    slow = worker.submit("tw_sleep", {"seconds": 20}, request_id=42)
    time.sleep(0.2)
    started = time.monotonic()
    cancelled = worker.request("cancel", {"request_id": 42})
    reply = slow.result(5)
    assert ok(cancelled) == {"request_id": 42, "status": "cancelled"}
    assert reply["success"] is False and reply["error_type"] == "cancelled"
    assert time.monotonic() - started < 2  # a hang bound, not a speed claim
    again = worker.request("cancel", {"request_id": 42})
    assert again["error_type"] == "request_not_found"
    assert worker.request("cancel", {"request_id": "never-sent"})["error_type"] == "request_not_found"
    assert worker.request("ping")["success"]


def test_a_deadline_ends_the_request_with_deadline_exceeded(worker: WorkerClient) -> None:
    reply = worker.submit("tw_sleep", {"seconds": 20}, extra={"deadline_ms": 300}).result(10)
    assert reply["success"] is False and reply["error_type"] == "deadline_exceeded"
    in_args = worker.submit("tw_sleep", {"seconds": 20, "deadline_ms": 200}).result(10)
    assert in_args["error_type"] == "deadline_exceeded"
    fast = worker.submit("tw_sleep", {"seconds": 0.01}, extra={"deadline_ms": 5000}).result(10)
    assert ok(fast)["slept"] is True


@pytest.mark.parametrize("value", [0, -5, -0.5, "soon", True, [100]])
def test_a_deadline_that_is_not_a_positive_number_is_refused(worker: WorkerClient, value: Any) -> None:
    reply = worker.submit("tw_sleep", {"seconds": 0.01, "deadline_ms": value}).result(10)
    assert reply["error_type"] == "invalid_arguments" and "deadline_ms" in reply["error"]


def test_callbacks_are_answered_by_the_client_in_any_order(worker: WorkerClient) -> None:
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] != "callback":
            return
        with lock:
            seen.append(event["data"])
        data = event["data"]
        if data["name"] == "boom":
            worker.send_frame({"callback_id": data["callback_id"], "error": "no such row"})
        elif data["name"] == "both":
            worker.send_frame({"callback_id": data["callback_id"], "result": 1, "error": "x"})
        elif data["name"] != "silent":
            worker.send_frame({"callback_id": data["callback_id"], "result": {"echo": data["args"]}})

    worker.on_event = on_event
    tools = [{"name": n, "handler": "client"} for n in ("lookup", "boom", "both", "silent")]
    reply = worker.submit("tw_ask", {"names": ["lookup", "boom", "both", "silent"], "tools": tools,
                                     "callback_timeout_ms": 300}).result(20)
    answers = ok(reply)["answers"]
    assert answers["lookup"] == {"echo": {"asked": "lookup"}}
    assert answers["boom"]["error_type"] == "callback_failed" and "no such row" in answers["boom"]["error"]
    assert answers["both"]["error_type"] == "callback_failed" and "both" in answers["both"]["error"]
    assert answers["silent"]["error_type"] == "callback_failed" and "300 ms" in answers["silent"]["error"]
    assert [d["kind"] for d in seen] == ["tool"] * 4 and len({d["callback_id"] for d in seen}) == 4
    # A stray or duplicate answer is counted, never fatal.
    worker.send_frame({"callback_id": seen[0]["callback_id"], "result": "late"})
    worker.send_frame({"callback_id": "c-999999", "result": 1})
    stats = ok(worker.request("get_stats"))
    assert stats["errors_by_type"].get("stray_callback_answer", 0) >= 3  # both, late, unknown


def test_a_request_without_client_tools_cannot_call_back(worker: WorkerClient) -> None:
    answers = ok(worker.request("tw_ask", {"names": ["lookup"]}))["answers"]
    assert answers["lookup"]["error_type"] == "callback_failed"
    assert worker.events_of(1) == []


def test_a_waiting_job_streams_progress_and_holds_no_session_slot(worker: WorkerClient) -> None:
    job = worker.submit("tw_job", {"steps": 30, "step_s": 0.02, "stream": True, "session_id": "s"})
    time.sleep(0.1)
    # A write of the same session is not held behind the job its earlier request waits for.
    write = worker.request("update_session_data", {"session_id": "s", "key": "k", "value": 1}, timeout=5)
    assert write["success"] and not job.done()
    reply = job.result(20)
    assert ok(reply)["steps"] == 30 and reply["result"]["job_id"].startswith("job-")
    progress = [e["data"] for e in worker.events_of(reply["id"]) if e["event"] == "progress"]
    assert progress and [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert progress[-1]["done"] == 30 and progress[-1]["status"] == "succeeded"


def test_cancelling_a_waiting_request_cancels_its_job(worker: WorkerClient) -> None:
    job = worker.submit("tw_job", {"steps": 500, "step_s": 0.02}, request_id="long-job")
    time.sleep(0.2)
    assert ok(worker.request("cancel", {"request_id": "long-job"}))["status"] == "cancelled"
    assert job.result(5)["error_type"] == "cancelled"
    jobs = ok(worker.request("list_jobs", {}))["jobs"]
    assert [j["status"] for j in jobs] == ["cancelled"]


def test_inspect_shows_outstanding_callbacks_and_two_way_counters(spawn_worker: Callable[..., WorkerClient],
                                                                 runtime: Path) -> None:
    from bridge.control.client import ControlClient

    worker = spawn_worker("--plugin", "twoway_plugin", env=worker_env(PLUGINS, XDG_RUNTIME_DIR=str(runtime)))
    assert worker.request("ping")["success"]
    wait_for(lambda: (runtime / "dspex" / f"{worker.pid}.sock").exists())
    control = ControlClient(runtime / "dspex" / f"{worker.pid}.sock")
    tools = [{"name": "slow_lookup", "handler": "client"}]
    pending = worker.submit("tw_ask", {"names": ["slow_lookup"], "tools": tools}, request_id="asking")
    deadline = time.monotonic() + 5
    while not worker.events_of("asking") and time.monotonic() < deadline:
        time.sleep(0.02)
    (entry,) = control.call("inflight")["inflight"]
    assert entry["phase"] == "callback" and [c["name"] for c in entry["callbacks"]] == ["slow_lookup"]
    counters = control.call("status")["counters"]
    assert counters["callbacks_outstanding"] == 1 and counters["events_sent"] == 1
    (event,) = worker.events_of("asking")
    worker.send_frame({"callback_id": event["data"]["callback_id"], "result": "row 7"})
    assert ok(pending.result(10))["answers"] == {"slow_lookup": "row 7"}
    worker.submit("tw_sleep", {"seconds": 5}, request_id="c1")
    time.sleep(0.1)
    ok(worker.request("cancel", {"request_id": "c1"}))
    assert worker.submit("tw_sleep", {"seconds": 5, "deadline_ms": 50}).result(5)["error_type"] == "deadline_exceeded"
    counters = control.call("status")["counters"]
    assert (counters["cancelled"], counters["expired"], counters["callbacks_outstanding"]) == (1, 1, 0)
