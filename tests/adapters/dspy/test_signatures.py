"""Signature parsing, type whitelist, DSPy class building and JSON-safe outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest

from bridge.adapters.dspy.signatures import (
    MAX_FIELDS,
    RESERVED_FIELD_NAMES,
    RESERVED_INPUT_NAMES,
    FieldSpec,
    InputValidationError,
    SignatureError,
    SignatureSpec,
    build_dspy_signature,
    canonical_type_text,
    coerce_inputs,
    field_mapping,
    parse_signature,
    parse_type,
    python_type_text,
    signature_def,
    type_to_python,
)
from bridge.adapters.dspy.json_values import to_json_safe

from fixtures import ROOT  # noqa: E402


# ------------------------------------------------------------------------ types

@pytest.mark.parametrize(
    ("text", "python", "canonical"),
    [
        ("string", str, "string"),
        ("String", str, "string"),
        ("str", str, "string"),
        ("integer", int, "integer"),
        ("INT", int, "integer"),
        ("float", float, "float"),
        ("boolean", bool, "boolean"),
        ("bool", bool, "boolean"),
        ("any", Any, "any"),
        ("Any", Any, "any"),
        ("dict", dict, "dict"),
        ("list", list, "list"),
        ("list<string>", list[str], "list<string>"),
        ("list[str]", list[str], "list<string>"),
        ("List[int]", list[int], "list<integer>"),
        ("dict<string, integer>", dict[str, int], "dict<string,integer>"),
        ("dict[str, list[int]]", dict[str, list[int]], "dict<string,list<integer>>"),
        ("union<integer|string>", Union[int, str], "union<integer|string>"),
        ("Union[int, str]", Union[int, str], "union<integer|string>"),
        ("int | str", Union[int, str], "union<integer|string>"),
        ("Optional[int]", Optional[int], "union<integer|none>"),
        ("typing.Optional[str]", Optional[str], "union<string|none>"),
        ("Literal['a', 'b']", Literal["a", "b"], "literal<'a','b'>"),
        ("list<dict<string, union<integer|list<float>>>>",
         list[dict[str, Union[int, list[float]]]], "list<dict<string,union<integer|list<float>>>>"),
        ("Optional[list[dict[str, Any]]]", Optional[list[dict[str, Any]]], "union<list<dict<string,any>>|none>"),
    ],
)
def test_parse_type_both_spellings(text: str, python: Any, canonical: str) -> None:
    node = parse_type(text)
    assert type_to_python(node) == python
    assert canonical_type_text(node) == canonical
    # The canonical and Python spellings parse back to the same node.
    assert parse_type(canonical) == node
    assert parse_type(python_type_text(node)) == node


def test_literal_values_keep_their_types() -> None:
    node = parse_type('Literal[1, "x", True, None]')
    assert node.values == (1, "x", True, None)
    assert type_to_python(node) == Literal[1, "x", True, None]
    assert parse_type(r"Literal['it\'s', 'a,b']").values == ("it's", "a,b")


@pytest.mark.parametrize(
    "text",
    [
        "os.system",
        "__import__('os')",
        "eval",
        "exec('x')",
        "subprocess.Popen",
        "typing.TYPE_CHECKING",
        "list[os.PathLike]",
        "dict[str, sys.modules]",
        "Literal[open('x')]",
        "lambda: 1",
        "str[int]",
        "list[int, str]",
        "dict[str]",
        "Optional",
        "Literal[1.5]",
        "tuple[int]",
        "list<int",
        "int)",
        "list<" * 30 + "int" + ">" * 30,
        "x" * 2000,
    ],
)
def test_unsafe_or_malformed_types_are_rejected(text: str) -> None:
    with pytest.raises(SignatureError):
        parse_type(text)


def test_rejection_imports_nothing() -> None:
    """Bad type names are refused by the whitelist, not by trying to resolve them."""
    code = """
import sys
from bridge.adapters.dspy.signatures import parse_signature, SignatureError
before = set(sys.modules)
for text in ["a: os.system -> b", "a -> b: __import__('os')", "a: shutil.rmtree -> b",
             "a -> b: importlib.import_module('antigravity')", "a: ctypes.CDLL -> b"]:
    try:
        parse_signature(text)
    except SignatureError:
        pass
    else:
        raise SystemExit("accepted " + text)
