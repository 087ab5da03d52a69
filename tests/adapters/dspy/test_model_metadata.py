"""DSPy's price-map lookups are remembered per model (bridge/adapters/dspy/model_metadata.py):
the same answers as DSPy's own function, each caller its own copy, a bounded table, and an
unknown model walked once instead of on every LM call."""

from __future__ import annotations

import importlib
import types
from typing import Any

from bridge import Engine
from bridge.adapters.dspy.loader import load_dspy
from bridge.adapters.dspy.model_metadata import RememberedModelInfo, install
from openai_server import LocalOpenAIServer


def _installed() -> RememberedModelInfo:
    dspy = load_dspy()  # installs it
    remembered = dspy.clients.model_metadata.model_info
    assert isinstance(remembered, RememberedModelInfo)
    return remembered


def test_every_dspy_module_that_bound_the_lookup_gets_the_remembering_one() -> None:
    remembered = _installed()
    # DSPy imports these on its first LM call, after the import installed the lookup: they
    # bind it by name then, as the ones imported before are rebound by install().
    costs = importlib.import_module("dspy.clients.costs")
    capabilities = importlib.import_module("dspy.clients.capabilities")
    assert costs.model_info is remembered
    assert capabilities.model_info is remembered
    assert install() is remembered  # a second install changes nothing


def test_answers_equal_dspy_own_and_are_copies() -> None:
    remembered = _installed()
    original = remembered.original
    cases: list[tuple[str, str, Any]] = [
        ("openai", "gpt-4o-mini", None),       # in the map: an entry with prices
        ("openai", "delay-200", None),         # not in it: the whole map walked, {}
        ("hosted_vllm", "my-llama", None),
        ("openai", "gpt-4o-mini", ("openai",)),
        ("openai", "gpt-4o-mini", ()),          # a declared provider naming no namespace
    ]
    for provider, model, namespaces in cases:
        first = remembered(provider, model, namespaces=namespaces)
        again = remembered(provider, model, namespaces=namespaces)
        assert first == again == original(provider, model, namespaces=namespaces), (provider, model)
        first["input_cost_per_token"] = -1.0  # a caller changing its answer changes nobody else's
        assert remembered(provider, model, namespaces=namespaces) == again
    assert remembered("openai", "gpt-4o-mini")["input_cost_per_token"] > 0


def test_an_unknown_model_is_walked_once_for_many_lm_calls(openai_server: LocalOpenAIServer) -> None:
    remembered = _installed()
    engine = Engine()
    try:
        model = "unlisted-model-for-metadata-test"

        def call(command: str, args: dict[str, Any]) -> dict[str, Any]:
            reply = engine.call(command, {**args, "session_id": "metadata"}, timeout=60)
            assert reply["success"], reply
            return reply["result"]

        call("configure_lm", {"model": f"openai/{model}", "api_base": openai_server.base_url,
                              "api_key": "sk-metadata-test", "cache": False})
        call("create_program", {"id": "p", "signature": "question -> answer"})
        before = remembered.computed
        for index in range(6):
            outputs = call("execute_program", {"program_id": "p", "inputs": {"question": f"q{index}"}})["outputs"]
            assert outputs["answer"]
        served = [r for r in openai_server.requests if model in str(r["body"].get("model"))]
        assert len(served) >= 6
        # DSPy looks the model up two to four times per call; computed only the first time.
        assert remembered.computed - before <= 3
    finally:
        engine.close()


def test_the_table_is_bounded_and_a_reloaded_map_is_read_again() -> None:
    calls: list[tuple[str, str]] = []

    def original(provider: str, model: str, *, namespaces: Any = None) -> dict[str, Any]:
        calls.append((provider, model))
        return {"model": model, "map": id(metadata._data)}

    metadata = types.SimpleNamespace(_data={"loaded": 1})
    remembered = RememberedModelInfo(original, metadata, limit=3)  # type: ignore[arg-type]
    for name in ("a", "b", "c", "d", "e"):
        remembered("p", name)
    assert len(remembered) == 3 and len(calls) == 5
    remembered("p", "e")
    assert len(calls) == 5  # remembered
    remembered("p", "a")
    assert len(calls) == 6  # dropped first, so asked again
    metadata._data = {"loaded": 2}  # DSPy reloaded its map
    assert remembered("p", "a")["map"] == id(metadata._data) and len(calls) == 7
    remembered("p", "x", namespaces=[["unhashable"]])  # no key: passed through, not remembered
    remembered("p", "x", namespaces=[["unhashable"]])
    assert len(calls) == 9
