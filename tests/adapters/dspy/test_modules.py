"""Every program type and adapter through a real `dspex serve` worker and DSPy's real HTTP
path against the local OpenAI-compatible server, whose answers are computed from each
request (tests/openai_server.py): outputs are checked against that computation, and the
requests the server saw show what the module and adapter really sent."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from fixtures import PLUGINS, ok, worker_env
from openai_server import LocalOpenAIServer, value_for

SIGNATURE = "question -> answer"


@pytest.fixture
def lm(openai_server: LocalOpenAIServer, lm_args: dict[str, str]) -> dict[str, str]:
    """configure_lm args with a model name of this test alone, to pick its requests out."""
    return {**lm_args, "model": f"openai/modules-{uuid.uuid4().hex[:8]}"}


def requests_of(server: LocalOpenAIServer, lm: dict[str, str]) -> list[dict[str, Any]]:
    model = lm["model"].split("/", 1)[1]
    return [r["body"] for r in list(server.requests) if r["body"].get("model") == model]


def user_message(request: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


def error_of(reply: dict[str, Any]) -> tuple[str, str]:
    assert reply["success"] is False, reply
    return reply["error_type"], reply["error"]


@pytest.fixture
def worker(spawn_worker: Any, lm: dict[str, str]) -> Any:
    client = spawn_worker("--plugin", "sample_tools", env=worker_env(PLUGINS))
    ok(client.request("configure_lm", lm, timeout=60))
    return client


def create(worker: Any, program_type: str, **extra: Any) -> dict[str, Any]:
    return worker.request("create_program", {"id": extra.pop("id", program_type), "signature":
                                             extra.pop("signature", SIGNATURE), "program_type": program_type,
                                             **extra}, timeout=60)


def run(worker: Any, program_id: str, **inputs: Any) -> dict[str, Any]:
    return ok(worker.request("execute_program", {"program_id": program_id,
                                                 "inputs": inputs or {"question": "hello world"}}, timeout=60))


@pytest.mark.parametrize("adapter, marker", [("chat", "[[ ## question ## ]]"),
                                             ("json", "Respond with a JSON object"),
                                             ("xml", "<question>\n")])
@pytest.mark.slow
def test_each_adapter_formats_the_prompt_and_parses_typed_outputs(worker: Any, openai_server: LocalOpenAIServer,
                                                                  lm: dict[str, str], adapter: str,
                                                                  marker: str) -> None:
    created = ok(create(worker, "predict", signature="question: str, n: int -> answer: str, count: int, tags: list[str]",
                        adapter=adapter))
    assert created["adapter"] == adapter
    outputs = run(worker, "predict", question="hi there", n=3)["outputs"]
    inputs = {"question": "hi there", "n": "3"}
    assert outputs == {"answer": value_for("answer", "str", inputs), "count": 9,
                       "tags": ["n=3", "|", "question=hi"]}
    sent = requests_of(openai_server, lm)
    # One request: the answer parsed in the adapter's own format, not after ChatAdapter's JSON fallback.
    assert len(sent) == 1 and marker in user_message(sent[0])


def test_configure_lm_adapter_is_the_default_a_program_can_override(spawn_worker: Any, openai_server: LocalOpenAIServer,
                                                                    lm: dict[str, str]) -> None:
    worker = spawn_worker()
    configured = ok(worker.request("configure_lm", {**lm, "adapter": "xml"}, timeout=60))
    assert configured["lm"]["adapter"] == "xml"
    ok(create(worker, "predict", id="inherits"))
    ok(create(worker, "predict", id="own", adapter="chat"))
    assert run(worker, "inherits")["outputs"] == run(worker, "own")["outputs"] == {
        "answer": value_for("answer", "str", {"question": "hello world"})}
    first, second = requests_of(openai_server, lm)
    assert "<question>\nhello world\n</question>" in user_message(first)
    assert "[[ ## question ## ]]\nhello world" in user_message(second)


def test_chain_of_thought_spellings_and_its_reasoning(worker: Any) -> None:
    for spelling in ("ChainOfThought", "cot", "chain-of-thought"):
        assert ok(create(worker, spelling, id=spelling))["program_type"] == "chain_of_thought"
    outputs = run(worker, "cot")["outputs"]
    assert outputs == {"reasoning": value_for("reasoning", "str", {"question": "hello world"}),
                       "answer": value_for("answer", "str", {"question": "hello world"})}


def test_best_of_n_runs_until_the_reward_is_met(worker: Any, openai_server: LocalOpenAIServer,
                                                lm: dict[str, str]) -> None:
    expected = {"answer": value_for("answer", "str", {"question": "hello world"})}
    created = ok(create(worker, "best_of_n", id="exhaust", options={"N": 3, "reward": "shortest"}))
    assert created["options"] == {"N": 3, "threshold": 1.0, "reward": "shortest", "module": "predict"}
    result = run(worker, "exhaust")
    assert result["outputs"] == expected and result["attempts"] == 3 and len(result["rewards"]) == 3
    assert len(requests_of(openai_server, lm)) == 3
    ok(create(worker, "BestOfN", id="first", options={"N": 3}))  # non_empty: the first attempt meets 1.0
    result = run(worker, "first")
    assert result["outputs"] == expected and result["attempts"] == 1 and result["rewards"] == [1.0]
    assert len(requests_of(openai_server, lm)) == 4


def test_a_plugin_metric_serves_as_the_reward(spawn_worker: Any, openai_server: LocalOpenAIServer) -> None:
    """reversed_question (tests/plugins/sample_metrics.py) scores 1 only for a right answer,
    which the learnable test LM gives untaught to `easy-` questions: one attempt there,
    every attempt elsewhere."""
    client = spawn_worker("--plugin", "sample_metrics", env=worker_env(PLUGINS))
    ok(client.request("configure_lm", {"model": "openai/learn", "api_base": openai_server.base_url,
                                       "api_key": "sk-test-secret-123456", "cache": False}, timeout=60))
    ok(create(client, "best_of_n", options={"N": 3, "reward": "reversed_question"}))
    easy = run(client, "best_of_n", question="easy-abc")
    assert easy["outputs"]["answer"] == "cba-ysae" and easy["rewards"] == [1.0]
    hard = run(client, "best_of_n", question="plain")
    assert hard["outputs"]["answer"] == "unknown" and hard["rewards"] == [0.0, 0.0, 0.0]
    refused = create(client, "refine", id="r", options={"reward": "exact_match"})
    assert refused["error_type"] == "invalid_arguments" and "reversed_question" in refused["error"]


def test_best_of_n_over_chain_of_thought_returns_its_reasoning(worker: Any) -> None:
    ok(create(worker, "best_of_n", options={"N": 2, "module": "chain_of_thought"}))
    outputs = run(worker, "best_of_n")["outputs"]
    assert outputs["reasoning"] == value_for("reasoning", "str", {"question": "hello world"})


def test_refine_asks_for_advice_and_retries_with_a_hint(worker: Any, openai_server: LocalOpenAIServer,
                                                       lm: dict[str, str]) -> None:
    ok(create(worker, "refine", options={"N": 2, "reward": "shortest"}))
    result = run(worker, "refine")
    assert result["attempts"] == 2
    sent = [user_message(r) for r in requests_of(openai_server, lm)]
    # attempt 1, DSPy's OfferFeedback call, attempt 2 carrying that advice as `hint_`
    assert len(sent) == 3 and "program_trajectory" in sent[1] and "hint_" in sent[2]
    # the second answer is longer (it reads the hint too), so "shortest" keeps the first
    assert result["outputs"] == {"answer": value_for("answer", "str", {"question": "hello world"})}
    assert result["rewards"][0] > result["rewards"][1]


def test_multi_chain_comparison_compares_m_attempts(worker: Any, openai_server: LocalOpenAIServer,
                                                    lm: dict[str, str]) -> None:
    ok(create(worker, "mcc", options={"M": 2}))
    result = run(worker, "mcc")
    question = {"question": "hello world"}
    attempt = (f"«I'm trying to {value_for('reasoning', 'str', question)} I'm not sure but my prediction is "
               f"{value_for('answer', 'str', question)}»")
    compared = {**question, "reasoning_attempt_1": attempt, "reasoning_attempt_2": attempt}
    assert result["outputs"] == {"rationale": value_for("rationale", "str", compared),
                                 "answer": value_for("answer", "str", compared)}
    assert result["attempts"] == 2 and len(requests_of(openai_server, lm)) == 3


@pytest.mark.skipif(shutil.which("deno") is not None, reason="Deno is installed here")
def test_program_of_thought_without_deno_is_unsupported(worker: Any) -> None:
    error_type, message = error_of(create(worker, "program_of_thought"))
    assert error_type == "unsupported" and "Deno" in message
    assert error_of(worker.request("execute_program", {"program_id": "program_of_thought"}))[0] == "program_not_found"


def test_program_of_thought_is_built_where_deno_is_found(spawn_worker: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    deno = bin_dir / "deno"  # only found, never run: building the module starts no interpreter
    deno.write_text("#!/bin/sh\nexit 1\n")
    deno.chmod(0o755)
    worker = spawn_worker(env=worker_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"))
    created = ok(create(worker, "ProgramOfThought", options={"max_iters": 2}))
    assert created["program_type"] == "program_of_thought" and created["options"] == {"max_iters": 2}


@pytest.mark.slow
def test_program_data_rebuilds_the_same_module_on_another_worker(spawn_worker: Any, worker: Any,
                                                                 lm: dict[str, str]) -> None:
    data = ok(create(worker, "best_of_n", id="b", options={"N": 2, "reward": "shortest"}, adapter="xml"))
    other = spawn_worker("--plugin", "sample_tools", env=worker_env(PLUGINS))
    ok(other.request("configure_lm", lm, timeout=60))
    here = run(worker, "b")
    there = ok(other.request("execute_program", {"program_id": "b", "inputs": {"question": "hello world"},
                                                 "program_data": data}, timeout=60))
    assert there["outputs"] == here["outputs"] and there["attempts"] == here["attempts"] == 2
    info = ok(other.request("get_program_info", {"program_id": "b"}))
    assert info["program_data"]["options"] == data["options"] and info["program_data"]["adapter"] == "xml"


@pytest.mark.parametrize("args, error_type, text", [
    ({"program_type": "reactt"}, "invalid_arguments", "did you mean 'react'"),
    ({"program_type": "best_of"}, "invalid_arguments", "did you mean 'best_of_n'"),
    ({"program_type": 7}, "invalid_arguments", "'program_type' must be string"),
    ({"program_type": "react", "options": {"max_iter": 3}}, "invalid_arguments", "its options: max_iters"),
    ({"program_type": "predict", "options": {"N": 3}}, "invalid_arguments", "its options: none"),
    ({"program_type": "react", "options": {"max_iters": "3"}}, "invalid_arguments", "must be integer, got string"),
    ({"program_type": "best_of_n", "options": {"N": True}}, "invalid_arguments", "must be integer, got boolean"),
    ({"program_type": "best_of_n", "options": {"N": 500}}, "invalid_arguments", "between 1 and 20"),
    ({"program_type": "refine", "options": {"threshold": "high"}}, "invalid_arguments", "must be number"),
    ({"program_type": "refine", "options": {"reward": "accuracy"}}, "invalid_arguments", "non_empty, shortest"),
    ({"program_type": "react", "options": [1]}, "invalid_arguments", "'options' must be object"),
    ({"adapter": "yaml"}, "invalid_arguments", "Unknown adapter 'yaml'. Use one of: chat, json, xml"),
    ({"adapter": "jsn"}, "invalid_arguments", "did you mean 'json'"),
    ({"program_type": "predict", "tools": ["shout"]}, "invalid_arguments", "takes no tools; only react"),
])
def test_bad_program_arguments_each_get_a_clear_error(refusing_worker: Any, args: dict[str, Any],
                                                      error_type: str, text: str) -> None:
    reply = refusing_worker.request("create_program", {"id": "bad", "signature": SIGNATURE, **args}, timeout=30)
    assert error_of(reply)[0] == error_type and text in reply["error"], reply
    assert ok(refusing_worker.request("list_programs"))["total_count"] == 0
    assert ok(refusing_worker.request("ping"))["status"] == "ok"


def test_configure_lm_refuses_an_unknown_adapter(worker: Any, lm: dict[str, str]) -> None:
    reply = worker.request("configure_lm", {**lm, "adapter": "XML!"}, timeout=30)
    assert error_of(reply)[0] == "invalid_arguments" and "chat, json, xml" in reply["error"]
    assert "sk-test-secret" not in reply["error"]


def test_protocol_md_program_type_table_matches_the_table_in_code() -> None:
    from bridge.adapters.dspy.modules import PROGRAM_TYPES
    from fixtures import ROOT

    section = (ROOT / "docs" / "protocol.md").read_text().split("## Program types, adapters and tools", 1)[1]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    assert list(rows) == [row.name for row in PROGRAM_TYPES]
    for row in PROGRAM_TYPES:
        line = rows[row.name]
        for word in (*row.spellings, row.dspy_class, *(o.name for o in row.options), *row.extra_outputs):
            assert f"`{word}`" in line or (row.name == "refine" and "as `best_of_n`" in line), (row.name, word)


def test_one_signature_class_per_spec_and_programs_keep_their_own_demos() -> None:
    # Building a DSPy signature class costs milliseconds, so identical specs share one
    # (bounded: clients choose specs); what a program learns lives in its predictors.
    from bridge.adapters.dspy.modules import _signature_class, apply_demos, build_module
    from bridge.adapters.dspy.signatures import parse_signature

    spec = parse_signature("question -> answer")
    first, _ = build_module(spec, "predict", {}, [])
    second, _ = build_module(parse_signature("question -> answer"), "predict", {}, [])
    other, _ = build_module(parse_signature("question -> answer: int"), "predict", {}, [])
    assert first.signature is second.signature and other.signature is not first.signature
    apply_demos(first, spec, [{"question": "a", "answer": "b"}])
    assert len(first.demos) == 1 and second.demos == []
    assert _signature_class.cache_info().maxsize == 256
