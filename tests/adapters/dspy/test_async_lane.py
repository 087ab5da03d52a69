"""The asyncio lane through real workers and DSPy's real async HTTP client: hundreds of
execute_program in flight on a handful of threads, one budget (deadline_ms) for the LM
calls of a request, cancel of an in-flight call, and no LM call for a request cancelled
while it waited for a slot."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psutil
import pytest

from fixtures import ok, wait_for
from openai_server import LocalOpenAIServer, value_for


def model(name: str) -> str:
    return f"openai/{name}-{uuid.uuid4().hex[:8]}"


def requests_for(server: LocalOpenAIServer, model_name: str) -> int:
    return sum(1 for r in server.requests if r["body"].get("model") == model_name.split("/", 1)[1])


@pytest.fixture
def worker(spawn_worker: Any) -> Any:
    client = spawn_worker("--no-control")
    assert client.request("ping")["success"]
    return client


def configure(worker: Any, lm_args: dict[str, str], name: str, **extra: Any) -> str:
    chosen = model(name)
    ok(worker.request("configure_lm", {**lm_args, "model": chosen, **extra}, timeout=60))
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}))
    return chosen


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_hundreds_in_flight_at_once_on_few_threads(spawn_worker: Any) -> None:
    server = LocalOpenAIServer().start()  # its own, so max_in_flight is this test's
    try:
        worker = spawn_worker("--no-control")
        ok(worker.request("configure_lm", {"model": "openai/delay-2000", "api_base": server.base_url,
                                           "api_key": "sk-lane-test-123456"}, timeout=60))
        ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}))
        ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "warm"}}, timeout=60))
        process = psutil.Process(worker.pid)
        count = 520
        futures = [worker.submit("execute_program", {"program_id": "p", "inputs": {"question": f"q{i}"}})
                   for i in range(count)]
        most_threads = 0
        while not all(f.done() for f in futures):
            most_threads = max(most_threads, process.num_threads())
            time.sleep(0.02)
        replies = [f.result(1) for f in futures]
        assert [ok(r)["outputs"]["answer"] for r in replies] == [
            value_for("answer", "str", {"question": f"q{i}"}) for i in range(count)]
        # every call was at the server at the same moment, with the worker's threads staying few
        assert server.max_in_flight >= 500, server.max_in_flight
        assert most_threads < 100, most_threads
        assert worker.request("ping")["success"]
    finally:
        server.shutdown()


@pytest.mark.slow
def test_deadline_governs_a_slow_lm_call_and_the_server_sees_it_abandoned(
        worker: Any, lm_args: dict[str, str], openai_server: LocalOpenAIServer) -> None:
    configure(worker, lm_args, "delay-3000")
    abandoned = openai_server.abandoned
    started = time.monotonic()
    reply = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "slow"},
                                              "deadline_ms": 400}).result(10)
    took = time.monotonic() - started
    assert reply["success"] is False and reply["error_type"] == "deadline_exceeded", reply
    assert 0.35 < took < 2.0, took  # at the deadline, not at the LM's 3 s
    wait_for(lambda: openai_server.abandoned > abandoned, timeout=6)
    assert worker.request("ping")["success"]


def test_the_lms_own_timeout_bounds_the_whole_call(worker: Any, lm_args: dict[str, str]) -> None:
    configure(worker, lm_args, "delay-3000", timeout=0.3, num_retries=0)
    started = time.monotonic()
    reply = worker.request("execute_program", {"program_id": "p", "inputs": {"question": "slow"}}, timeout=10)
    assert reply["error_type"] == "lm_error" and "timed out" in reply["error"], reply
    assert time.monotonic() - started < 2.0
    # a deadline shorter than the LM's timeout wins
    bounded = worker.request("execute_program", {"program_id": "p", "inputs": {"question": "slow"},
                                                          "deadline_ms": 100}, timeout=10)
    assert bounded["error_type"] == "deadline_exceeded"


@pytest.mark.slow
def test_cancel_of_an_in_flight_execute_program(worker: Any, lm_args: dict[str, str],
                                                openai_server: LocalOpenAIServer) -> None:
    chosen = configure(worker, lm_args, "delay-3000")
    abandoned = openai_server.abandoned
    pending = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "x"}}, request_id=501)
    wait_for(lambda: requests_for(openai_server, chosen) == 1, timeout=10)
    started = time.monotonic()
    ok(worker.request("cancel", {"request_id": 501}))
    reply = pending.result(5)
    assert reply["error_type"] == "cancelled"
    assert time.monotonic() - started < 1.0  # a hang bound
    wait_for(lambda: openai_server.abandoned > abandoned, timeout=6)
    assert worker.request("cancel", {"request_id": 501})["error_type"] == "request_not_found"


@pytest.mark.slow
def test_a_request_cancelled_while_waiting_for_a_lane_slot_makes_no_lm_call(
        spawn_worker: Any, lm_args: dict[str, str], openai_server: LocalOpenAIServer) -> None:
    worker = spawn_worker("--no-control", "--max-async", "1")
    chosen = configure(worker, lm_args, "delay-800")
    first = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "first"}})
    wait_for(lambda: requests_for(openai_server, chosen) == 1, timeout=10)
    waiting = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "second"}},
                            request_id=902)
    time.sleep(0.1)
    ok(worker.request("cancel", {"request_id": 902}))
    assert waiting.result(5)["error_type"] == "cancelled"
    assert ok(first.result(10))["outputs"]["answer"] == value_for("answer", "str", {"question": "first"})
    time.sleep(0.3)
    assert requests_for(openai_server, chosen) == 1  # the cancelled one never reached the LM


@pytest.mark.slow
def test_max_async_limits_the_lane(spawn_worker: Any, lm_args: dict[str, str],
                                   openai_server: LocalOpenAIServer) -> None:
    worker = spawn_worker("--no-control", "--max-async", "2")
    chosen = configure(worker, lm_args, "delay-400")
    futures = [worker.submit("execute_program", {"program_id": "p", "inputs": {"question": f"{i}"}})
               for i in range(6)]
    time.sleep(0.25)
    assert requests_for(openai_server, chosen) == 2  # the rest wait for a slot, holding no thread
    assert worker.request("ping")["success"]  # pings stay immediate
    assert all(ok(f.result(15)) for f in futures)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_async_must_be_a_positive_integer(spawn_worker: Any, value: str) -> None:
    worker = spawn_worker("--max-async", value)
    assert worker.process.wait(10) == 2


def test_order_in_a_session_holds_on_the_lane(worker: Any, lm_args: dict[str, str]) -> None:
    configure(worker, lm_args, "delay-200")
    run = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "a"}})
    deleted = worker.submit("delete_program", {"program_id": "p"})
    after = worker.submit("execute_program", {"program_id": "p", "inputs": {"question": "b"}})
    assert ok(run.result(10))["outputs"]["answer"] == value_for("answer", "str", {"question": "a"})
    assert ok(deleted.result(10))["status"] == "deleted"
    assert after.result(10)["error_type"] == "program_not_found"


@pytest.mark.slow
def test_the_pool_stays_free_while_the_lane_waits(worker: Any, lm_args: dict[str, str]) -> None:
    """More LM-bound requests than the pool has threads (64) do not hold up other work."""
    configure(worker, lm_args, "delay-1500")
    futures = [worker.submit("execute_program", {"program_id": "p", "inputs": {"question": f"{i}"}})
               for i in range(100)]
    time.sleep(0.2)
    started = time.monotonic()
    listed = worker.request("list_programs", {"session_id": "other"}, timeout=5)
    assert ok(listed)["total_count"] == 0 and time.monotonic() - started < 1.0
    assert all(f.result(20)["success"] for f in futures)
