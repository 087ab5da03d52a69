"""What the compile and portable tests share: the learnable task's sets, scoring by the task's own
right answers, and a worker with the learnable model configured."""

from __future__ import annotations

from typing import Any

from fixtures import ok
from learnable_task import right_answer

SIGNATURE = "question -> answer"
WORDS = ["lantern", "meadow", "cobalt", "harbor", "quartz", "willow", "ember", "saffron", "glacier", "tundra"]


def examples(words: list[str], prefix: str = "") -> list[dict[str, str]]:
    return [{"question": f"{prefix}{word}", "answer": right_answer(f"{prefix}{word}")} for word in words]


TRAINSET = examples(WORDS[:4])
# Bootstrapping needs traces the plain program gets right: `easy-` questions.
EASY_TRAINSET = examples(WORDS[:4], "easy-")
DEVSET = examples(WORDS[4:])


def configure(worker: Any, server: Any, model: str = "openai/learn", **extra: Any) -> None:
    ok(worker.request("configure_lm", {"model": model, "api_base": server.base_url,
                                       "api_key": "sk-compile-secret-9876", "num_retries": 0, **extra}, timeout=60))


def score(worker: Any, program_id: str, devset: list[dict[str, str]], **args: Any) -> tuple[float, list[str]]:
    """Fraction right (against the task's right answers) and the outputs, through execute_program."""
    outputs = []
    right = 0
    for example in devset:
        result = ok(worker.request("execute_program", {"program_id": program_id,
                                                       "inputs": {"question": example["question"]}, **args},
                                   timeout=60))
        answer = result["outputs"]["answer"]
        outputs.append(answer)
        right += answer == right_answer(example["question"])
    return right / len(devset), outputs


def compile_wait(worker: Any, program_id: str, optimizer: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
    return ok(worker.request("compile_program", {"program_id": program_id, "optimizer": optimizer,
                                                 "wait": True, **args}, timeout=timeout))
