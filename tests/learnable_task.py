"""A task the local test server only solves once a program has been taught it.

For a model whose name contains `learn` (e.g. `openai/learn`), the right `answer` to a
`question` is the question's letters reversed. The server answers right only when the
prompt shows the program learned something:
- it carries demonstrations (ChatAdapter sends each demo as an earlier user/assistant pair), or
- its instructions say to reverse (what an instruction optimizer must find), or
- the question starts with `easy-` (so a bootstrapping teacher gets some traces right).
Otherwise it answers `unknown`. Output fields whose name holds `instruction` (what MIPROv2,
COPRO and GEPA ask an LM to propose) get the instruction that works, so instruction
optimizers can find it; nothing is canned per test: tests compute the right answers from
the questions and assert that scores moved.
"""

from __future__ import annotations

from typing import Any

INSTRUCTION = "Reverse the letters of the question."


def right_answer(question: str) -> str:
    return question.strip()[::-1]


def learned_value(model: str, name: str, messages: list[dict[str, Any]], system: str,
                  inputs: dict[str, str]) -> str | None:
    """The server's answer for field `name`, or None where the usual rule applies."""
    if "learn" not in model:
        return None
    if "instruction" in name:
        return INSTRUCTION
    if name != "answer" or "question" not in inputs:
        return None
    question = inputs["question"]
    users = sum(1 for m in messages if m.get("role") == "user")
    taught = users > 1 or "reverse" in system.lower() or question.startswith("easy-")
    return right_answer(question) if taught else "unknown"