new = set(sys.modules) - before
assert not new, new
assert "dspy" not in sys.modules and "antigravity" not in sys.modules and "ctypes" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ------------------------------------------------------------------- signatures

def test_string_signature() -> None:
    spec = parse_signature("question, context: list[str] -> answer: int")
    assert spec.inputs == (FieldSpec("question", "string"), FieldSpec("context", "list<string>"))
    assert spec.outputs == (FieldSpec("answer", "integer"),)
    assert signature_def(spec) == "question: str, context: list[str] -> answer: int"
    assert field_mapping(spec) == {"inputs": {"question": "string", "context": "list<string>"},
                                   "outputs": {"answer": "integer"}}


def test_string_signature_with_commas_and_arrows_inside_types() -> None:
    spec = parse_signature("q: Literal['a->b', 'c,d'], m: dict[str, int] -> a: Optional[int], b")
    assert [f.name for f in spec.inputs] == ["q", "m"]
    assert spec.inputs[0].type_text == "literal<'a->b','c,d'>"
    assert signature_def(spec) == "q: Literal['a->b', 'c,d'], m: dict[str, int] -> a: Optional[int], b: str"
    assert parse_signature(signature_def(spec)) == spec


def test_dspex_map_signature() -> None:
    raw = {
        "name": "QuestionAnswering",
        "description": "Answer the question.",
        "inputs": [{"name": "question", "type": "string", "description": "The question"},
                   {"name": "docs", "type": "list<string>"}],
        "outputs": [{"name": "answer", "type": "integer", "description": "The answer"},
                    {"name": "confidence"}],
    }
    spec = parse_signature(raw)
    assert spec.name == "QuestionAnswering"
    assert spec.description == "Answer the question."
    assert spec.inputs[0] == FieldSpec("question", "string", "The question")
    assert spec.outputs[1] == FieldSpec("confidence", "string", "")
    assert spec.to_dict()["inputs"][1] == {"name": "docs", "type": "list<string>", "description": ""}
    assert SignatureSpec.from_dict(spec.to_dict()) == spec
    json.dumps(spec.to_dict())


def test_map_with_plain_string_fields_and_mapping_form() -> None:
    spec = parse_signature({"inputs": ["question", "context"], "outputs": ["answer"]})
    assert [f.type_text for f in (*spec.inputs, *spec.outputs)] == ["string"] * 3
    spec = parse_signature({"inputs": {"question": "string"}, "outputs": {"n": {"type": "integer", "description": "d"}}})
    assert spec.outputs == (FieldSpec("n", "integer", "d"),)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("question answer", "->"),
        ("a -> b -> c", "->"),
        ("-> answer", "at least one input"),
        ("question ->", "at least one output"),
        ("1abc -> b", "'1abc'"),
        ("class -> b", "keyword"),
        ("a -> _secret", "'_secret'"),
        ("a, a -> b", "'a'"),
        ("a -> a", "'a'"),
        ("a: -> b", "'a'"),
        ("a -> b: Widget", "'b'"),
        ("a -> b: os.system", "os.system"),
        ("a -> instructions", "reserved"),
        ("self -> b", "reserved"),
        ({"inputs": [{"type": "string"}], "outputs": ["a"]}, "name"),
        ({"inputs": ["q"], "outputs": [{"name": "a", "type": 3}]}, "'a'"),
        ({"inputs": "q", "outputs": ["a"]}, "list"),
        ({"inputs": ["q"], "outputs": ["a"], "description": 5}, "description"),
        ({"inputs": ["q-x"], "outputs": ["a"]}, "'q-x'"),
        (42, "map or a string"),
    ],
)
def test_invalid_signatures_name_the_problem(value: Any, fragment: str) -> None:
    with pytest.raises(SignatureError) as info:
        parse_signature(value)
    assert fragment in str(info.value)
    assert info.value.error_type == "invalid_signature"


