"""The offline mock LM, driven through real DSPy modules and adapters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.dspy.mock_lm import make_mock_lm, mock_completion
from bridge.adapters.dspy.signatures import build_dspy_signature, parse_signature

from fixtures import ROOT  # noqa: E402

# DSPy 3.4 deprecates BaseLM.forward() plugins (removal planned for 3.5); the brief asks
# for exactly that interface, so the warning is expected here and checked separately.
pytestmark = pytest.mark.filterwarnings("ignore:Implementing custom LMs through BaseLM:DeprecationWarning")

TYPED = "question, context: list[str] -> s: str, n: int, x: float, flag: bool, tags: list[str], meta: dict"


@pytest.fixture(scope="module")
def dspy() -> Any:
    from bridge.adapters.dspy.loader import load_dspy

    return load_dspy()


def _run(dspy: Any, module_cls: Any, signature: str, adapter: Any = None, **inputs: Any) -> Any:
    lm = make_mock_lm()
    sig = build_dspy_signature(parse_signature(signature))
    with dspy.context(lm=lm, adapter=adapter):
        return module_cls(sig)(**inputs)


def _check_types(prediction: Any) -> None:
    assert isinstance(prediction.s, str) and prediction.s.startswith("mock s ")
    assert type(prediction.n) is int
    assert type(prediction.x) is float
    assert type(prediction.flag) is bool
    assert isinstance(prediction.tags, list) and prediction.tags and all(isinstance(i, str) for i in prediction.tags)
    assert isinstance(prediction.meta, dict) and prediction.meta


@pytest.mark.parametrize("module_name", ["Predict", "ChainOfThought"])
@pytest.mark.parametrize("adapter_name", ["ChatAdapter", "JSONAdapter"])
def test_typed_outputs_are_deterministic_and_input_dependent(dspy: Any, module_name: str, adapter_name: str) -> None:
    module_cls = getattr(dspy, module_name)
    adapter = getattr(dspy, adapter_name)()
    first = _run(dspy, module_cls, TYPED, adapter, question="What is 2+2?", context=["math"])
    again = _run(dspy, module_cls, TYPED, adapter, question="What is 2+2?", context=["math"])
    other = _run(dspy, module_cls, TYPED, adapter, question="What is 3+3?", context=["math"])
    for prediction in (first, again, other):
        _check_types(prediction)
    assert dict(first) == dict(again)
    # every non-boolean field changes with the input, so nothing matches by accident
    for name in ("s", "n", "x", "tags", "meta"):
        assert getattr(first, name) != getattr(other, name), name
    if module_name == "ChainOfThought":
        assert isinstance(first.reasoning, str) and first.reasoning
        assert first.reasoning != other.reasoning
    else:
        assert "reasoning" not in first


def test_chat_and_json_adapters_agree(dspy: Any) -> None:
    chat = _run(dspy, dspy.Predict, TYPED, dspy.ChatAdapter(), question="q", context=["c"])
    as_json = _run(dspy, dspy.Predict, TYPED, dspy.JSONAdapter(), question="q", context=["c"])
    assert dict(chat) == dict(as_json)


def test_booleans_take_both_values(dspy: Any) -> None:
    seen = {_run(dspy, dspy.Predict, "question -> flag: bool", question=f"q{i}").flag for i in range(12)}
    assert seen == {True, False}


def test_every_input_matters(dspy: Any) -> None:
    base = _run(dspy, dspy.Predict, "a, b -> answer", a="1", b="2").answer
    assert _run(dspy, dspy.Predict, "a, b -> answer", a="1", b="3").answer != base
    assert _run(dspy, dspy.Predict, "a, b -> answer", a="0", b="2").answer != base


def test_nested_literal_optional_union_types(dspy: Any) -> None:
    signature = ("question -> label: Literal['yes', 'no'], maybe: Optional[int], either: union<float|string>, "
                 "table: dict[str, list[int]], grid: list<list<integer>>, anything: any")
    p = _run(dspy, dspy.ChainOfThought, signature, question="x")
    assert p.label == "yes"
    assert type(p.maybe) is int
    assert type(p.either) is float
    assert p.table and all(isinstance(k, str) and all(type(v) is int for v in vs) for k, vs in p.table.items())
    assert p.grid and all(isinstance(row, list) and all(type(v) is int for v in row) for row in p.grid)
    assert p.anything is not None


def test_multiline_inputs_and_trailer_not_in_value() -> None:
    """The trailing 'Respond with ...' instruction must not leak into the last input."""
    messages = [
        {"role": "system", "content": "Your output fields are:\n1. `answer` (int): the answer\n"
                                      "All interactions will be structured in the following way"},
        {"role": "user", "content": "[[ ## question ## ]]\nline one\n\nline two\n\n"
                                    "Respond with the corresponding output fields, starting with ..."},
    ]
    changed = [dict(messages[0]), {"role": "user", "content": messages[1]["content"].replace("starting", "beginning")}]
    assert mock_completion(messages)["choices"] == mock_completion(changed)["choices"]


def test_response_shape_and_usage(dspy: Any) -> None:
    lm = make_mock_lm("mock-model")
    sig = build_dspy_signature(parse_signature("question -> answer: int"))
    with dspy.context(lm=lm):
        dspy.Predict(sig)(question="hello")
    entry = lm.history[-1]
    usage = entry["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert entry["response_model"] == "mock-model"
    raw = lm.forward(messages=[{"role": "user", "content": "hi"}])
    assert raw["model"] == raw.model == "mock-model"
    assert raw.choices[0].message.content == raw["choices"][0]["message"]["content"]


def test_plain_prompt_and_n_completions(dspy: Any) -> None:
    lm = make_mock_lm()
    assert lm("hello") == lm("hello")
    assert lm("hello") != lm("goodbye")
    with dspy.context(lm=lm):
        completions = dspy.Predict("question -> answer", n=3)(question="q").completions.answer
    assert len(completions) == 3 and len(set(completions)) == 3


def test_async_path(dspy: Any) -> None:
    lm = make_mock_lm()
    sig = build_dspy_signature(parse_signature("question -> answer: int"))

    async def call() -> Any:
        with dspy.context(lm=lm):
            return await dspy.Predict(sig).acall(question="async?")

    with dspy.context(lm=lm):
        sync_answer = dspy.Predict(sig)(question="async?").answer
    assert asyncio.run(call()).answer == sync_answer


def test_is_a_baselm_and_state_round_trips(dspy: Any) -> None:
    lm = make_mock_lm("mock", temperature=0.3)
    assert isinstance(lm, dspy.BaseLM)
    state = lm.dump_state()
    assert state["_dspy_lm_class"] == "bridge.adapters.dspy.mock_lm.MockLM"
    again = dspy.BaseLM.load_state(state, allow_custom_lm_class=True)
    assert type(again) is type(lm) and again.kwargs["temperature"] == 0.3


def test_import_is_lazy_and_output_stays_clean(tmp_path: Path) -> None:
    """Importing the module loads no DSPy; a full call writes nothing to stdout, and, called
    from a library module as the worker does, nothing to stderr either (DSPy's
    DeprecationWarning is attributed to the caller, which Python's default filters hide
    unless it is __main__)."""
    (tmp_path / "worker_like.py").write_text("""
import sys
import bridge.adapters.dspy.mock_lm as mock_lm
assert "dspy" not in sys.modules, "import pulled in dspy"
from bridge.adapters.dspy.signatures import build_dspy_signature, parse_signature

def run():
    import dspy
    lm = mock_lm.make_mock_lm()
    sig = build_dspy_signature(parse_signature("question -> answer: int, items: list[str]"))
    with dspy.context(lm=lm):
        p = dspy.ChainOfThought(sig)(question="hi")
        dspy.Predict(sig)(question="hi")
    assert type(p.answer) is int
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run([sys.executable, "-c", "import worker_like; worker_like.run()"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""
