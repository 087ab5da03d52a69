"""The examples both sides of the DSPy jobs benchmark use: half `easy-` questions (which
the learnable test server answers right untaught), half plain ones (right only once taught)."""

from __future__ import annotations

from collections.abc import Callable


def dataset(n: int, right_answer: Callable[[str], str]) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        question = f"easy-q{i}" if i % 2 else f"question{i}"
        rows.append({"question": question, "answer": right_answer(question)})
    return rows
