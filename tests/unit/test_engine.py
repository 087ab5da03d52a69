"""Handlers through engine.call: the contract's commands, sessions, typed outputs, secrets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bridge import Engine, EngineConfig
from bridge.redact import REDACTED

SECRET = "sk-test-secret-123456"  # what the lm_args fixture passes
PLAIN_SECRET = "hunter2-not-shaped-like-a-key"  # caught only because configure_lm remembers it


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(EngineConfig(worker_id="test-worker"))
    yield eng
    eng.close()


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["success"] is True, reply
    assert isinstance(reply["result"], dict)
    assert isinstance(reply["timestamp"], float)
    return reply["result"]


def err(reply: dict[str, Any], error_type: str) -> str:
    assert reply["success"] is False, reply
    assert reply["error_type"] == error_type, reply
    assert isinstance(reply["error"], str) and reply["error"]
    return reply["error"]


QA_MAP = {
    "name": "QA", "description": "Answer questions.",
    "inputs": [{"name": "question", "type": "string", "description": "the question"}],
    "outputs": [{"name": "answer", "type": "string"}, {"name": "confidence", "type": "float"}],
}


# --------------------------------------------------------------- contract commands


def test_ping_result_keys(engine: Engine) -> None:
    reply = engine.call("ping", {"initialization": True, "worker_id": "w0"}, request_id=0)
    assert reply["id"] == 0
    result = ok(reply)
    assert result["status"] == "ok"
    assert isinstance(result["timestamp"], float)
    assert isinstance(result["uptime"], float)
    assert result["mode"] == "standalone"
    assert result["dspy_available"] is True
    assert result["gemini_available"] is False  # conftest removed every key from the env
    assert result["worker_id"] == "test-worker"


def test_reply_echoes_any_id(engine: Engine) -> None:
    for rid in (999999, 2 ** 53, "abc", 1.5):
        assert engine.call("ping", request_id=rid)["id"] == rid


def test_full_contract_walk_with_mock_lm(engine: Engine) -> None:
    result = ok(engine.call("configure_lm", {"model": "mock", "temperature": 0.3}))
    assert result["status"] == "configured"
    assert result["model"] == "mock" and result["provider"] == "mock" and result["temperature"] == 0.3

    created = ok(engine.call("create_program", {"id": "qa", "signature": QA_MAP}))
    for key in ("program_id", "status", "signature", "program_type", "signature_class", "field_mapping",
                "fallback_used", "signature_def"):
        assert key in created, key
    assert created["program_id"] == "qa" and created["status"] == "created"
    assert created["program_type"] == "predict" and created["fallback_used"] is False
    assert created["signature_class"] == "QA"
    assert created["field_mapping"] == {"inputs": {"question": "string"},
                                        "outputs": {"answer": "string", "confidence": "float"}}
    assert created["signature_def"] == "question: str -> answer: str, confidence: float"

    executed = ok(engine.call("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}}))
    assert executed["program_id"] == "qa"
    assert set(executed["outputs"]) == {"answer", "confidence"}
    assert isinstance(executed["outputs"]["answer"], str) and executed["outputs"]["answer"]
    assert isinstance(executed["outputs"]["confidence"], float)
    assert isinstance(executed["execution_time"], float) and executed["execution_time"] >= 0
    assert executed["duration_ms"] == pytest.approx(executed["execution_time"] * 1000, abs=0.01)
    usage = executed["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    listed = ok(engine.call("list_programs", {}))
    assert listed["total_count"] == 1
    entry = listed["programs"][0]
    for key in ("id", "created_at", "execution_count", "last_executed", "signature"):
        assert key in entry, key
    assert entry["id"] == "qa" and entry["execution_count"] == 1 and entry["last_executed"] is not None
    assert entry["signature"] == created["signature"]

    info = ok(engine.call("get_program_info", {"program_id": "qa"}))
    for key in ("program_id", "signature", "created_at", "execution_count", "last_executed"):
        assert key in info, key
    assert info["execution_count"] == 1
    assert info["program_data"]["signature_def"] == created["signature_def"]

    stats = ok(engine.call("get_stats"))
    for key in ("programs_count", "command_count", "error_count", "uptime", "memory_usage",
                "dspy_available", "gemini_available"):
        assert key in stats, key
    assert stats["programs_count"] == 1
    assert stats["command_count"] == 6  # configure, create, execute, list, info, get_stats
    assert stats["error_count"] == 0
    assert stats["inflight"] == 0  # nothing runs while get_stats is answered, itself included
    assert set(stats["memory_usage"]) >= {"rss", "vms", "percent"} and stats["memory_usage"]["rss"] > 0
    assert stats["lm_calls"] == 1 and stats["usage"]["total_tokens"] == usage["total_tokens"]

    assert ok(engine.call("delete_program", {"program_id": "qa"})) == {"program_id": "qa", "status": "deleted"}
    assert ok(engine.call("list_programs"))["total_count"] == 0


def test_cleanup_and_reset_state(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"model": "mock"}))
    ok(engine.call("create_program", {"id": "a", "signature": "q -> a"}))
    ok(engine.call("create_program", {"id": "b", "signature": "q -> a", "session_id": "s1"}))
    assert ok(engine.call("cleanup", request_id=999999)) == {"status": "cleaned", "programs_removed": 2}
    assert ok(engine.call("get_stats"))["programs_count"] == 0

    ok(engine.call("create_program", {"id": "c", "signature": "q -> a"}))
    engine.call("nonsense")
    reset = ok(engine.call("reset_state"))
    assert reset["status"] == "reset" and reset["programs_cleared"] == 1
    # configure, create, create, cleanup, get_stats, create, nonsense, reset_state
    assert reset["commands_reset"] == 8 and reset["errors_reset"] == 1
    stats = ok(engine.call("get_stats"))
    assert stats["command_count"] == 1 and stats["error_count"] == 0
    # The default LM went with the reset.
    ok(engine.call("create_program", {"id": "c", "signature": "q -> a"}))
    message = err(engine.call("execute_program", {"program_id": "c", "inputs": {"q": "x"}}), "lm_not_configured")
    assert message.startswith("No LM is loaded.")


def test_shutdown_reply_then_refuses_new_work(engine: Engine) -> None:
    ok(engine.call("create_program", {"id": "p", "signature": "q -> a", "session_id": "s"}))
    result = ok(engine.call("shutdown", {"worker_id": "w7"}))
    assert result == {"status": "shutting_down", "worker_id": "w7", "mode": "standalone", "sessions_cleaned": 1}
    err(engine.call("list_programs"), "shutting_down")
    assert ok(engine.call("ping"))["status"] == "shutting_down"  # inline commands still answer


def test_session_data_commands(engine: Engine) -> None:
    sid = {"session_id": "user-1"}
    ok(engine.call("update_session_data", {**sid, "key": "name", "value": "Ada"}))
    updated = ok(engine.call("update_session_data", {**sid, "operation": "merge", "data": {"n": 3, "l": [1]}}))
    assert updated["keys"] == ["l", "n", "name"]
    assert ok(engine.call("get_session_data", sid))["data"] == {"name": "Ada", "n": 3, "l": [1]}
    assert ok(engine.call("get_session_data", {**sid, "key": "n"})) == {
        "session_id": "user-1", "key": "n", "value": 3, "found": True}
    assert ok(engine.call("get_session_data", {**sid, "key": "zz"}))["found"] is False
    ok(engine.call("update_session_data", {**sid, "operation": "delete", "key": "n"}))
    assert ok(engine.call("get_session_data", sid))["data"] == {"name": "Ada", "l": [1]}
    assert ok(engine.call("get_session_data", {"session_id": "other"}))["data"] == {}
    ok(engine.call("update_session_data", {**sid, "operation": "clear"}))
    assert ok(engine.call("get_session_data", sid))["data"] == {}
    assert "unknown operation" in err(engine.call("update_session_data", {**sid, "operation": "explode"}),
                                      "invalid_arguments")
    err(engine.call("update_session_data", {**sid, "operation": "set"}), "invalid_arguments")


def test_legacy_gemini_aliases_serve_the_generic_path(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"model": "mock"}))
    created = ok(engine.call("create_gemini_program", {"id": "g", "signature": "question -> answer: int"}))
    assert created["program_id"] == "g"
    out = ok(engine.call("execute_gemini_program", {"program_id": "g", "inputs": {"question": "q"}}))
    assert isinstance(out["outputs"]["answer"], int)


def test_contract_error_strings(engine: Engine) -> None:
    assert err(engine.call("no_such_thing"), "unknown_command") == "Unknown command: no_such_thing"
    reply = engine.call("list_program")
    assert reply["details"] == {"suggestion": "list_programs"}
    assert err(engine.call("execute_program", {"program_id": "nope"}), "program_not_found") == "Program not found: nope"
    assert err(engine.call("get_program_info", {"program_id": "nope"}), "program_not_found") == "Program not found: nope"
    assert err(engine.call("delete_program", {"program_id": "nope"}), "program_not_found") == "Program not found: nope"
    ok(engine.call("create_program", {"id": "dup", "signature": "q -> a"}))
    assert err(engine.call("create_program", {"id": "dup", "signature": "q -> a"}),
               "program_exists") == "Program with ID 'dup' already exists"
    assert err(engine.call("cleanup_session", {}), "invalid_arguments") == "Session ID required for cleanup"
    assert err(engine.call("execute_program", {"program_id": "dup", "inputs": {"q": "x"}}),
               "lm_not_configured").startswith("No LM is loaded.")


def test_argument_errors_are_clear(engine: Engine) -> None:
    assert "'signature' is required" in err(engine.call("create_program", {"id": "x"}), "invalid_arguments")
    assert "'program_id' must be string, got integer" in err(
        engine.call("execute_program", {"program_id": 5}), "invalid_arguments")
    assert "program_type" in err(engine.call("create_program", {"signature": "a -> b", "program_type": "magic"}),
                                 "invalid_arguments")
    ok(engine.call("configure_lm", {"model": "mock"}))
    ok(engine.call("create_program", {"id": "p", "signature": "a, b -> c"}))
    message = err(engine.call("execute_program", {"program_id": "p", "inputs": {"a": 1, "z": 2}}),
                  "invalid_inputs")
    assert "missing required input(s): b" in message.lower() and "unknown input(s): z" in message
    assert "temperature" in err(engine.call("configure_lm", {"model": "mock", "temperature": 9}),
                                "invalid_arguments")
    assert "provider" in err(engine.call("configure_lm", {"model": "weird-model"}), "invalid_arguments")


def test_generated_program_id(engine: Engine) -> None:
    created = ok(engine.call("create_program", {"signature": "q -> a"}))
    assert created["program_id"].startswith("program_")
    assert ok(engine.call("get_program_info", {"program_id": created["program_id"]}))["program_id"] == created["program_id"]


# ---------------------------------------------------------------------- sessions


def test_programs_are_namespaced_per_session(engine: Engine) -> None:
    ok(engine.call("create_program", {"id": "p", "signature": "q -> a", "session_id": "alice"}))
    ok(engine.call("create_program", {"id": "p", "signature": "q -> a: int", "session_id": "bob"}))
    ok(engine.call("create_program", {"id": "p", "signature": "q -> a: bool"}))  # anonymous
    assert ok(engine.call("get_program_info", {"program_id": "p", "session_id": "bob"}))["signature_def"] == "q: str -> a: int"
    assert ok(engine.call("get_program_info", {"program_id": "p"}))["signature_def"] == "q: str -> a: bool"
    assert ok(engine.call("get_program_info", {"program_id": "p", "session_id": "anonymous"}))["signature_def"] \
        == "q: str -> a: bool"
    err(engine.call("get_program_info", {"program_id": "p", "session_id": "carol"}), "program_not_found")
    assert ok(engine.call("list_programs", {"session_id": "alice"}))["total_count"] == 1
    sessions = ok(engine.call("list_sessions"))
    assert sessions["total_count"] == 4  # alice, bob, anonymous, and carol (touched by the lookup)
    assert {s["session_id"] for s in sessions["sessions"]} == {"alice", "bob", "anonymous", "carol"}
    assert ok(engine.call("get_stats"))["programs_count"] == 3


def test_cleanup_session_drops_one_namespace(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"model": "mock", "session_id": "alice"}))
    for sid in ("alice", "bob"):
        ok(engine.call("create_program", {"id": "p1", "signature": "q -> a", "session_id": sid}))
        ok(engine.call("create_program", {"id": "p2", "signature": "q -> a", "session_id": sid}))
    ok(engine.call("update_session_data", {"session_id": "alice", "key": "k", "value": 1}))
    assert ok(engine.call("cleanup_session", {"session_id": "alice"})) == {
        "status": "cleaned", "session_id": "alice", "programs_removed": 2}
    assert ok(engine.call("list_programs", {"session_id": "alice"}))["total_count"] == 0
    assert ok(engine.call("list_programs", {"session_id": "bob"}))["total_count"] == 2
    assert ok(engine.call("get_session_data", {"session_id": "alice"}))["data"] == {}
    assert ok(engine.call("cleanup_session", {"session_id": "ghost"}))["programs_removed"] == 0


def test_session_lm_overrides_default(engine: Engine, lm_args: dict[str, str]) -> None:
    ok(engine.call("configure_lm", {"model": "mock"}))
    configured = ok(engine.call("configure_lm", {**lm_args, "session_id": "real"}))
    assert configured["scope"] == "session" and configured["model"] == "openai/local-model"
    for sid in ("real", "anonymous"):
        ok(engine.call("create_program", {"id": "p", "signature": "question -> answer", "session_id": sid}))
    real = ok(engine.call("execute_program", {"program_id": "p", "session_id": "real", "inputs": {"question": "hi"}}))
    mock = ok(engine.call("execute_program", {"program_id": "p", "inputs": {"question": "hi"}}))
    assert real["model"] == "openai/local-model" and real["outputs"]["answer"] == "answer for question=hi"
    assert mock["model"] == "mock" and mock["outputs"]["answer"].startswith("mock answer ")
    sessions = {s["session_id"]: s for s in ok(engine.call("list_sessions"))["sessions"]}
    assert sessions["real"]["lm"]["model"] == "openai/local-model"
    assert sessions["real"]["lm"]["api_key_set"] is True


def test_program_data_rebuilds_a_program_on_another_engine(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"model": "mock"}))
    created = ok(engine.call("create_program", {
        "id": "shared", "signature": {"inputs": [{"name": "text", "type": "string"}],
                                      "outputs": [{"name": "labels", "type": "list<string>"},
                                                  {"name": "score", "type": "integer"}]},
        "program_type": "chain_of_thought", "session_id": "s"}))
    first = ok(engine.call("execute_program", {"program_id": "shared", "session_id": "s",
                                               "inputs": {"text": "hello"}}))
    other = Engine(EngineConfig(worker_id="other"))
    try:
        ok(other.call("configure_lm", {"model": "mock"}))
        err(other.call("execute_program", {"program_id": "shared", "session_id": "s", "inputs": {"text": "hello"}}),
            "program_not_found")
        rebuilt = ok(other.call("execute_program", {"program_id": "shared", "session_id": "s",
                                                    "inputs": {"text": "hello"}, "program_data": created}))
        # Same program, same deterministic LM: the same typed outputs, reasoning included.
        assert rebuilt["outputs"] == first["outputs"]
        assert list(rebuilt["outputs"]) == ["reasoning", "labels", "score"]
        info = ok(other.call("get_program_info", {"program_id": "shared", "session_id": "s"}))
        assert info["program_type"] == "chain_of_thought" and info["execution_count"] == 1
        # program_data of a broken signature is a clear error, not a crash.
        bad = dict(created, signature="q: os.system -> a")
        err(other.call("execute_program", {"program_id": "x", "inputs": {"q": "1"}, "program_data": bad}),
            "invalid_signature")
    finally:
        other.close()


def test_demos_are_used(engine: Engine, lm_args: dict[str, str], openai_server: Any) -> None:
    ok(engine.call("configure_lm", lm_args))
    ok(engine.call("create_program", {"id": "fs", "signature": "question -> answer",
                                      "demos": [{"question": "2+2?", "answer": "four"}]}))
    ok(engine.call("execute_program", {"program_id": "fs", "inputs": {"question": "3+3?"}}))
    sent = orjson.dumps(openai_server.requests[-1]["body"]["messages"]).decode()
    assert "2+2?" in sent and "four" in sent
    assert "unknown fields: bogus" in err(engine.call("create_program", {
        "signature": "question -> answer", "demos": [{"bogus": 1}]}), "invalid_arguments")


# ---------------------------------------------------------------- typed outputs


TYPED_SIGNATURE = ("question: str, context: str -> answer: str, count: int, score: float, flag: bool, "
                   "words: list[str], meta: dict[str, str]")


def expected_from_server(inputs: dict[str, str], reasoning: bool = False) -> dict[str, Any]:
    """What tests/openai_server.py derives from the inputs, written out independently."""
    joined = " | ".join(f"{k}={v}" for k, v in sorted(inputs.items()))
    expected: dict[str, Any] = {}
    if reasoning:
        expected["reasoning"] = f"Thinking about {joined}."
    expected.update({
        "answer": f"answer for {joined}",
        "count": sum(len(v) for v in inputs.values()),
        "score": len(joined) / 4,
        "flag": len(joined) % 2 == 0,
        "words": joined.split()[:3],
        "meta": {"length": str(len(joined))},
    })
    return expected


@pytest.mark.parametrize("inputs", [
    {"question": "What is DSPy?", "context": "A framework."},
    {"question": "Longer question about ports and frames", "context": "ctx"},
])
def test_typed_outputs_over_real_http(engine: Engine, lm_args: dict[str, str], openai_server: Any,
                                      inputs: dict[str, str]) -> None:
    ok(engine.call("configure_lm", lm_args))
    ok(engine.call("create_program", {"id": "t", "signature": TYPED_SIGNATURE}))
    before = len(openai_server.requests)
    result = ok(engine.call("execute_program", {"program_id": "t", "inputs": inputs}))
    assert result["outputs"] == expected_from_server(inputs)
    assert type(result["outputs"]["count"]) is int and type(result["outputs"]["flag"]) is bool
    assert type(result["outputs"]["score"]) is float
    # It really went over HTTP, with the key as a bearer token.
    assert len(openai_server.requests) == before + 1
    request = openai_server.requests[-1]
    assert request["authorization"] == f"Bearer {SECRET}"
    assert request["body"]["model"] == "local-model"
    # Usage is the server's own count.
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["body"]["messages"])
    assert result["usage"]["prompt_tokens"] == prompt_tokens
    assert result["usage"]["total_tokens"] == prompt_tokens + result["usage"]["completion_tokens"]
    assert result["duration_ms"] > 0


def test_chain_of_thought_reasoning_over_real_http(engine: Engine, lm_args: dict[str, str]) -> None:
    ok(engine.call("configure_lm", lm_args))
    created = ok(engine.call("create_program", {"id": "cot", "signature": TYPED_SIGNATURE,
                                                "program_type": "ChainOfThought"}))
    assert created["program_type"] == "chain_of_thought"
    inputs = {"question": "Why is the sky blue?", "context": "Rayleigh"}
    result = ok(engine.call("execute_program", {"program_id": "cot", "inputs": inputs}))
    assert result["outputs"] == expected_from_server(inputs, reasoning=True)


def test_dspex_map_types_over_real_http(engine: Engine, lm_args: dict[str, str]) -> None:
    ok(engine.call("configure_lm", lm_args))
    signature = {"inputs": [{"name": "question", "type": "string"}],
                 "outputs": [{"name": "count", "type": "integer"}, {"name": "ok", "type": "boolean"},
                             {"name": "words", "type": "list<string>"},
                             {"name": "meta", "type": "dict<string,string>"}]}
    created = ok(engine.call("create_program", {"id": "m", "signature": signature}))
    assert created["field_mapping"]["outputs"] == {"count": "integer", "ok": "boolean", "words": "list<string>",
                                                   "meta": "dict<string,string>"}
    out = ok(engine.call("execute_program", {"program_id": "m", "inputs": {"question": "abcdefg"}}))["outputs"]
    joined = "question=abcdefg"
    assert out == {"count": 7, "ok": len(joined) % 2 == 0, "words": [joined], "meta": {"length": str(len(joined))}}


def test_typed_outputs_via_mock_lm_are_deterministic(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"model": "mock"}))
    ok(engine.call("create_program", {"id": "t", "signature": TYPED_SIGNATURE}))
    first = ok(engine.call("execute_program", {"program_id": "t", "inputs": {"question": "a", "context": "b"}}))
    again = ok(engine.call("execute_program", {"program_id": "t", "inputs": {"question": "a", "context": "b"}}))
    other = ok(engine.call("execute_program", {"program_id": "t", "inputs": {"question": "c", "context": "b"}}))
    out = first["outputs"]
    assert type(out["count"]) is int and type(out["score"]) is float and type(out["flag"]) is bool
    assert isinstance(out["answer"], str) and all(isinstance(w, str) for w in out["words"])
    assert isinstance(out["meta"], dict) and all(isinstance(v, str) for v in out["meta"].values())
    assert again["outputs"] == out
    assert other["outputs"] != out


def test_chain_of_thought_with_mock(engine: Engine) -> None:
    ok(engine.call("configure_lm", {"provider": "mock"}))
    ok(engine.call("create_program", {"id": "c", "signature": "question -> answer: int", "program_type": "cot"}))
    out = ok(engine.call("execute_program", {"program_id": "c", "inputs": {"question": "q"}}))["outputs"]
    assert list(out) == ["reasoning", "answer"]
    assert out["reasoning"].startswith("mock reasoning") and type(out["answer"]) is int


def test_options_as_keyword_list_reach_the_lm(engine: Engine, lm_args: dict[str, str], openai_server: Any) -> None:
    ok(engine.call("configure_lm", lm_args))
    ok(engine.call("create_program", {"id": "o", "signature": "question -> answer"}))
    ok(engine.call("execute_program", {"program_id": "o", "inputs": {"question": "x"},
                                       "options": [["temperature", 0.7], {"max_tokens": 123}]}))
    body = openai_server.requests[-1]["body"]
    # DSPy's OpenAI path spells max_tokens the new way.
    assert body["temperature"] == 0.7
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 123
    err(engine.call("execute_program", {"program_id": "o", "inputs": {"question": "x"}, "options": [1]}),
        "invalid_arguments")


# ------------------------------------------------------------------- signatures


def test_dspy_string_signature(engine: Engine) -> None:
    created = ok(engine.call("create_program", {
        "id": "s", "signature": "question, context: list[str] -> answer: int, sure: bool"}))
    assert created["signature_def"] == "question: str, context: list[str] -> answer: int, sure: bool"
    assert created["field_mapping"] == {"inputs": {"question": "string", "context": "list<string>"},
                                        "outputs": {"answer": "integer", "sure": "boolean"}}
    ok(engine.call("configure_lm", {"model": "mock"}))
    out = ok(engine.call("execute_program", {"program_id": "s",
                                             "inputs": {"question": "q", "context": ["a", "b"]}}))["outputs"]
    assert type(out["answer"]) is int and type(out["sure"]) is bool


@pytest.mark.parametrize("signature", [
    "question: this.s -> answer",
    "question -> answer: antigravity.geohash",
    "q: __import__('os').system -> a",
    "q: os.system -> a",
    "q: eval -> a",
    {"inputs": [{"name": "q", "type": "subprocess.Popen"}], "outputs": [{"name": "a", "type": "string"}]},
    {"inputs": [{"name": "q", "type": "string"}], "outputs": [{"name": "a", "type": "this"}]},
])
def test_unsafe_type_names_are_rejected_without_import(engine: Engine, signature: Any) -> None:
    watched = ("this", "antigravity", "subprocess")
    before = {name: name in sys.modules for name in watched}
    message = err(engine.call("create_program", {"signature": signature}), "invalid_signature")
    assert message
    for name in ("this", "antigravity"):
        assert (name in sys.modules) == before[name], f"{name} got imported"
    assert ok(engine.call("list_programs"))["total_count"] == 0  # no silent fallback program


@pytest.mark.parametrize("signature", ["", "no arrow here", "-> a", "q ->", "q: int[ -> a",
                                       {"inputs": [], "outputs": []}, {"inputs": "q"}])
def test_malformed_signatures_get_clear_errors(engine: Engine, signature: Any) -> None:
    err(engine.call("create_program", {"signature": signature}), "invalid_signature")


# ----------------------------------------------------------------------- secrets


def _assert_no_secret(value: Any, *secrets: str) -> None:
    text = orjson.dumps(value).decode()
    for secret in secrets:
        assert secret not in text


def test_secrets_never_in_replies_records_or_errors(engine: Engine, lm_args: dict[str, str]) -> None:
    published: list[dict[str, Any]] = []  # what subscribers (inspect --follow, the recorder) get
    engine.listeners.append(lambda kind, data: published.append(data) if kind == "lm_call" else None)
    replies = [engine.call("configure_lm", lm_args),
               engine.call("configure_lm", {**lm_args, "api_key": PLAIN_SECRET, "session_id": "p"})]
    ok(replies[0])
    ok(replies[1])
    assert replies[0]["result"]["lm"]["api_key_set"] is True
    ok(engine.call("create_program", {"id": "p", "signature": "question -> answer"}))
    replies.append(engine.call("execute_program", {"program_id": "p", "inputs": {"question": "q"}}))
    # Failures that could quote the key: a bad argument next to it, an HTTP 500 from the LM.
    bad = engine.call("configure_lm", {**lm_args, "temperature": "hot"})
    err(bad, "invalid_arguments")
    replies.append(bad)
    ok(engine.call("configure_lm", {**lm_args, "model": "openai/fail-500", "num_retries": 0,
                                    "session_id": "f"}))
    ok(engine.call("create_program", {"id": "p", "signature": "question -> answer", "session_id": "f"}))
    failed = engine.call("execute_program", {"program_id": "p", "session_id": "f", "inputs": {"question": "q"}})
    assert err(failed, "lm_error")
    replies.append(failed)
    replies.append(engine.call("list_sessions"))
    replies.append(engine.call("get_stats"))
    _assert_no_secret(replies, SECRET, PLAIN_SECRET)
    _assert_no_secret(engine.lm_call_log(), SECRET, PLAIN_SECRET)
    assert len(published) >= 2
    _assert_no_secret(published, SECRET, PLAIN_SECRET)
    _assert_no_secret([payload.decode("utf-8", "replace") for _, _, payload in engine.frame_log()
                       if _ == "out"], SECRET, PLAIN_SECRET)
    assert engine.recent_lm_calls[-1]["error"] is not None
    # A prompt that quotes a remembered secret: the ring keeps records as made and masks them
    # when read, so the value is in the ring and in no view of it.
    engine.call("execute_program", {"program_id": "p", "inputs": {"question": f"is {PLAIN_SECRET} right?"}})
    assert PLAIN_SECRET in orjson.dumps(list(engine.recent_lm_calls)).decode()
    _assert_no_secret(engine.lm_call_log(), SECRET, PLAIN_SECRET)
    _assert_no_secret(published, SECRET, PLAIN_SECRET)


def test_secret_quoted_in_a_handler_error_is_scrubbed(engine: Engine) -> None:
    from bridge.engine import describe_error

    ok(engine.call("configure_lm", {"model": "mock", "api_key": PLAIN_SECRET}))
    error_type, message, _ = describe_error(RuntimeError(f"upstream said: bad key {PLAIN_SECRET}"))
    assert error_type == "internal_error" and PLAIN_SECRET not in message and REDACTED in message
    _, message, _ = describe_error(ValueError("Authorization: Bearer abcdefghijklmnop"))
    assert "abcdefghijklmnop" not in message


def test_lm_call_records(engine: Engine, lm_args: dict[str, str]) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    engine.listeners.append(lambda kind, data: seen.append((kind, data)))
    ok(engine.call("configure_lm", lm_args))
    ok(engine.call("create_program", {"id": "p", "signature": "question -> answer"}))
    ok(engine.call("execute_program", {"program_id": "p", "inputs": {"question": "zz"}}, request_id=77))
    record = engine.recent_lm_calls[-1]
    for key in ("call_id", "request_id", "session_id", "command", "key", "model", "request", "response",
                "error", "latency_ms", "usage", "timestamp"):
        assert key in record, key
    assert record["request_id"] == 77 and record["command"] == "execute_program"
    assert record["response"]["outputs"] == ["[[ ## answer ## ]]\nanswer for question=zz\n\n[[ ## completed ## ]]"]
    assert [kind for kind, _ in seen] == ["program_created", "lm_call"]
