"""An offline, deterministic LM for `configure_lm` with `model: "mock"`.

It reads what DSPy's ChatAdapter (or JSONAdapter) asks for — the output fields and their
types from the system message, the input values from the last user message — and answers
with values of the declared types derived from a hash of the inputs. The same inputs
always give the same answer and different inputs give different answers, so a test (or a
DSPex user wiring up a pipeline) sees real, typed data flow without network or keys.

Importing this module does not import DSPy: the class is made on first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from typing import Any

from bridge.adapters.dspy.signatures import SignatureError, TypeNode, parse_type

__all__ = ["make_mock_lm", "mock_lm_class", "mock_completion", "mock_value"]

logger = logging.getLogger("dspex.mock_lm")

# "1. `answer` (int): the answer" in ChatAdapter's and JSONAdapter's system message.
_OUTPUT_LINE = re.compile(r"^\d+\. `(?P<name>\w+)` \((?P<rest>.*)$", re.M)
_INPUT_BLOCK = re.compile(r"\[\[ ## (?P<name>\w+) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## \w+ ## \]\]|\Z)", re.S)
# The adapters end the last user message with an instruction that is not part of any input.
_TRAILERS = ("\n\nRespond with the corresponding output fields", "\n\nRespond with a JSON object")
_JSON_MARKERS = ("Outputs will be a JSON object", "Respond with a JSON object")


class _AttrDict(dict):
    """A response readable both as `r["choices"]` and `r.choices`.

    DSPy 3.4.1 reads legacy responses through `legacy_outputs.value()` (dict or attribute),
    but its history code reads `response.model` by attribute, so both must work.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _attr(obj: Any) -> Any:
    if isinstance(obj, dict):
        return _AttrDict({k: _attr(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_attr(v) for v in obj]
    return obj


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _output_fields(system: str) -> list[tuple[str, TypeNode | None]]:
    _, found, tail = system.partition("Your output fields are:")
    if not found:
        return []
    section = tail.split("All interactions will be structured", 1)[0]
    fields = []
    for match in _OUTPUT_LINE.finditer(section):
        rest = match["rest"]
        node: TypeNode | None = None
        # The type ends at some "):" — try each, since descriptions and literals may hold one too.
        for end in (m.start() for m in re.finditer(r"\):", rest)):
            try:
                node = parse_type(rest[:end])
                break
            except SignatureError:
                continue
        fields.append((match["name"], node))
    return fields


def _inputs(user: str) -> dict[str, str]:
    for trailer in _TRAILERS:
        user = user.split(trailer, 1)[0]
    found = {m["name"]: m["value"].strip() for m in _INPUT_BLOCK.finditer(user)}
    return found or {"prompt": user.strip()}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def mock_value(field: str, node: TypeNode | None, seed: str) -> Any:
    """A value of the declared type, determined by `seed` (a hash of the inputs)."""
    h = _digest(seed, field)
    kind = node.kind if node is not None else "string"
    if kind == "integer":
        return int(h[:8], 16) % 1_000_000
    if kind == "float":
        return int(h[:8], 16) % 1_000_000 / 100
    if kind == "boolean":
        return int(h[:2], 16) % 2 == 0
    if kind == "none":
        return None
    if kind == "literal":
        return node.values[0] if node and node.values else None
    if kind == "union" and node is not None:
        members = [m for m in node.args if m.kind != "none"] or list(node.args)
        return mock_value(field, members[0], seed)
    if kind == "list":
        element = node.args[0] if node and node.args else None
        return [mock_value(f"{field}[{i}]", element, seed) for i in range(1 + int(h[8:10], 16) % 3)]
    if kind == "dict":
        if node is None or not node.args:
            return {"mock": f"{field} {h[:8]}", "n": int(h[8:12], 16)}
        key_node, value_node = node.args
        result: dict[Any, Any] = {}
        for i in range(1 + int(h[8:10], 16) % 2):
            key = mock_value(f"{field}.key{i}", key_node, seed)
            if isinstance(key, (dict, list)):
                key = json.dumps(key, sort_keys=True)
            result[key] = mock_value(f"{field}.value{i}", value_node, seed)
        return result
    if field == "reasoning":
        return f"mock reasoning {h[:8]}: the answer follows from the inputs."
    return f"mock {field} {h[:8]}"


def _chat_text(value: Any) -> str:
    # ChatAdapter takes strings verbatim and parses everything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def mock_completion(messages: list[dict[str, Any]], model: str = "mock", n: int = 1,
                    json_mode: bool | None = None) -> dict[str, Any]:
    """The OpenAI chat-completion dict the mock LM answers `messages` with."""
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    if json_mode is None:
        json_mode = any(marker in system or marker in user for marker in _JSON_MARKERS)
    fields = _output_fields(system)
    inputs = _inputs(user)
    base_seed = json.dumps(sorted(inputs.items()), ensure_ascii=False)
    choices = []
    for index in range(max(1, n)):
        # Extra completions (n > 1) differ from each other, the first matches n == 1.
        seed = base_seed if index == 0 else f"{base_seed}#{index}"
        if not fields:
            content = f"mock response {_digest(seed)[:8]}"
        elif json_mode:
            content = json.dumps({name: mock_value(name, node, seed) for name, node in fields}, ensure_ascii=False)
        else:
            parts = [f"[[ ## {name} ## ]]\n{_chat_text(mock_value(name, node, seed))}" for name, node in fields]
            content = "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"
        choices.append({"index": index, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content}})
    prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
    completion_tokens = sum(len(c["message"]["content"].split()) for c in choices)
    return {
        "id": f"mock-{_digest(base_seed)[:12]}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@functools.cache
def mock_lm_class() -> type:
    """The `dspy.BaseLM` subclass behind `make_mock_lm`, made once, on first use."""
    from bridge.adapters.dspy.loader import load_dspy

    dspy = load_dspy()

    class MockLM(dspy.BaseLM):  # type: ignore[name-defined,misc]
        """Deterministic offline LM; see the `bridge.mock_lm` module docstring."""

        def __init__(self, model: str = "mock", temperature: float | None = None,
                     max_tokens: int | None = None, cache: bool = False, **kwargs: Any) -> None:
            # DSPy's cache is pointless for a pure function and its keys would mix runs.
            # load_state passes model_type back; the mock only speaks chat.
            for ignored in ("api_key", "api_base", "model_type"):
                kwargs.pop(ignored, None)
            super().__init__(model=model, model_type="chat", temperature=temperature,
                             max_tokens=max_tokens, cache=False, **kwargs)

        def forward(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                    **kwargs: Any) -> Any:
            msgs = list(messages or [{"role": "user", "content": prompt or ""}])
            n = kwargs.get("n") or self.kwargs.get("n") or 1
            json_mode = True if kwargs.get("response_format") else None
            return _attr(mock_completion(msgs, model=self.model, n=int(n), json_mode=json_mode))

        async def aforward(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                           **kwargs: Any) -> Any:
            return self.forward(prompt=prompt, messages=messages, **kwargs)

    # dump_state records the class path; make it importable via this module's __getattr__.
    MockLM.__module__ = __name__
    MockLM.__qualname__ = "MockLM"
    return MockLM


def __getattr__(name: str) -> Any:
    # `bridge.mock_lm.MockLM` resolves lazily, so importing the module stays DSPy-free.
    if name == "MockLM":
        return mock_lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_mock_lm(model: str = "mock", **kwargs: Any) -> Any:
    """A new deterministic offline LM (a `dspy.BaseLM`); no network, no API key."""
    return mock_lm_class()(model=model, **kwargs)
