"""Plugin metrics for the evaluation tests: one that scores, one that fails on purpose."""

from __future__ import annotations

from typing import Any

from bridge.adapters.dspy.metrics import metric


@metric
def reversed_question(example: Any, prediction: Any) -> bool:
    """1 when the answer is the question's letters reversed (needs no expected answer)."""
    return str(prediction.answer).strip() == str(example.question).strip()[::-1]


@metric("fails_on_boom")
def fails_on_boom(example: Any, prediction: Any, trace: Any = None) -> float:
    """Raises on a question that contains "boom"; else exact match of the answer."""
    if "boom" in str(example.question):
        raise ValueError(f"cannot score {example.question!r}")
    return float(str(prediction.answer).strip() == str(example.answer).strip())


@metric
def always_fails(example: Any, prediction: Any) -> float:
    """Raises on every example (to reach max_errors)."""
    raise RuntimeError("this metric always fails")


@metric
def without_dspy_callbacks(example: Any, prediction: Any) -> float:
    """1 when no DSPy callback is active where the metric runs: the worker observes LM calls
    inside its LM, so DSPy's per-call callback machinery must stay off (lm_calls.py)."""
    import dspy

    return float(not dspy.settings.get("callbacks"))
