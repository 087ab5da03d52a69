"""execute_program with `stream: true` through real workers and DSPy's real HTTP streaming
path: the local server answers `"stream": true` with server-sent events, DSPy's stream
listeners cut them into per-field deltas, and the worker sends each as a `chunk` event
before the usual reply. Deltas must join to exactly each string field's final value."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

import pytest

from fixtures import PLUGINS, ok, wait_for, worker_env
from openai_server import LocalOpenAIServer, value_for


def joined_chunks(events: list[dict[str, Any]]) -> dict[str, str]:
    fields: dict[str, str] = defaultdict(str)
    for event in events:
        if event["event"] == "chunk":
            fields[event["data"]["field"]] += event["data"]["delta"]
    return dict(fields)


@pytest.fixture
def worker(spawn_worker: Any, lm_args: dict[str, str]) -> Any:
    client = spawn_worker("--plugin", "sample_tools", "--no-control", env=worker_env(PLUGINS))
    # A model name of its own per test, so the server's request log is this test's.
    ok(client.request("configure_lm", {**lm_args, "model": f"openai/stream-{uuid.uuid4().hex[:8]}"}, timeout=60))
    return client


def run(worker: Any, program: dict[str, Any], inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ok(worker.request("create_program", {"id": "p", **program}, timeout=60))
    return worker.submit("execute_program", {"program_id": "p", "inputs": inputs, **extra}).result(60)


def test_predict_streams_each_string_field_and_the_deltas_join_to_the_final_value(
        worker: Any, openai_server: LocalOpenAIServer) -> None:
    reply = run(worker, {"signature": "question -> answer, summary"}, {"question": "why is the sky blue"},
                stream=True)
    outputs = ok(reply)["outputs"]
    events = worker.events_of(reply["id"])
    chunks = [e for e in events if e["event"] == "chunk"]
    # Several pieces per field (the server sends 4 characters at a time), each a real delta.
    assert len([c for c in chunks if c["data"]["field"] == "answer"]) > 3
    assert joined_chunks(events) == {"answer": outputs["answer"], "summary": outputs["summary"]}
    assert outputs["answer"] == value_for("answer", "str", {"question": "why is the sky blue"})
    assert all(e["id"] == reply["id"] and "success" not in e for e in events)
    # DSPy asked the server to stream: the real SSE path ran.
    assert any(r["body"].get("stream") is True for r in openai_server.requests)


def test_chain_of_thought_streams_its_reasoning_too(worker: Any) -> None:
    reply = run(worker, {"signature": "question -> answer", "program_type": "chain_of_thought"},
                {"question": "two plus two"}, stream=True)
    outputs = ok(reply)["outputs"]
    events = worker.events_of(reply["id"])
    joined = joined_chunks(events)
    assert joined == {"reasoning": outputs["reasoning"], "answer": outputs["answer"]}
    assert outputs["reasoning"] == value_for("reasoning", "str", {"question": "two plus two"})
    # reasoning is written before the answer, and so streamed before it
    fields = [e["data"]["field"] for e in events if e["event"] == "chunk"]
    assert fields.index("answer") > max(i for i, f in enumerate(fields) if f == "reasoning")
    status = [e["data"]["message"] for e in events if e["event"] == "status"]
    assert status[0] == "ChainOfThought started"


def test_react_streams_its_final_fields_and_reports_tool_calls(worker: Any) -> None:
    reply = run(worker, {"signature": "question -> answer", "program_type": "react", "tools": ["shout"],
                         "options": {"max_iters": 4}}, {"question": "hello world"}, stream=True)
    result = ok(reply)
    events = worker.events_of(reply["id"])
    assert joined_chunks(events) == {"reasoning": result["outputs"]["reasoning"],
                                     "answer": result["outputs"]["answer"]}
    assert [s["tool"] for s in result["trajectory"]] == ["shout", "finish"]
    statuses = [e["data"] for e in events if e["event"] == "status"]
    assert {"message": "Calling tool shout", "tool": "shout", "phase": "start"} in statuses
    assert any(s.get("phase") == "end" for s in statuses)
    # the tool call comes before any chunk of the final answer
    kinds = [(e["event"], e["data"].get("tool")) for e in events]
    assert kinds.index(("status", "shout")) < next(i for i, e in enumerate(events)
                                                   if e["event"] == "chunk" and e["data"]["field"] == "answer")


def test_non_string_fields_come_typed_in_the_reply(worker: Any) -> None:
    reply = run(worker, {"signature": "question -> answer, count: int, tags: list[str]"},
                {"question": "abc"}, stream=True)
    outputs = ok(reply)["outputs"]
    assert isinstance(outputs["count"], int) and isinstance(outputs["tags"], list)
    joined = joined_chunks(worker.events_of(reply["id"]))
    assert joined == {"answer": outputs["answer"]}


def test_a_plain_request_gets_no_events(worker: Any) -> None:
    reply = run(worker, {"signature": "question -> answer", "program_type": "chain_of_thought"},
                {"question": "quiet please"})
    assert ok(reply)["outputs"]["answer"] == value_for("answer", "str", {"question": "quiet please"})
    time.sleep(0.05)
    assert worker.events_of(reply["id"]) == []
    assert "warning" not in reply


def test_stream_on_a_command_that_cannot_stream_gets_a_warning(worker: Any) -> None:
    reply = worker.submit("list_programs", {"stream": True}).result(10)
    assert ok(reply)["total_count"] == 0 and "cannot stream" in reply["warning"]
    assert worker.events_of(reply["id"]) == []


def test_stream_that_is_not_a_boolean_is_refused(worker: Any) -> None:
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}))
    reply = worker.request("execute_program", {"program_id": "p", "inputs": {"question": "x"}, "stream": "yes"})
    assert reply["error_type"] == "invalid_arguments" and "'stream'" in reply["error"]


@pytest.mark.parametrize("adapter", ["json", "xml"])
@pytest.mark.slow
def test_streaming_on_the_gemini_alias_and_with_the_other_adapters(worker: Any, adapter: str) -> None:
    ok(worker.request("create_program", {"id": "j", "signature": "question -> answer", "adapter": adapter}))
    question = 'say "quoted" \\ and \u00e9 please'
    reply = worker.submit("execute_gemini_program", {"program_id": "j", "inputs": {"question": question},
                                                     "stream": True}).result(60)
    outputs = ok(reply)["outputs"]
    assert joined_chunks(worker.events_of(reply["id"])) == {"answer": outputs["answer"]}


def test_json_string_deltas_decode_escapes_split_across_pieces() -> None:
    from bridge.adapters.dspy.streaming import JSONStringDeltas

    literal = '"a \\"b\\" \\\\ \\u00e9\\n end"'
    import json

    for size in (1, 2, 3, 5):
        decoder = JSONStringDeltas()
        pieces = [literal[i:i + size] for i in range(0, len(literal), size)] + ["}"]
        assert "".join(decoder.feed(piece) for piece in pieces) == json.loads(literal)


def test_streamed_requests_side_by_side_keep_their_chunks_apart(worker: Any) -> None:
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer"}))
    futures = [worker.submit("execute_program", {"program_id": "p", "inputs": {"question": f"q{i} " * (i + 1)},
                                                 "stream": True}) for i in range(12)]
    for index, future in enumerate(futures):
        reply = future.result(60)
        answer = ok(reply)["outputs"]["answer"]
        assert answer == value_for("answer", "str", {"question": (f"q{index} " * (index + 1)).strip()})
        assert joined_chunks(worker.events_of(reply["id"])) == {"answer": answer}


def test_a_stream_cancelled_midway_stops_and_its_socket_closes(spawn_worker: Any, lm_args: dict[str, str],
                                                               openai_server: LocalOpenAIServer) -> None:
    client = spawn_worker("--no-control")
    # 30 ms between pieces: the stream lasts seconds unless it is abandoned.
    ok(client.request("configure_lm", {**lm_args, "model": f"openai/gap-30-{uuid.uuid4().hex[:6]}"}, timeout=60))
    ok(client.request("create_program", {"id": "p", "signature": "question -> answer"}))
    abandoned_before = openai_server.abandoned
    pending = client.submit("execute_program", {"program_id": "p", "inputs": {"question": "long " * 20},
                                                "stream": True}, request_id=77)
    wait_for(lambda: any(e["event"] == "chunk" for e in client.events_of(77)), timeout=20)
    ok(client.request("cancel", {"request_id": 77}))
    assert pending.result(5)["error_type"] == "cancelled"
    count = len(client.events_of(77))
    wait_for(lambda: openai_server.abandoned > abandoned_before, timeout=5)
    time.sleep(0.2)
    assert len(client.events_of(77)) == count  # nothing after the reply
