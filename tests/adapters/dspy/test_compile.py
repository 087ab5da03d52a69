"""compile_program through real `dspex serve` workers against the local server's learnable task:
the optimizers turn a program that scores low into one that scores high."""

from __future__ import annotations

import time
from typing import Any

import pytest

from compile_helpers import DEVSET, EASY_TRAINSET, SIGNATURE, TRAINSET, compile_wait, configure, examples, score
from fixtures import ok, wait_for
from learnable_task import INSTRUCTION, right_answer


@pytest.fixture
def worker(spawn_worker: Any, openai_server: Any) -> Any:
    client = spawn_worker()
    configure(client, openai_server)
    ok(client.request("create_program", {"id": "plain", "signature": SIGNATURE}, timeout=60))
    return client


@pytest.fixture(scope="module")
def refusing_worker(module_spawn: Any, openai_server: Any) -> Any:
    """One worker for all the refused compiles: a refusal changes nothing in it."""
    client = module_spawn()
    configure(client, openai_server)
    ok(client.request("create_program", {"id": "plain", "signature": SIGNATURE}, timeout=60))
    return client


def test_labeled_few_shot_turns_a_low_score_high(worker: Any) -> None:
    before, _ = score(worker, "plain", DEVSET)
    result = compile_wait(worker, "plain", "labeled_few_shot", trainset=TRAINSET, options={"k": 3},
                          new_program_id="taught")
    after, outputs = score(worker, "taught", DEVSET)
    assert before == 0.0 and after == 1.0, outputs
    assert result["program_id"] == "taught" and result["source_program_id"] == "plain"
    (demos,) = [p["demos"] for p in result["predictors"].values()]
    assert len(demos) == 3 and all(d in TRAINSET for d in demos)
    assert result["program_data"]["state"]["demos"] == demos
    # The original is unchanged: it still scores low.
    assert score(worker, "plain", DEVSET)[0] == 0.0
    job = ok(worker.request("get_job", {"job_id": result["job_id"]}))
    assert job["status"] == "succeeded" and job["kind"] == "compile"


def test_bootstrap_few_shot_turns_a_low_score_high(worker: Any, openai_server: Any) -> None:
    before, _ = score(worker, "plain", DEVSET)
    calls_before = len(openai_server.requests)
    result = compile_wait(worker, "plain", "bootstrap_few_shot", trainset=EASY_TRAINSET, valset=DEVSET,
                          metric="exact_match", options={"max_bootstrapped_demos": 2, "max_labeled_demos": 0},
                          seed=7)
    after, outputs = score(worker, result["program_id"], DEVSET)
    assert before == 0.0 and after == 1.0, outputs
    (demos,) = [p["demos"] for p in result["predictors"].values()]
    # Bootstrapped demos are traces of the program itself (DSPy marks them augmented).
    assert len(demos) == 2 and all(d["augmented"] and d["answer"] == right_answer(d["question"]) for d in demos)
    assert result["scores"]["valset"] == 100.0 and result["scores"]["metric_calls"] >= 2
    assert result["usage"]["lm_calls"] >= 2 and result["usage"]["total_tokens"] > 0
    assert len(openai_server.requests) - calls_before >= result["usage"]["lm_calls"]
    job = ok(worker.request("get_job", {"job_id": result["job_id"]}))
    assert job["progress"]["done"] >= 2 and job["best_score"] == 100.0
    assert "sk-compile-secret-9876" not in str(job)


