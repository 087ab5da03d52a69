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
    to_json_safe,
    type_to_python,
)

ROOT = Path(__file__).resolve().parents[1]


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
        ("json -> b", "reserved"),
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
