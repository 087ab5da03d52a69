"""evaluate_program, batch_execute, list_metrics and usage/cost, through a real `dspex serve`
worker whose LM is DSPy's real dspy.LM talking HTTP to the local server.

The server's `learn` model answers a question right (its letters reversed) only when the
prompt carries demos, so a plain program must score 0 and the same program with demos
100: the score has to move, a canned answer cannot pass.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from bridge.wire.client import WorkerClient, dspex_serve_argv
from fixtures import PLUGINS, ROOT, ok, wait_for, worker_env
from learnable_task import right_answer
from openai_server import LocalOpenAIServer

QUESTIONS = ["apple", "kiwi", "mango", "plum", "peach", "lemon"]
DEMOS = [{"question": "grape", "answer": "eparg"}, {"question": "melon", "answer": "nolem"}]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerClient]:
    """One worker for the module (each test uses its own session), with the test metrics."""
    stderr = open(tmp_path_factory.mktemp("evaluate") / "worker.stderr", "wb")
    client = WorkerClient(dspex_serve_argv("--no-control", "--plugin", "sample_metrics"),
                          env=worker_env(PLUGINS), stderr=stderr, cwd=str(ROOT))
    client.stderr_path = Path(stderr.name)  # type: ignore[attr-defined]
    ok(client.request("ping", timeout=10))
    yield client
    client.close(timeout=5)


def _session(worker: WorkerClient, server: LocalOpenAIServer, model: str = "openai/learn",
             demos: list[dict[str, str]] | None = None) -> str:
    """A fresh session with its own LM and a `question -> answer` program `p`."""
    session = f"s-{uuid.uuid4().hex[:8]}"
    ok(worker.request("configure_lm", {"model": model, "api_base": server.base_url, "api_key": "sk-eval-secret-9876",
                                       "cache": False, "num_retries": 0, "session_id": session}))
    args: dict[str, Any] = {"id": "p", "signature": "question -> answer", "session_id": session}
    if demos:
        args["demos"] = demos
    ok(worker.request("create_program", args, timeout=60))
    return session


def _devset(questions: list[str] = QUESTIONS) -> list[dict[str, str]]:
    return [{"question": q, "answer": right_answer(q)} for q in questions]


def _sent(server: LocalOpenAIServer, model: str) -> int:
    return sum(1 for r in list(server.requests) if r["body"].get("model") == model)


def test_plain_program_scores_zero_and_the_same_program_with_demos_scores_100(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    plain = _session(worker, openai_server)
    low = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "exact_match",
                                                 "session_id": plain}, timeout=60))
    assert low["score"] == 0.0 and low["n"] == len(QUESTIONS) and low["errors"] == 0
    assert [r["outputs"] for r in low["results"]] == [{"answer": "unknown"}] * len(QUESTIONS)
    assert all(r["score"] == 0.0 and r["error"] is None for r in low["results"])

    taught = _session(worker, openai_server, demos=DEMOS)
    high = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "exact_match",
                                                  "session_id": taught}, timeout=60))
    assert high["score"] == 100.0 and high["errors"] == 0
    for index, (question, result) in enumerate(zip(QUESTIONS, high["results"])):
        assert result == {"index": index, "inputs": {"question": question},
                          "outputs": {"answer": right_answer(question)},
                          "expected": {"answer": right_answer(question)}, "score": 1.0, "error": None}
    assert high["usage"]["lm_calls"] == len(QUESTIONS) and high["usage"]["tokens"]["total_tokens"] > 0
    job = ok(worker.request("get_job", {"job_id": high["job_id"]}))
    assert job["status"] == "succeeded" and job["kind"] == "evaluate"
    assert job["progress"] == {"done": len(QUESTIONS), "total": len(QUESTIONS)} and job["score"] == 100.0
    assert job["lm_calls"] == len(QUESTIONS)
    # The evaluation ran on a copy: the session's program is as it was and still answers.
    info = ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "fig"},
                                                 "session_id": taught}))
    assert info["outputs"] == {"answer": "gif"}


def test_many_threads_give_the_same_score_and_results(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, model="openai/learn-delay-50", demos=DEMOS)
    questions = ["easy-one", *QUESTIONS, "x"]
    devset = _devset(questions)
    devset[1]["answer"] = "wrong on purpose"  # one miss, so the score is not trivially 100
    one = ok(worker.request("evaluate_program", {"program_id": "p", "devset": devset, "metric": "exact_match",
                                                 "session_id": session}, timeout=60))
    many = ok(worker.request("evaluate_program", {"program_id": "p", "devset": devset, "metric": "exact_match",
                                                  "num_threads": 4, "session_id": session}, timeout=60))
    assert one["score"] == many["score"] == round(100 * (len(questions) - 1) / len(questions), 2)
    assert [r["index"] for r in many["results"]] == list(range(len(questions)))
    assert one["results"] == many["results"]


def test_lm_calls_are_observed_without_dspys_callback_machinery(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    # With any DSPy callback installed, DSPy inspects every module, adapter and LM call's
    # arguments; the worker's observer lives in its LM instead, and still counts each call.
    session = _session(worker, openai_server)
    result = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "num_threads": 3,
                                                    "metric": "without_dspy_callbacks", "session_id": session},
                               timeout=60))
    assert result["score"] == 100.0 and result["errors"] == 0
    assert result["usage"]["lm_calls"] == len(QUESTIONS)
    calls = ok(worker.request("get_usage", {"session_id": session}))["session"]["lm_calls"]
    assert calls == len(QUESTIONS)


def test_a_metric_that_raises_on_one_example_is_that_examples_error(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, demos=DEMOS)
    questions = ["apple", "boom-box", "kiwi", "mango"]
    result = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(questions),
                                                    "metric": "fails_on_boom", "session_id": session}, timeout=60))
    assert result["errors"] == 1 and result["n"] == 4
    failed = result["results"][1]
    assert failed["score"] is None and failed["error_type"] == "metric_error"
    assert "cannot score 'boom-box'" in failed["error"]
    assert failed["outputs"] == {"answer": right_answer("boom-box")}  # the program ran; the metric failed
    assert [r["score"] for i, r in enumerate(result["results"]) if i != 1] == [1.0, 1.0, 1.0]
    assert result["score"] == 75.0  # DSPy counts the failed example as 0


def test_max_errors_stops_the_evaluation(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server)
    before = _sent(openai_server, "learn")
    reply = worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "always_fails",
                                                "max_errors": 2, "session_id": session}, timeout=60)
    assert reply["success"] is False and reply["error_type"] == "too_many_errors", reply
    assert "2 of 6 examples failed" in reply["error"] and "this metric always fails" in reply["error"]
    assert [e["index"] for e in reply["details"]["errors"]] == [0, 1]
    # Sequential: DSPy stopped after the second failure, so examples 2.. never ran.
    assert _sent(openai_server, "learn") - before == 2
    jobs = ok(worker.request("list_jobs", {"session_id": session}))["jobs"]
    assert [(j["kind"], j["status"], j["error_type"]) for j in jobs] == [("evaluate", "failed", "too_many_errors")]


@pytest.mark.parametrize(("change", "error_type", "text"), [
    ({"program_id": "nope"}, "program_not_found", "Program not found: nope"),
    ({"metric": "exact_mach"}, "unknown_metric", "did you mean 'exact_match'"),
    ({"metric": {"metric": "exact_match", "field": "colour"}}, "invalid_arguments", "'colour' is not an output"),
    ({"devset": []}, "invalid_arguments", "'devset' must be a non-empty list"),
    ({"devset": "apple"}, "invalid_arguments", "'devset' must be array"),
    ({"devset": [{"question": "a", "answer": "a"}, {"question": "b", "colour": "red", "size": 1}]},
     "invalid_arguments", "devset[1] has keys that are neither inputs nor outputs of the signature: colour, size"),
    ({"devset": [{"question": "a"}, {"answer": "b"}]}, "invalid_arguments", "devset[1] lacks the input(s) question"),
    ({"devset": [{"question": "a"}, 7]}, "invalid_arguments", "devset[1] must be an object"),
    ({"num_threads": 0}, "invalid_arguments", "'num_threads' must be an integer from 1 to 64"),
    ({"num_threads": 1000}, "invalid_arguments", "'num_threads' must be an integer from 1 to 64"),
    ({"max_errors": 0}, "invalid_arguments", "'max_errors' must be an integer of at least 1"),
    ({"wait": "yes"}, "invalid_arguments", "'wait' must be boolean"),
    ({"devset": [{"question": "a"}] * 10_001}, "limit_exceeded", "at most 10000"),
])
def test_bad_input_gets_its_own_error_type(worker: WorkerClient, openai_server: LocalOpenAIServer,
                                           change: dict[str, Any], error_type: str, text: str) -> None:
    session = _session(worker, openai_server)
    args = {"program_id": "p", "devset": _devset(), "metric": "exact_match", "session_id": session, **change}
    reply = worker.request("evaluate_program", args, timeout=30)
    assert reply["success"] is False and reply["error_type"] == error_type, reply
    assert text in reply["error"]
    # Nothing was started for a request that was refused.
    assert ok(worker.request("list_jobs", {"session_id": session}))["jobs"] == []


def test_without_an_lm_the_evaluation_is_refused(worker: WorkerClient) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    ok(worker.request("create_program", {"id": "p", "signature": "question -> answer", "session_id": session}))
    reply = worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "exact_match",
                                                "session_id": session})
    assert reply["error_type"] == "lm_not_configured"


def test_wait_false_replies_at_once_and_progress_climbs_to_the_total(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, model="openai/learn-delay-150", demos=DEMOS)
    started = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "exact_match",
                                                     "wait": False, "session_id": session}, timeout=10))
    assert started["status"] == "running" and set(started) == {"job_id", "status", "kind"}
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = ok(worker.request("get_job", {"job_id": started["job_id"]}))
        seen.append(view["progress"]["done"])
        assert view["progress"]["total"] == len(QUESTIONS)
        if view["status"] != "running":
            break
        time.sleep(0.05)
    assert view["status"] == "succeeded" and view["result"]["score"] == 100.0
    assert seen == sorted(seen) and seen[-1] == len(QUESTIONS)
    assert any(0 < done < len(QUESTIONS) for done in seen), seen  # watched it move, not just end


def test_cancel_job_ends_an_evaluation_within_a_second_and_no_call_follows(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    model = "learn-delay-200-cancel"
    session = _session(worker, openai_server, model=f"openai/{model}")
    started = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(QUESTIONS * 5),
                                                     "metric": "exact_match", "num_threads": 2, "wait": False,
                                                     "session_id": session}))
    job_id = started["job_id"]
    wait_for(lambda: ok(worker.request("get_job", {"job_id": job_id}))["progress"]["done"] >= 2)
    asked = time.monotonic()
    cancelled = ok(worker.request("cancel_job", {"job_id": job_id}, timeout=5))
    view = wait_for(lambda: (v := ok(worker.request("get_job", {"job_id": job_id})))["status"] != "running" and v)
    assert time.monotonic() - asked < 1.0
    assert cancelled["cancelled"] is True and view["status"] == "cancelled" and view["error_type"] == "cancelled"
    assert "result" not in view
    time.sleep(0.3)  # calls already on the wire when the cancel came have reached the server
    after_cancel = _sent(openai_server, model)
    time.sleep(1.0)  # several LM calls' worth (each takes 200 ms)
    assert _sent(openai_server, model) == after_cancel < len(QUESTIONS) * 5
    assert ok(worker.request("ping", timeout=5))["status"] == "ok"


def test_ping_is_answered_while_an_evaluation_runs(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, model="openai/learn-delay-200", demos=DEMOS)
    running: Future[dict[str, Any]] = worker.submit("evaluate_program", {
        "program_id": "p", "devset": _devset(), "metric": "exact_match", "session_id": session})
    time.sleep(0.3)
    sent = time.monotonic()
    ping = ok(worker.request("ping", timeout=5))
    # A generous hang bound: the evaluation takes over a second, the ping must not wait for it.
    assert time.monotonic() - sent < 0.5 and ping["status"] == "ok"
    assert not running.done()
    # So is another run of the same session's program (the job works on its own copy).
    executed = ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "fig"},
                                                     "session_id": session}, timeout=5))
    assert executed["outputs"] == {"answer": "gif"} and not running.done()
    assert ok(running.result(30))["score"] == 100.0


def test_a_job_started_without_waiting_holds_back_no_request_of_its_session(
        worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, model="openai/learn-delay-200", demos=DEMOS)
    job_id = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(), "metric": "exact_match",
                                                    "wait": False, "session_id": session}))["job_id"]
    # A write of the same session (it waits for the session's earlier requests) goes through at once.
    ok(worker.request("create_program", {"id": "q", "signature": "question -> answer", "session_id": session},
                      timeout=5))
    ok(worker.request("delete_program", {"program_id": "p", "session_id": session}, timeout=5))
    assert ok(worker.request("get_job", {"job_id": job_id}))["status"] == "running"
    view = wait_for(lambda: (v := ok(worker.request("get_job", {"job_id": job_id})))["status"] != "running" and v,
                    timeout=30)
    assert view["status"] == "succeeded" and view["result"]["score"] == 100.0  # its copy outlived the delete


def test_cleanup_session_cancels_its_running_evaluation(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    model = "learn-delay-200-cleanup"
    session = _session(worker, openai_server, model=f"openai/{model}")
    job_id = ok(worker.request("evaluate_program", {"program_id": "p", "devset": _devset(QUESTIONS * 5),
                                                    "metric": "exact_match", "wait": False,
                                                    "session_id": session}))["job_id"]
    wait_for(lambda: _sent(openai_server, model) >= 1)
    ok(worker.request("cleanup_session", {"session_id": session}, timeout=10))
    view = ok(worker.request("get_job", {"job_id": job_id}))
    assert view["status"] == "cancelled"
    time.sleep(0.3)
    after = _sent(openai_server, model)
    time.sleep(0.8)
    assert _sent(openai_server, model) == after


def test_batch_execute_answers_each_item_or_its_error(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, demos=DEMOS)
    inputs = [{"question": "apple"}, {"question": "kiwi", "colour": "green"}, {"question": "mango"}, {}]
    result = ok(worker.request("batch_execute", {"program_id": "p", "inputs": inputs, "num_threads": 2,
                                                 "session_id": session}, timeout=60))
    assert result["n"] == 4 and result["errors"] == 2
    assert result["results"][0] == {"index": 0, "outputs": {"answer": "elppa"}}
    assert result["results"][2] == {"index": 2, "outputs": {"answer": "ognam"}}
    assert result["results"][1]["error_type"] == "invalid_inputs" and "colour" in result["results"][1]["error"]
    assert result["results"][3]["error_type"] == "invalid_inputs" and "question" in result["results"][3]["error"]
    assert result["usage"]["lm_calls"] == 2
    job = ok(worker.request("get_job", {"job_id": result["job_id"]}))
    assert job["kind"] == "batch" and job["progress"] == {"done": 4, "total": 4}
    bad = worker.request("batch_execute", {"program_id": "p", "inputs": [], "session_id": session})
    assert bad["error_type"] == "invalid_arguments"


def test_a_failing_lm_call_is_the_items_own_error(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server, model="openai/fail-500")
    result = ok(worker.request("batch_execute", {"program_id": "p", "inputs": [{"question": "a"}, {"question": "b"}],
                                                 "session_id": session}, timeout=60))
    assert result["errors"] == 2
    assert all(r["error_type"] == "lm_error" and "sk-eval-secret" not in r["error"] for r in result["results"])


def test_list_metrics_shows_built_ins_and_plugin_metrics(worker: WorkerClient) -> None:
    metrics = {m["name"]: m for m in ok(worker.request("list_metrics"))["metrics"]}
    assert {"exact_match", "answer_exact_match", "answer_passage_match", "f1", "contains", "numeric"} <= set(metrics)
    assert metrics["numeric"]["options"] == {"tolerance": "number"} and metrics["numeric"]["plugin"] is None
    assert metrics["fails_on_boom"]["plugin"] == "sample_metrics"
    assert metrics["reversed_question"]["summary"].startswith("1 when the answer is the question's letters reversed")


def test_plugin_metric_without_expected_answers(worker: WorkerClient, openai_server: LocalOpenAIServer) -> None:
    session = _session(worker, openai_server)
    devset = [{"question": "easy-a"}, {"question": "hard-b"}]  # only easy- questions are answered right
    result = ok(worker.request("evaluate_program", {"program_id": "p", "devset": devset,
                                                    "metric": "reversed_question", "session_id": session}))
    assert result["score"] == 50.0 and [r["score"] for r in result["results"]] == [1.0, 0.0]
    assert result["results"][0]["expected"] == {}


def test_usage_and_cost_per_call_program_session_and_job(worker: WorkerClient,
                                                         openai_server: LocalOpenAIServer) -> None:
    from dspy.clients.model_metadata import model_info  # DSPy's shipped copy of the price map

    prices = model_info("openai", "gpt-4o-mini")
    session = _session(worker, openai_server, model="openai/gpt-4o-mini")
    executed = ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "hi"},
                                                     "session_id": session}))
    # execute_program's usage keeps the keys recorded replies have.
    assert set(executed["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    batch = ok(worker.request("batch_execute", {"program_id": "p", "inputs": [{"question": "a"}, {"question": "bb"}],
                                                "session_id": session}, timeout=60))

    def priced(tokens: dict[str, int]) -> float:
        return (tokens["prompt_tokens"] * prices["input_cost_per_token"]
                + tokens["completion_tokens"] * prices["output_cost_per_token"])

    assert batch["usage"]["lm_calls"] == 2 and batch["usage"]["cost"] > 0
    assert batch["usage"]["cost"] == pytest.approx(priced(batch["usage"]["tokens"]), rel=1e-6)
    usage = ok(worker.request("get_usage", {"session_id": session}))
    program = usage["programs"]["p"]
    assert program["lm_calls"] == 3 and program["unpriced_calls"] == 0
    assert program["tokens"]["prompt_tokens"] == executed["usage"]["prompt_tokens"] + \
        batch["usage"]["tokens"]["prompt_tokens"]
    assert program["cost"] == pytest.approx(priced(program["tokens"]), rel=1e-6)
    assert usage["session"]["lm_calls"] == 3 and usage["session"]["cost"] == pytest.approx(program["cost"])
    # A model without a price is counted, never priced as free.
    unpriced = _session(worker, openai_server)
    ok(worker.request("execute_program", {"program_id": "p", "inputs": {"question": "q"}, "session_id": unpriced}))
    other = ok(worker.request("get_usage", {"session_id": unpriced, "program_id": "p"}))["programs"]["p"]
    assert other["lm_calls"] == 1 and other["unpriced_calls"] == 1 and other["cost"] == 0.0
    assert worker.request("get_usage", {"session_id": unpriced, "program_id": "zz"})["error_type"] == \
        "program_not_found"


# -- the docs' examples ---------------------------------------------------------------------

def _matches(actual: Any, shown: Any, where: str = "reply") -> None:
    """`actual` is what the doc shows: "..." matches any value, a "..." key allows other
    keys, and a `timestamp` may be any number."""
    if shown == "...":
        return
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r}"
        keys = set(shown) - {"..."}
        assert keys <= set(actual), f"{where}: lacks {sorted(keys - set(actual))}: {actual}"
        assert "..." in shown or set(actual) == keys, f"{where}: the doc does not show {sorted(set(actual) - keys)}"
        for key in keys:
            if key == "timestamp":
                assert isinstance(actual[key], float), where
            else:
                _matches(actual[key], shown[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) == len(shown), f"{where}: {actual!r}"
        for index, (real, doc) in enumerate(zip(actual, shown)):
            _matches(real, doc, f"{where}[{index}]")
    else:
        assert actual == shown and type(actual) is type(shown), f"{where}: {actual!r} != {shown!r}"


def test_protocol_md_evaluation_exchange(spawn_worker: Any, openai_server: LocalOpenAIServer) -> None:
    import json

    from doc_examples import doc_test

    lines = doc_test("protocol.md", "exchange evaluate").body.replace(
        "http://127.0.0.1:8000/v1", openai_server.base_url).splitlines()
    requests = [json.loads(line[2:]) for line in lines if line.startswith("> ")]
    replies = [json.loads(line[2:]) for line in lines if line.startswith("< ")]
    assert len(requests) == len(replies) == 5
    worker = spawn_worker()
    for request, shown in zip(requests, replies):
        actual = worker.request(request["command"], request["args"], request_id=request["id"], timeout=60)
        _matches(actual, shown, f"reply {request['id']}")


def test_plugins_md_metric_example(spawn_worker: Any, openai_server: LocalOpenAIServer, tmp_path: Path) -> None:
    from doc_examples import doc_test

    (tmp_path / "my_metrics.py").write_text(doc_test("plugins.md", "python metric-plugin").body)
    worker = spawn_worker("--plugin", "my_metrics", env=worker_env(tmp_path))
    metrics = {m["name"]: m for m in ok(worker.request("list_metrics", timeout=30))["metrics"]}
    assert metrics["starts_right"]["plugin"] == "my_metrics" and "same_length" in metrics
    session = _session(worker, openai_server, demos=DEMOS)
    devset = [{"question": "kiwi", "answer": "iwik"}, {"question": "plum", "answer": "plum"}]
    starts = ok(worker.request("evaluate_program", {"program_id": "p", "devset": devset, "metric": "starts_right",
                                                    "session_id": session}, timeout=60))
    assert [r["score"] for r in starts["results"]] == [1.0, 0.0]  # "mulp" does not start with "p"
    length = ok(worker.request("evaluate_program", {"program_id": "p", "devset": [{"question": "abc", "answer": "x"}],
                                                    "metric": "same_length", "session_id": session}, timeout=60))
    assert length["results"][0]["score"] == pytest.approx(1 / 3) and length["score"] == 33.33