def test_size_limits() -> None:
    many = ", ".join(f"f{i}" for i in range(MAX_FIELDS + 1))
    with pytest.raises(SignatureError, match="too many"):
        parse_signature(f"{many} -> out")
    with pytest.raises(SignatureError, match="too many"):
        parse_signature({"inputs": [f"f{i}" for i in range(MAX_FIELDS + 1)], "outputs": ["o"]})
    with pytest.raises(SignatureError, match="too long"):
        parse_signature("q" * 10_001 + " -> a")
    # the limit is on the total: 100 fields fit
    parse_signature(", ".join(f"f{i}" for i in range(MAX_FIELDS - 1)) + " -> out")


# ------------------------------------------------------------------------- DSPy

def test_build_dspy_signature_types_and_descriptions() -> None:
    spec = parse_signature({
        "name": "QA thing!",
        "description": "Answer briefly.",
        "inputs": [{"name": "question", "type": "string", "description": "the q"},
                   {"name": "context", "type": "list<string>"}],
        "outputs": [{"name": "answer", "type": "integer", "description": "the a"},
                    {"name": "tags", "type": "Optional[dict[str, list[float]]]"},
                    {"name": "label", "type": "Literal['yes', 'no']"}],
    })
    sig = build_dspy_signature(spec)
    assert sig.__name__ == "QA_thing"
    assert sig.instructions == "Answer briefly."
    assert list(sig.input_fields) == ["question", "context"]
    assert list(sig.output_fields) == ["answer", "tags", "label"]
    assert sig.input_fields["context"].annotation == list[str]
    assert sig.output_fields["answer"].annotation is int
    assert sig.output_fields["tags"].annotation == Optional[dict[str, list[float]]]
    assert sig.output_fields["label"].annotation == Literal["yes", "no"]
    assert sig.input_fields["question"].json_schema_extra["desc"] == "the q"
    assert sig.output_fields["answer"].json_schema_extra["desc"] == "the a"


def test_build_dspy_signature_default_name_and_instructions() -> None:
    sig = build_dspy_signature(parse_signature("question -> answer: int"))
    assert sig.__name__ == "DynamicSignature"
    assert "question" in sig.instructions and "answer" in sig.instructions
    assert build_dspy_signature(parse_signature({"name": "123 go", "inputs": ["a"], "outputs": ["b"]})).__name__ == "S_123_go"


# ----------------------------------------------------------------------- values

def test_to_json_safe() -> None:
    import dspy
    import pydantic

    class Item(pydantic.BaseModel):
        x: float
        pair: tuple[int, int]
        kind: Literal["a", "b"] = "a"

    prediction = dspy.Prediction(answer=Item(x=1.5, pair=(1, 2)), tags=("t",),
                                 nan=float("nan"), keys={1: "one"}, kind=typing.Literal)
    safe = to_json_safe(prediction)
    assert safe == {"answer": {"x": 1.5, "pair": [1, 2], "kind": "a"}, "tags": ["t"], "nan": None,
                    "keys": {"1": "one"}, "kind": "typing.Literal"}
    json.dumps(safe, allow_nan=False)
    assert to_json_safe([prediction, {3}]) == [safe, [3]]
    assert isinstance(to_json_safe(object()), str)
    assert to_json_safe({"inf": [float("inf")]}) == {"inf": [None]}


def test_coerce_inputs() -> None:
    spec = parse_signature("question, context: list[str] -> answer")
    assert coerce_inputs(spec, {"question": "q", "context": ["c"]}) == {"question": "q", "context": ["c"]}
    with pytest.raises(InputValidationError) as info:
        coerce_inputs(spec, {"question": "q"})
    assert "context" in str(info.value) and "issing" in str(info.value)
    assert info.value.error_type == "invalid_inputs"
    assert isinstance(info.value, SignatureError)
    with pytest.raises(InputValidationError, match="unknown input.*questoin"):
        coerce_inputs(spec, {"questoin": "q", "context": []})
    with pytest.raises(InputValidationError, match="Missing.*question.*unknown.*Context"):
        coerce_inputs(spec, {"Context": "q", "context": []})
    with pytest.raises(InputValidationError, match="map"):
        coerce_inputs(spec, ["q"])  # type: ignore[arg-type]
    # values are not converted: DSPy's adapter formats them
    value = {"nested": [1, 2]}
    assert coerce_inputs(spec, {"question": value, "context": "x"})["question"] is value


