"""What an execute_program request may set for its own LM call: generation settings only.

A request must never choose where the call goes or what it answers (api_base, api_key,
headers, model, mock_response, ...): those stay with configure_lm and the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import InvalidArguments


def _number_in(low: float, high: float, *, integer: bool = False) -> Any:
    def check(value: Any) -> str | None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return "a whole number" if integer else "a number"
        if not low <= value <= high:
            return f"between {low:g} and {high:g}"
        return None
    return check


def _stop_words(value: Any) -> str | None:
    if isinstance(value, str):
        return None
    if isinstance(value, list) and len(value) <= 16 and all(isinstance(v, str) for v in value):
        return None
    return "a string or a list of at most 16 strings"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


# Per-call options are generation settings only, each with its accepted values. Anything
# that would choose where or how the call is sent (api_base, api_key, headers, model,
# mock_response, cache, timeout, num_retries, ...) is refused: a request must never
# redirect the worker's key or forge an answer.
GENERATION_OPTIONS: dict[str, Callable[[Any], str | None]] = {
    "temperature": _number_in(0, 2),
    "max_tokens": _number_in(1, 10_000_000, integer=True),
    "max_completion_tokens": _number_in(1, 10_000_000, integer=True),
    "n": _number_in(1, 128, integer=True),
    "stop": _stop_words,
    "top_p": _number_in(0, 1),
    "seed": _number_in(-(2 ** 63), 2 ** 63 - 1, integer=True),
    "presence_penalty": _number_in(-2, 2),
    "frequency_penalty": _number_in(-2, 2),
    "logprobs": _boolean,
    "top_logprobs": _number_in(0, 20, integer=True),
    "rollout_id": _number_in(0, 2 ** 63 - 1, integer=True),
}


def parse_options(value: Any) -> dict[str, Any]:
    """Execution options, a map or (from Elixir keyword lists) a list of pairs, checked
    against GENERATION_OPTIONS."""
    if value is None:
        return {}
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        options = dict(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                options.update(item)
            elif isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                options[item[0]] = item[1]
            else:
                raise InvalidArguments("'options' list items must be [key, value] pairs or objects")
    else:
        raise InvalidArguments("'options' must be an object or a list")
    for key, option in options.items():
        check = GENERATION_OPTIONS.get(key) if isinstance(key, str) else None
        if check is None:
            shown = key if isinstance(key, str) and len(key) <= 40 else f"{str(key)[:37]}..."
            raise InvalidArguments(f"option {shown!r} is not allowed per call; allowed: "
                                   f"{', '.join(GENERATION_OPTIONS)}")
        problem = check(option)
        if problem is not None:
            raise InvalidArguments(f"option {key!r} must be {problem}")
    return options
