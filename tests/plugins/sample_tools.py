"""A plugin with tools for ReAct tests: two that answer, one that raises."""

from __future__ import annotations

from typing import Any

from bridge.adapters.dspy import tool


@tool
def shout(text: str, excited: bool = False) -> str:
    """Repeats a text in capitals.

    Args:
        text: what to repeat
        excited: end with "!" instead of "."
    """
    return text.upper() + ("!" if excited else ".")


@tool(name="text_stats", description="Counts the words and characters of a text.")
def count_words(text: str) -> dict[str, Any]:
    return {"words": len(text.split()), "chars": len(text)}


class LookupFailed(RuntimeError):
    pass


@tool
def broken_lookup(term: str) -> str:
    """Looks a term up in a service that is down."""
    raise LookupFailed(f"service unavailable for {term!r}")
