"""The console's DSPy life-cycle meta-commands against the local LM server: :eval and
:compile with data set files, :jobs, :export/:import, :tools, :metrics, completion of
optimizer names, and Ctrl-C during a followed job cancelling it."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from learnable_task import right_answer
from openai_server import LocalOpenAIServer
from repl_screen import Screen

from dspex_cli.repl import lifecycle
from dspex_cli.repl.completion import candidates

QUESTIONS = ["alpha", "bravo", "charlie", "delta"]




@pytest.fixture
def screen(tmp_path: Path, openai_server: LocalOpenAIServer) -> Iterator[Screen]:
    screen = Screen(tmp_path)
    screen.run(f":lm openai/learn api_base={openai_server.base_url} api_key=sk-repl-test-000000 cache=false")
    screen.run("qa = question -> answer")
    yield screen
    screen.shell.close()


def _datasets(tmp_path: Path) -> tuple[Path, Path]:
    devset = tmp_path / "dev.jsonl"
    devset.write_text("".join(json.dumps({"question": q, "answer": right_answer(q)}) + "\n" for q in QUESTIONS))
    trainset = tmp_path / "train.csv"
    with trainset.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer"])
        writer.writeheader()
        for q in ("one", "two", "three"):
            writer.writerow({"question": q, "answer": right_answer(q)})
    return devset, trainset


def test_eval_and_compile_move_the_score_and_export_import_keep_it(screen: Screen, tmp_path: Path) -> None:
    devset, trainset = _datasets(tmp_path)
    before = screen.run(f":eval qa {devset}")
    assert '"score": 0.0' in before, before
    compiled = screen.run(f":compile qa labeled_few_shot {trainset} new=qa_taught k=3")
    assert '"program_id": "qa_taught"' in compiled, compiled
    after = screen.run(f":eval qa_taught {devset}")
    assert '"score": 100.0' in after, after
    jobs = screen.run(":jobs")
    assert jobs.count('"kind": "evaluate"') == 2 and '"kind": "compile"' in jobs
    exported = tmp_path / "qa_taught.json"
    assert f"saved qa_taught to {exported}" in screen.run(f":export qa_taught {exported}")
    assert json.loads(exported.read_text())["state"]
    assert "import_program" in screen.run(f":import {exported} qa_copy")
    assert '"score": 100.0' in screen.run(f":eval qa_copy {devset}")


def test_tools_metrics_and_bad_files(screen: Screen, tmp_path: Path) -> None:
    assert "exact_match" in screen.run(":metrics") and "numeric" in screen.run(":metrics")
    assert "tools" in screen.run(":tools")
    assert "Cannot read" in screen.run(f":eval qa {tmp_path / 'missing.jsonl'}")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert "is not valid jsonl" in screen.run(f":eval qa {tmp_path / 'bad.jsonl'}")
    (tmp_path / "empty.csv").write_text("question,answer\n")
    assert "holds no examples" in screen.run(f":eval qa {tmp_path / 'empty.csv'}")
    assert "usage: :compile" in screen.run(":compile qa")
    assert "unknown_optimizer" in screen.run(f":compile qa bootstrap_fewshot {_datasets(tmp_path)[1]}")


def test_completion_offers_optimizers_from_the_registry(screen: Screen) -> None:
    offered = {c.text for c in candidates(":compile qa boot", screen.shell)}
    assert {"bootstrap_few_shot", "bootstrap_few_shot_with_random_search"} <= offered
    assert {c.text for c in candidates(":compile q", screen.shell)} >= {"qa"}


def test_ctrl_c_while_following_a_job_cancels_it(screen: Screen, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    devset = tmp_path / "slow.jsonl"
    devset.write_text("".join(json.dumps({"question": f"q{i}", "answer": "x"}) + "\n" for i in range(40)))
    screen.run(":lm openai/learn-delay-200 api_base={} api_key=sk-repl-test-000000 cache=false".format(
        screen.shell.target.engine.adapter("dspy").default_lm.public["api_base"]))
    calls = {"n": 0}

    def interrupt(seconds: float) -> None:
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "_pause", interrupt)  # Ctrl-C while the console waits
    text = screen.run(f":eval qa {devset}")
    assert calls["n"] == 1 and "cancelling job-" in text
    (job,) = [j for j in screen.shell.target.engine.jobs.all() if j.kind == "evaluate"]
    assert job.status == "cancelled" and job.done < 40
