"""The job table: start, wait, progress, cancel, session cleanup, bounds."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bridge import jobs as jobs_module
from bridge.context import Context
from bridge.engine import Engine
from bridge.errors import BridgeError
from bridge.jobs import Job, run_as_job


@pytest.fixture
def engine() -> Engine:
    engine = Engine(adapters=[])
    yield engine
    engine.close()


def _ctx(engine: Engine, session_id: str = "s1") -> Context:
    return Context(engine, 7, "test_job", session_id)


def test_wait_true_replies_with_the_result_and_the_job_id(engine: Engine) -> None:
    def work(job: Job, ctx: Context) -> dict[str, Any]:
        for i in range(3):
            job.progress(step=1, score=float(i))
        return {"value": ctx.session_id}

    reply = run_as_job("demo", {"wait": True}, _ctx(engine), work, wait_default=False, total=3).future.result(5)
    assert reply["value"] == "s1" and reply["job_id"].startswith("job-")
    view = engine.jobs.get(reply["job_id"]).view()
    assert view["status"] == "succeeded" and view["progress"] == {"done": 3, "total": 3}
    assert view["best_score"] == 2.0 and view["result"] == {"value": "s1"}


def test_wait_false_replies_at_once_and_get_job_sees_progress(engine: Engine) -> None:
    release = threading.Event()

    def work(job: Job, ctx: Context) -> dict[str, Any]:
        job.progress(step=1)
        release.wait(5)
        return {"ok": True}

    reply = run_as_job("demo", {}, _ctx(engine), work, wait_default=False, total=2)
    assert reply["status"] == "running"
    job = engine.jobs.get(reply["job_id"])
    deadline = time.monotonic() + 5
    while job.view()["progress"]["done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.view()["status"] == "running" and job.view()["progress"]["done"] == 1
    release.set()
    assert job.wait(5) and job.view()["status"] == "succeeded"


def test_cancel_ends_the_job_at_once_and_drops_its_late_result(engine: Engine) -> None:
    release = threading.Event()

    def work(job: Job, ctx: Context) -> dict[str, Any]:
        release.wait(5)
        return {"late": True}

    job_id = run_as_job("demo", {"wait": False}, _ctx(engine), work, wait_default=True)["job_id"]
    reply = engine.call("cancel_job", {"job_id": job_id})
    assert reply["result"] == {"job_id": job_id, "status": "cancelled", "cancelled": True}
    release.set()
    time.sleep(0.1)
    view = engine.call("get_job", {"job_id": job_id})["result"]
    assert view["status"] == "cancelled" and "result" not in view and view["error_type"] == "cancelled"
    again = engine.call("cancel_job", {"job_id": job_id})["result"]
    assert again["cancelled"] is False


def test_a_failing_job_keeps_its_error_type(engine: Engine) -> None:
    class Broken(BridgeError):
        error_type = "broken_thing"

    def work(job: Job, ctx: Context) -> dict[str, Any]:
        raise Broken("it broke")

    with pytest.raises(Broken):
        run_as_job("demo", {"wait": True}, _ctx(engine), work, wait_default=False).future.result(5)
    (job,) = engine.jobs.all("s1")
    assert job.view()["status"] == "failed" and job.view()["error_type"] == "broken_thing"


def test_cleanup_session_cancels_only_that_sessions_jobs(engine: Engine) -> None:
    release = threading.Event()

    def work(job: Job, ctx: Context) -> dict[str, Any]:
        release.wait(5)
        return {}

    mine = run_as_job("demo", {}, _ctx(engine, "a"), work, wait_default=False)["job_id"]
    other = run_as_job("demo", {}, _ctx(engine, "b"), work, wait_default=False)["job_id"]
    reply = engine.call("cleanup_session", {"session_id": "a"})["result"]
    assert reply["jobs_cancelled"] == 1
    assert engine.jobs.get(mine).status == "cancelled" and engine.jobs.get(other).status == "running"
    listed = engine.call("list_jobs", {"session_id": "b"})["result"]
    assert [j["job_id"] for j in listed["jobs"]] == [other] and "result" not in listed["jobs"][0]
    release.set()


def test_running_jobs_are_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "MAX_RUNNING_JOBS", 2)
    release = threading.Event()

    def work(job: Job, ctx: Context) -> dict[str, Any]:
        release.wait(5)
        return {}

    for _ in range(2):
        run_as_job("demo", {}, _ctx(engine), work, wait_default=False)
    with pytest.raises(BridgeError) as refused:
        run_as_job("demo", {}, _ctx(engine), work, wait_default=False)
    assert refused.value.error_type == "limit_exceeded"
    release.set()


def test_unknown_and_malformed_job_ids_are_clear_errors(engine: Engine) -> None:
    assert engine.call("get_job", {"job_id": "job-1-nope"})["error_type"] == "job_not_found"
    assert engine.call("cancel_job", {"job_id": "x" * 10_000})["error_type"] == "job_not_found"
    assert engine.call("get_job", {"job_id": 5})["error_type"] == "invalid_arguments"
    with pytest.raises(BridgeError):
        run_as_job("demo", {"wait": "yes"}, _ctx(engine), lambda j, c: {}, wait_default=False)