def test_compile_replies_at_once_and_progress_grows(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker()
    configure(worker, openai_server, model="openai/learn-delay-100")
    ok(worker.request("create_program", {"id": "plain", "signature": SIGNATURE}, timeout=60))
    started = ok(worker.request("compile_program", {
        "program_id": "plain", "optimizer": "bootstrap_few_shot", "trainset": examples([f"w{i}" for i in range(8)]),
        "metric": "exact_match", "options": {"max_bootstrapped_demos": 8, "max_labeled_demos": 0}}, timeout=30))
    assert started["status"] == "running" and started["kind"] == "compile"
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = ok(worker.request("get_job", {"job_id": started["job_id"]}))
        seen.append(job["progress"]["done"])
        if job["status"] != "running":
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert job["progress"]["total"] == 8 and seen[-1] == 8 and len(set(seen)) > 2, seen


@pytest.mark.slow
def test_cancel_ends_a_compile_and_no_call_follows(spawn_worker: Any, openai_server: Any) -> None:
    worker = spawn_worker()
    configure(worker, openai_server, model="openai/learn-delay-200")
    ok(worker.request("create_program", {"id": "plain", "signature": SIGNATURE}, timeout=60))
    started = ok(worker.request("compile_program", {
        "program_id": "plain", "optimizer": "bootstrap_few_shot", "trainset": examples([f"x{i}" for i in range(30)]),
        "metric": "exact_match", "options": {"max_bootstrapped_demos": 30, "max_labeled_demos": 0}}, timeout=30))
    job_id = started["job_id"]
    wait_for(lambda: ok(worker.request("get_job", {"job_id": job_id}))["lm_calls"] >= 1, timeout=20)
    asked = time.monotonic()
    reply = ok(worker.request("cancel_job", {"job_id": job_id}, timeout=5))
    assert reply["cancelled"] is True
    wait_for(lambda: ok(worker.request("get_job", {"job_id": job_id}))["status"] == "cancelled", timeout=1)
    assert time.monotonic() - asked < 1.0
    # A call already in flight may still arrive (200 ms); after that, nothing more.
    time.sleep(0.5)
    calls = len(openai_server.requests)
    time.sleep(1.0)
    assert len(openai_server.requests) == calls
    assert ok(worker.request("ping", timeout=5))["status"] == "ok"
    assert "plain" in [p["id"] for p in ok(worker.request("list_programs"))["programs"]]


@pytest.mark.parametrize("args, error_type, fragment", [
    ({"optimizer": "bootstrap_fewshot"}, "unknown_optimizer", "did you mean 'bootstrap_few_shot'"),
    ({"optimizer": "bootstrap_few_shot", "options": {"max_bootstraped_demos": 2}}, "invalid_arguments",
     "did you mean 'max_bootstrapped_demos'"),
    ({"optimizer": "bootstrap_few_shot", "options": {"max_bootstrapped_demos": "two"}}, "invalid_arguments",
     "must be an integer, got string"),
    ({"optimizer": "mipro_v2", "options": {"auto": "extreme"}}, "invalid_arguments", "light, medium, heavy"),
    ({"optimizer": "bootstrap_few_shot", "options": {"log_dir": "/tmp/x"}}, "invalid_arguments", "no option 'log_dir'"),
    ({"optimizer": "simba", "options": {"num_threads": 5000}}, "invalid_arguments", "between 1 and 32"),
    ({"optimizer": "bootstrap_few_shot", "trainset": []}, "invalid_arguments", "non-empty list"),
    ({"optimizer": "bootstrap_few_shot", "trainset": [{"query": "a", "answer": "a"}]}, "invalid_arguments",
     "missing question; unknown query"),
    ({"optimizer": "bootstrap_few_shot", "metric": None}, "invalid_arguments", "needs a 'metric'"),
    ({"optimizer": "bootstrap_few_shot", "metric": "exact_mach"}, "unknown_metric", "did you mean"),
    ({"optimizer": "labeled_few_shot", "program_id": "nope"}, "program_not_found", "Program not found: nope"),
    ({"optimizer": "labeled_few_shot", "new_program_id": "plain"}, "program_exists", "already exists"),
])
def test_bad_compile_requests_are_refused(refusing_worker: Any, args: dict[str, Any], error_type: str, fragment: str) -> None:
    request = {"program_id": "plain", "trainset": TRAINSET, "metric": "exact_match", "wait": True, **args}
    reply = refusing_worker.request("compile_program", {k: v for k, v in request.items() if v is not None},
                                    timeout=60)
    assert reply["success"] is False and reply["error_type"] == error_type, reply
    assert fragment in reply["error"], reply["error"]
    assert ok(refusing_worker.request("ping"))["status"] == "ok"


def test_list_optimizers_reads_options_from_dspy(worker: Any) -> None:
    listed = ok(worker.request("list_optimizers", timeout=30))
    by_name = {o["name"]: o for o in listed["optimizers"]}
    assert set(by_name) == {"labeled_few_shot", "bootstrap_few_shot", "bootstrap_few_shot_with_random_search",
                            "mipro_v2", "copro", "simba", "gepa"}
    assert by_name["mipro_v2"]["options"]["auto"]["choices"] == ["light", "medium", "heavy"]
    assert by_name["bootstrap_few_shot"]["options"]["max_bootstrapped_demos"] == {"type": "integer", "default": 4}
    assert "log_dir" not in by_name["gepa"]["options"] and "wandb_api_key" not in by_name["gepa"]["options"]


def _improves_or_reports(worker: Any, result: dict[str, Any]) -> None:
    assert result["scores"], result
    after, outputs = score(worker, result["program_id"], DEVSET)
    assert after == 1.0 or result["scores"].get("candidates"), (outputs, result["scores"])


def test_mipro_v2_light_runs_to_completion(worker: Any) -> None:
    result = compile_wait(worker, "plain", "mipro_v2", timeout=300, trainset=EASY_TRAINSET + TRAINSET,
                          valset=DEVSET, metric="exact_match", seed=3,
                          options={"auto": "light", "max_bootstrapped_demos": 1, "max_labeled_demos": 1,
                                   "minibatch": False})
    _improves_or_reports(worker, result)


def test_gepa_finds_the_working_instruction(worker: Any, openai_server: Any) -> None:
    result = compile_wait(worker, "plain", "gepa", timeout=300, trainset=TRAINSET, valset=DEVSET[:3],
                          metric="exact_match", seed=1, reflection_lm={"model": "openai/learn",
                                                                       "api_base": openai_server.base_url},
                          options={"max_metric_calls": 30, "reflection_minibatch_size": 2, "use_merge": False})
    instructions = [p["instructions"] for p in result["predictors"].values()]
    assert instructions == [INSTRUCTION] and score(worker, result["program_id"], DEVSET)[0] == 1.0
    assert max(result["scores"]["candidates"]) > min(result["scores"]["candidates"])


def test_simba_runs_to_completion(worker: Any) -> None:
    result = compile_wait(worker, "plain", "simba", timeout=300, trainset=EASY_TRAINSET + TRAINSET,
                          metric="exact_match", seed=2, options={"bsize": 4, "num_candidates": 2, "max_steps": 1,
                                                                 "max_demos": 1})
    _improves_or_reports(worker, result)
