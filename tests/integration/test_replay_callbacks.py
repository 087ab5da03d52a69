"""Record and replay of two-way sessions: a real worker records a ReAct program whose tools
live in the client and an evaluate with a client metric; the transcript holds the events,
the callbacks and their answers; `replay_transcript` answers the callbacks from it offline
(in process and through a worker), compares events, and notices a changed one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.replay import replay_transcript
from fixtures import PLUGINS, copy_transcript_with, ok, worker_env

LOOKUP = {"name": "lookup", "description": "Finds a row.", "handler": "client",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
COUNT = {"name": "count_words", "description": "Counts words.", "handler": "client",
         "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


def record(path: Path, spawn_worker: Any, lm_args: dict[str, str]) -> None:
    worker = spawn_worker("--record", str(path), "--no-control", env=worker_env(PLUGINS))

    def on_event(event: dict[str, Any]) -> None:
        data = event["data"]
        if event["event"] != "callback":
            return
        if data["name"] == "lookup":
            answer: dict[str, Any] = {"result": {"row": data["args"]["query"][::-1]}}
        elif data["name"] == "count_words":
            answer = {"error": "counter offline"}
        else:  # the metric: 1 for an answer that mentions the question
            answer = {"result": data["args"]["example"]["question"] in data["args"]["prediction"]["answer"]}
        worker.send_frame({"callback_id": data["callback_id"], **answer})

    worker.on_event = on_event
    assert worker.request("ping", request_id=1)["success"]
    ok(worker.request("configure_lm", lm_args, request_id=2, timeout=60))
    ok(worker.request("create_program", {"id": "agent", "signature": "question -> answer", "program_type": "react",
                                         "tools": [LOOKUP, COUNT]}, request_id=3, timeout=60))
    ok(worker.request("execute_program", {"program_id": "agent", "inputs": {"question": "where is bob"}},
                      request_id=4, timeout=60))
    ok(worker.request("create_program", {"id": "qa", "signature": "question -> answer"}, request_id=5))
    ok(worker.request("evaluate_program", {"program_id": "qa", "wait": True, "num_threads": 2,
                                           "devset": [{"question": "a b", "answer": "x"},
                                                      {"question": "c", "answer": "y"}],
                                           "metric": {"handler": "client", "name": "mentions"}},
                      request_id=6, timeout=60))
    worker.close(timeout=10)


@pytest.fixture(scope="module")
def transcript(tmp_path_factory: pytest.TempPathFactory, openai_server: Any) -> Path:
    from bridge.wire.client import WorkerClient, dspex_serve_argv

    path = tmp_path_factory.mktemp("twoway") / "two_way.jsonl"
    lm_args = {"model": "openai/two-way-replay", "api_base": openai_server.base_url, "api_key": "sk-test-secret-123456"}
    workers: list[WorkerClient] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> WorkerClient:
        client = WorkerClient(dspex_serve_argv(*args), env=env or worker_env())
        workers.append(client)
        return client

    record(path, spawn, lm_args)
    return path


def frames(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]


def test_the_transcript_holds_events_callbacks_and_answers(transcript: Path) -> None:
    entries = [e for e in frames(transcript) if e.get("type") == "frame"]
    callbacks = [e["frame"] for e in entries if e["dir"] == "out" and e["frame"].get("event") == "callback"]
    answers = [e["frame"] for e in entries if e["dir"] == "in" and "callback_id" in e["frame"]]
    assert [(c["id"], c["data"]["name"]) for c in callbacks] == [(4, "lookup"), (4, "count_words"),
                                                                  (6, "mentions"), (6, "mentions")]
    assert sorted(a["callback_id"] for a in answers) == sorted(c["data"]["callback_id"] for c in callbacks)


def test_replay_answers_callbacks_from_the_transcript_offline(transcript: Path, openai_server: Any) -> None:
    before = len(openai_server.requests)
    result = replay_transcript(str(transcript))
    assert result.ok, [m.to_dict() for m in result.mismatches]
    assert result.replies_compared == 6 and len(openai_server.requests) == before


def test_replay_through_a_worker_answers_its_callbacks_too(transcript: Path, openai_server: Any) -> None:
    before = len(openai_server.requests)
    result = replay_transcript(str(transcript), worker_argv=[sys.executable, "-m", "dspex_cli", "serve", "{args}"],
                               worker_env=worker_env())
    assert result.ok, [m.to_dict() for m in result.mismatches]
    assert result.replies_compared == 6 and len(openai_server.requests) == before


def test_a_changed_callback_answer_changes_the_replayed_reply(transcript: Path, tmp_path: Path) -> None:
    def edit(entry: dict[str, Any]) -> None:
        frame = entry.get("frame")
        if entry.get("dir") == "in" and isinstance(frame, dict) and frame.get("result") == {"row": "bob si erehw"}:
            frame["result"] = {"row": "someone else"}

    result = replay_transcript(str(copy_transcript_with(transcript, tmp_path / "changed.jsonl", edit)))
    assert not result.ok
    # the agent saw another observation, so its next prompt is not in the cassette, and request 4 failed
    assert any(m.kind == "lm_miss" and "someone else" in str(m.actual) for m in result.mismatches)
    assert any(m.request_id == 4 and m.path == "success" for m in result.mismatches)


def test_a_callback_the_recording_did_not_ask_is_a_mismatch_not_a_hang(transcript: Path, tmp_path: Path) -> None:
    def edit(entry: dict[str, Any]) -> None:  # the recorded callback of lookup asked for something else
        frame = entry.get("frame")
        if isinstance(frame, dict) and frame.get("event") == "callback" and frame["data"]["name"] == "lookup":
            frame["data"]["args"] = {"query": "not what the replay asks"}

    result = replay_transcript(str(copy_transcript_with(transcript, tmp_path / "unasked.jsonl", edit)), reply_timeout=20)
    kinds = {m.kind for m in result.mismatches}
    assert "callback_miss" in kinds and "event" in kinds and "no_reply" not in kinds