# ------------------------------------------------------------------ field names

@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        # Python keywords
        ("class -> b", "'class' in inputs is a Python keyword"),
        ("a -> None", "'None' in outputs is a Python keyword"),
        ({"inputs": ["lambda"], "outputs": ["b"]}, "'lambda' in inputs is a Python keyword"),
        # dunder and private names
        ("__init__ -> b", "'__init__' in inputs is a dunder name"),
        ("a -> __class__", "'__class__' in outputs is a dunder name"),
        ("_x -> b", "'_x' in inputs must not start with '_'"),
        # not identifiers
        ({"inputs": ["my field"], "outputs": ["b"]}, "'my field' in inputs is not a valid identifier"),
        ({"inputs": ["q"], "outputs": ["2nd"]}, "'2nd' in outputs is not a valid identifier"),
        ({"inputs": ["café"], "outputs": ["b"]}, "'café' in inputs is not a valid identifier"),
        ({"inputs": ["a.b"], "outputs": ["c"]}, "'a.b' in inputs is not a valid identifier"),
        ({"inputs": [{"name": "x\u0000"}], "outputs": ["c"]}, "is not a valid identifier"),
        # duplicates
        ("a, a -> b", "'a' is used more than once in inputs"),
        ("a -> b, b", "'b' is used more than once in outputs"),
        ("a -> a", "'a' is used in both inputs and outputs"),
        ({"inputs": {"q": "string"}, "outputs": [{"name": "q"}]}, "'q' is used in both inputs and outputs"),
    ],
)
def test_field_names_that_cannot_work_are_refused(signature: Any, fragment: str) -> None:
    with pytest.raises(SignatureError) as info:
        parse_signature(signature)
    assert fragment in str(info.value)
    assert info.value.error_type == "invalid_signature"


@pytest.mark.parametrize("name", sorted(RESERVED_FIELD_NAMES))
def test_reserved_names_are_refused_on_either_side(name: str) -> None:
    for signature, where in ((f"{name} -> b", "inputs"), (f"a -> {name}", "outputs")):
        with pytest.raises(SignatureError) as info:
            parse_signature(signature)
        message = str(info.value)
        assert f"{name!r} in {where} is reserved by DSPy" in message
        assert RESERVED_FIELD_NAMES[name] in message


@pytest.mark.parametrize("name", sorted(RESERVED_INPUT_NAMES))
def test_reserved_input_names_are_refused_as_inputs_only(name: str) -> None:
    with pytest.raises(SignatureError, match=f"'{name}' in inputs is reserved by DSPy"):
        parse_signature(f"{name} -> b")
    assert parse_signature(f"a -> {name}").output_names == (name,)


_ORDINARY_NAMES = ["keywords", "tokens", "key_points", "input", "type", "id", "match", "case",
                   "json", "copy", "schema", "dict", "model_fields", "callbacks", "history", "text"]


# `prediction` is taken away only when its value has the shape of OpenAI predicted outputs.
_HOSTILE_VALUES: dict[str, Any] = {"prediction": {"type": "content", "content": "VALUE_prediction"}}


def _dspy_breaks(name: str, role: str) -> str | None:
    """Builds and runs a program with field `name` straight through DSPy (no refusal of
    ours), Predict and ChainOfThought, with and without a demo, on the mock LM. Returns how
    it broke, or None when every input reached the prompt and every output came back."""
    import dspy

    from bridge.adapters.dspy.mock_lm import make_mock_lm

    inputs = ["question", name] if role == "input" else ["question"]
    outputs = ["answer", name] if role == "output" else ["answer"]
    try:
        fields = {**{n: (str, dspy.InputField()) for n in inputs}, **{n: (str, dspy.OutputField()) for n in outputs}}
        sig = dspy.make_signature(fields, "Do it.")
    except Exception as exc:
        return f"build: {exc}"
    lm = make_mock_lm()
    for make in (dspy.Predict, dspy.ChainOfThought):
        for with_demo in (False, True):
            try:
                program = make(sig)
                if with_demo:
                    demo = dspy.Example(**{n: f"DEMO_{n}" for n in (*inputs, *outputs)}).with_inputs(*inputs)
                    for predictor in program.predictors():
                        predictor.demos = [demo]
                values = {n: _HOSTILE_VALUES.get(n, f"VALUE_{n}") for n in inputs}
                with dspy.context(lm=lm, callbacks=[dspy.utils.callback.BaseCallback()]):
                    prediction = program(**values)
            except Exception as exc:
                return f"{make.__name__}: {exc}"
            prompt = str(lm.history[-1]["messages"])
            if any(f"VALUE_{n}" not in prompt for n in inputs) or (with_demo and f"DEMO_{name}" not in prompt):
                return f"{make.__name__}: a value never reached the LM"
            if any(not prediction.get(n) for n in outputs):
                return f"{make.__name__}: an output is missing"
    return None


