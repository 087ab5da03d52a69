"""Tools and metrics that live in the client, through a real worker and DSPy's real LM
path against the local server: ReAct calls each client tool through a `callback` event
and sees the client's answer as its observation; evaluate scores through a client metric."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fixtures import ok
from openai_server import value_for

LOOKUP = {"name": "lookup", "description": "Finds a row by its text.", "handler": "client",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
COUNT = {"name": "count_words", "description": "Counts words.", "handler": "client",
         "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


def answer_callbacks(worker: Any, answer: Callable[[dict[str, Any]], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Answers each callback event with answer(data) (None: leave it unanswered)."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") != "callback":
            return
        with lock:
            seen.append(event["data"])
        frame = answer(event["data"])
        if frame is not None:
            worker.send_frame({"callback_id": event["data"]["callback_id"], **frame})

    worker.on_event = on_event
    return seen


def tool_answer(data: dict[str, Any]) -> dict[str, Any] | None:
    if data["name"] == "lookup":
        return {"result": {"row": data["args"]["query"].upper()}}
    if data["name"] == "count_words":
        return {"result": len(data["args"]["text"].split())}
    return {"error": f"no tool {data['name']}"}


def create_agent(worker: Any, tools: list[Any], program_id: str = "agent") -> dict[str, Any]:
    return ok(worker.request("create_program", {"id": program_id, "signature": "question -> answer",
                                                "program_type": "react", "tools": tools,
                                                "options": {"max_iters": 6}}, timeout=60))


def test_react_calls_client_tools_and_a_plugin_tool(worker: Any) -> None:
    seen = answer_callbacks(worker, tool_answer)
    created = create_agent(worker, [LOOKUP, "shout", COUNT])
    assert created["tools"] == [LOOKUP, "shout", COUNT]  # program_data keeps the declarations
    reply = worker.submit("execute_program", {"program_id": "agent", "inputs": {"question": "hello big world"}}
                          ).result(60)
    result = ok(reply)
    steps = result["trajectory"]
    assert [s["tool"] for s in steps] == ["lookup", "shout", "count_words", "finish"]
    assert steps[0]["observation"] == {"row": "HELLO BIG WORLD"} and steps[2]["observation"] == 3
    assert steps[1]["observation"] == "HELLO BIG WORLD."
    assert [(d["kind"], d["name"], d["args"]) for d in seen] == [
        ("tool", "lookup", {"query": "hello big world"}), ("tool", "count_words", {"text": "hello big world"})]
    events = worker.events_of(reply["id"])
    assert [e["event"] for e in events] == ["callback", "callback"]  # unstreamed: callbacks only
    observed = '{"row": "HELLO BIG WORLD"} ; HELLO BIG WORLD. ; 3 ; Completed.'
    assert result["outputs"]["answer"] == value_for("answer", "str",
                                                    {"question": "hello big world", "observations": observed})


def test_an_error_answer_or_a_timeout_is_the_agents_observation(worker: Any) -> None:
    answer_callbacks(worker, lambda d: {"error": "database down"} if d["name"] == "lookup" else None)
    create_agent(worker, [LOOKUP, COUNT])
    result = ok(worker.request("execute_program", {"program_id": "agent", "inputs": {"question": "hi there"},
                                                  "callback_timeout_ms": 300}, timeout=60))
    failed, silent, _ = result["trajectory"]
    assert failed["observation"].startswith("Execution error in lookup:") and "database down" in failed["observation"]
    assert "not answered within 300 ms" in silent["observation"]
    assert ok(worker.request("get_stats"))["errors_by_type"].get("callback_failed", 0) == 0  # the request did not fail


@pytest.mark.slow
def test_another_worker_rebuilds_a_client_tool_program_from_program_data(worker: Any, spawn_worker: Any,
                                                                          lm_args: dict[str, str]) -> None:
    program_data = create_agent(worker, [COUNT])
    other = spawn_worker()
    ok(other.request("configure_lm", {**lm_args, "model": f"openai/cb-{uuid.uuid4().hex[:8]}"}, timeout=60))
    answer_callbacks(other, tool_answer)
    result = ok(other.request("execute_program", {"program_id": "agent", "inputs": {"question": "a b c d"},
                                                  "program_data": program_data}, timeout=60))
    assert [(s["tool"], s["observation"]) for s in result["trajectory"]] == [("count_words", 4),
                                                                             ("finish", "Completed.")]


@pytest.mark.parametrize("tool, why", [
    ({"name": "lookup", "description": "x", "handler": "client"}, "needs 'parameters'"),
    ({**LOOKUP, "name": "no spaces"}, "must be an identifier"),
    ({**LOOKUP, "name": "finish"}, "must be an identifier"),
    ({**LOOKUP, "parameters": {"type": "string"}}, "must describe an object"),
    ({**LOOKUP, "parameters": {"type": "object", "properties": {"q": {"type": 7}}}}, "not a valid JSON schema"),
    ({**LOOKUP, "parameters": {"type": "object", "properties": {}, "required": ["q"]}}, "'required'"),
    ({**LOOKUP, "handler": "server"}, "handler"),
    ({**LOOKUP, "extra": 1}, "unknown keys"),
])
def test_a_bad_client_tool_declaration_is_invalid_arguments(refusing_worker: Any, tool: dict[str, Any],
                                                            why: str) -> None:
    reply = refusing_worker.request("create_program", {"signature": "question -> answer", "program_type": "react",
                                                       "tools": [tool]}, timeout=60)
    assert reply["success"] is False and reply["error_type"] == "invalid_arguments" and why in reply["error"]
    assert refusing_worker.request("ping")["success"]


def test_a_declared_twice_client_tool_is_refused(worker: Any) -> None:
    reply = worker.request("create_program", {"signature": "question -> answer", "program_type": "react",
                                              "tools": [LOOKUP, LOOKUP]}, timeout=60)
    assert reply["error_type"] == "invalid_arguments" and "declared twice" in reply["error"]


DEVSET = [{"question": "one two", "answer": "x"}, {"question": "three", "answer": "y"},
          {"question": "four five six", "answer": "z"}]


def test_evaluate_scores_with_a_client_metric(worker: Any) -> None:
    def metric(data: dict[str, Any]) -> dict[str, Any]:
        example, prediction = data["args"]["example"], data["args"]["prediction"]
        # the score depends on both objects, so a wrong example or prediction shows
        expected = value_for("answer", "str", {"question": example["question"]})
        return {"result": 1.0 if prediction["answer"] == expected and example["answer"] != "y" else 0.0}

    seen = answer_callbacks(worker, metric)
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    reply = worker.submit("evaluate_program", {"program_id": "qa", "devset": DEVSET, "wait": True,
                                               "metric": {"handler": "client", "name": "my_metric"}}).result(60)
    result = ok(reply)
    # unstreamed: the callbacks it asked for, no progress events
    assert [e["event"] for e in worker.events_of(reply["id"])] == ["callback"] * 3
    assert [r["score"] for r in result["results"]] == [1.0, 0.0, 1.0]
    assert result["score"] == pytest.approx(200 / 3, abs=0.01) and result["metric"] == {
        "metric": "my_metric", "handler": "client"}
    assert sorted(d["args"]["example"]["question"] for d in seen) == sorted(r["question"] for r in DEVSET)
    assert all(d["kind"] == "metric" and d["name"] == "my_metric" for d in seen)


def test_a_client_metric_answer_that_is_not_a_number_is_that_examples_error(worker: Any) -> None:
    answer_callbacks(worker, lambda d: {"result": "great"} if d["args"]["example"]["answer"] == "y"
                     else {"result": True})
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    result = ok(worker.request("evaluate_program", {"program_id": "qa", "devset": DEVSET, "wait": True,
                                                   "metric": {"handler": "client", "name": "m"}}, timeout=60))
    by_answer = {DEVSET[r["index"]]["answer"]: r for r in result["results"]}
    assert by_answer["x"]["score"] == 1.0 and by_answer["z"]["score"] == 1.0
    assert by_answer["y"]["error_type"] == "metric_error" and "not a number" in by_answer["y"]["error"]
    assert result["errors"] == 1


def test_many_metric_callbacks_wait_at_once(worker: Any) -> None:
    """16 threads of an evaluation each wait on a callback: held until all 16 are out."""
    all_out = threading.Event()
    pending: list[str] = []
    lock = threading.Lock()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") != "callback":
            return
        with lock:
            pending.append(event["data"]["callback_id"])
            release = len(pending) == 16
        if release:
            all_out.set()
            for callback_id in pending:
                worker.send_frame({"callback_id": callback_id, "result": 1})
        elif all_out.is_set():
            worker.send_frame({"callback_id": event["data"]["callback_id"], "result": 1})

    worker.on_event = on_event
    devset = [{"question": f"q{i}", "answer": "a"} for i in range(32)]
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    result = ok(worker.request("evaluate_program", {"program_id": "qa", "devset": devset, "wait": True,
                                                   "num_threads": 16,
                                                   "metric": {"handler": "client", "name": "m"}}, timeout=60))
    assert all_out.is_set() and result["score"] == 100.0 and result["errors"] == 0


@pytest.mark.parametrize("metric, why", [
    ({"handler": "client"}, "needs a 'name'"),
    ({"handler": "client", "name": "m", "field": "answer"}, "unknown keys"),
    ({"handler": "python", "name": "m"}, "handler"),
])
@pytest.mark.slow
def test_a_bad_client_metric_is_invalid_arguments(worker: Any, metric: dict[str, Any], why: str) -> None:
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    reply = worker.request("evaluate_program", {"program_id": "qa", "devset": DEVSET, "wait": True,
                                                "metric": metric}, timeout=60)
    assert reply["error_type"] == "invalid_arguments" and why in reply["error"]


def test_a_client_metric_needs_wait(worker: Any) -> None:
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, timeout=60))
    reply = worker.request("evaluate_program", {"program_id": "qa", "devset": DEVSET, "wait": False,
                                                "metric": {"handler": "client", "name": "m"}}, timeout=60)
    assert reply["error_type"] == "invalid_arguments" and "wait" in reply["error"]