@pytest.mark.parametrize(("name", "role"), [*((n, "input") for n in sorted(RESERVED_FIELD_NAMES)),
                                             *((n, "output") for n in sorted(RESERVED_FIELD_NAMES)
                                               if n not in ("self", "base")),
                                             *((n, "input") for n in sorted(RESERVED_INPUT_NAMES))])
def test_every_reserved_name_really_breaks_dspy(name: str, role: str) -> None:
    """The refusals are not guesses: each reserved name, fed to DSPy without our check,
    fails or loses data (when a DSPy upgrade makes one work, this says to drop it)."""
    assert _dspy_breaks(name, role) is not None


@pytest.mark.parametrize("name", ["self", "base"])
def test_self_and_base_break_demos_even_as_outputs(name: str) -> None:
    import dspy

    try:
        demo = dspy.Example(question="q", **{name: "DEMO"})
        kept = demo.get(name) == "DEMO" and demo.get("question") == "q"
    except TypeError:
        kept = False
    assert not kept


@pytest.mark.parametrize("name", _ORDINARY_NAMES)
def test_ordinary_names_work_in_dspy(name: str) -> None:
    spec = parse_signature(f"question, {name} -> answer, {name}_out")
    assert spec.input_names == ("question", name)
    assert _dspy_breaks(name, "input") is None
    assert _dspy_breaks(name, "output") is None


def test_field_names_end_to_end_through_a_worker(spawn_worker: Any) -> None:
    """`self` (issue 9.11) is refused at create_program; ordinary names, demos included,
    create, execute on the mock LM and come back under their own names."""
    from fixtures import ok

    worker = spawn_worker("--no-control")
    ok(worker.request("configure_lm", {"model": "mock"}))
    refused = worker.request("create_program", {"id": "bad", "signature": {
        "inputs": [{"name": "self", "type": "string"}], "outputs": [{"name": "answer"}]}})
    assert refused["success"] is False
    assert refused["error_type"] == "invalid_signature"
    assert "'self'" in refused["error"] and "reserved" in refused["error"]
    refused = worker.request("create_program", {"id": "bad2", "signature": "question -> answer, question"})
    assert refused["error_type"] == "invalid_signature" and "both inputs and outputs" in refused["error"]
    assert worker.request("get_program_info", {"program_id": "bad"})["success"] is False

    names = ["keywords", "tokens", "key_points", "input", "type", "id", "json", "copy"]
    signature = {"inputs": [{"name": n, "type": "string"} for n in names[:4]],
                 "outputs": [{"name": n, "type": "string"} for n in names[4:]]}
    demo = {n: f"demo {n}" for n in names}
    for program_type in ("predict", "chain_of_thought"):
        pid = f"p_{program_type}"
        created = ok(worker.request("create_program", {"id": pid, "signature": signature,
                                                       "program_type": program_type, "demos": [demo]}))
        assert list(created["field_mapping"]["inputs"]) == names[:4]
        for value in ("one", "two"):
            result = ok(worker.request("execute_program", {"program_id": pid,
                                                           "inputs": {n: f"{value} {n}" for n in names[:4]}}))
            outputs = result["outputs"]
            assert set(names[4:]) <= set(outputs)
            assert all(isinstance(outputs[n], str) and outputs[n] for n in names[4:]), outputs
