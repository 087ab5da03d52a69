"""Signatures as data: parsing, validation, and the one step that builds a DSPy class.

Clients send signatures either as the DSPex map
(`{"name", "description", "inputs": [{"name", "type", "description"}], "outputs": [...]}`)
or as a DSPy string (`"question, context: list[str] -> answer: int"`). Both come from
outside the worker, so type names are resolved against a fixed whitelist by a small
parser of our own: `dspy.Signature("...")` would look unknown names up in the caller's
frames and may import modules.

Only `build_dspy_signature` touches DSPy, and it gets it from the adapter's loader. The
type language itself lives in types.py.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .types import (MAX_TYPE_CHARS, MAX_TYPE_DEPTH, SignatureError, TypeNode, canonical_type_text, parse_type,
                    python_type_text, type_to_python)

__all__ = [
    "FieldSpec",
    "InputValidationError",
    "MAX_FIELDS",
    "MAX_SIGNATURE_CHARS",
    "MAX_TYPE_CHARS",
    "MAX_TYPE_DEPTH",
    "RESERVED_FIELD_NAMES",
    "RESERVED_INPUT_NAMES",
    "SignatureError",
    "SignatureSpec",
    "TypeNode",
    "build_dspy_signature",
    "canonical_type_text",
    "coerce_inputs",
    "field_mapping",
    "parse_signature",
    "parse_type",
    "python_type_text",
    "signature_def",
    "type_to_python",
]

MAX_FIELDS = 100
MAX_SIGNATURE_CHARS = 10_000
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 10_000
# Deep nesting is never useful in a signature and would only exercise recursion limits.
DEFAULT_CLASS_NAME = "DynamicSignature"

# Field names that DSPy 3.4.1 cannot carry, each with the reason a client is told. Every
# entry was checked end to end (Predict and ChainOfThought, with and without demos, chat
# and JSON adapters, the mock LM); names that only shadow a pydantic attribute with a
# warning (`json`, `copy`, `schema`, `dict`, `model_fields`, ...) work and are allowed.
_SIGNATURE_ATTRIBUTE = "an attribute of dspy.Signature; building the signature fails"
_PYDANTIC_MEMBER = "a pydantic BaseModel method that dspy.Signature cannot shadow; building the signature fails"
_CALL_KEYWORD = "a keyword argument dspy.Predict takes for itself, so the input would never reach the LM"
RESERVED_FIELD_NAMES: Mapping[str, str] = {
    "self": "the first parameter of dspy.Predict and dspy.Example; every call and every demo fails",
    "base": "the first parameter of dspy.Example; demos lose the field",
    "signature": _SIGNATURE_ATTRIBUTE,
    "instructions": _SIGNATURE_ATTRIBUTE,
    "fields": _SIGNATURE_ATTRIBUTE,
    "input_fields": _SIGNATURE_ATTRIBUTE,
    "output_fields": _SIGNATURE_ATTRIBUTE,
    "model_config": "pydantic's model settings; building the signature fails",
    "model_dump": _PYDANTIC_MEMBER,
    "model_dump_json": _PYDANTIC_MEMBER,
    "model_validate": _PYDANTIC_MEMBER,
    "model_validate_json": _PYDANTIC_MEMBER,
    "model_validate_strings": _PYDANTIC_MEMBER,
}
# Names that break only as inputs: they collide with parameters of the calls that carry
# the inputs as keyword arguments (Module.__call__, DSPy's callback wrapper, Predict).
RESERVED_INPUT_NAMES: Mapping[str, str] = {
    "instance": "the first parameter of DSPy's callback wrapper; every call fails",
    "demos": _CALL_KEYWORD,
    "config": _CALL_KEYWORD,
    "lm": _CALL_KEYWORD,
    "prediction": _CALL_KEYWORD + " when its value looks like OpenAI predicted outputs",
    "new_signature": "refused by dspy.Predict; every call fails",
    "completions": "a parameter of dspy.Predict's post-processing; every call fails",
    "reasoning": "the output chain_of_thought adds; the input would never reach the LM",
}


class InputValidationError(SignatureError):
    """Inputs that do not match a program's signature.

    A subclass so a handler catching `SignatureError` still catches it, with its own
    `error_type` so clients can tell a bad call from a bad program.
    """

    error_type = "invalid_inputs"


# ---------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type_text: str
    description: str = ""

    @property
    def type_node(self) -> TypeNode:
        return parse_type(self.type_text)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type_text, "description": self.description}


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    description: str
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": [f.to_dict() for f in self.inputs],
            "outputs": [f.to_dict() for f in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SignatureSpec":
        """Rebuilds (and re-validates) a spec from `to_dict()` output or a DSPex map."""
        return _parse_map(data)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.outputs)


def parse_signature(value: Mapping[str, Any] | str) -> SignatureSpec:
    """Parses and validates a signature given as a DSPex map or a DSPy string."""
    if isinstance(value, str):
        return _parse_string(value)
    if isinstance(value, Mapping):
        return _parse_map(value)
    raise SignatureError(f"A signature must be a map or a string like 'question -> answer', not {type(value).__name__}")


def _split_top_level(text: str, sep: str) -> list[str]:
    """Splits at `sep` outside brackets and quotes, so `dict[str, int]` stays whole."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[<(":
            depth += 1
        elif ch in "]>)" and not (ch == ">" and text[i - 1:i] == "-"):
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _parse_string(text: str) -> SignatureSpec:
    if len(text) > MAX_SIGNATURE_CHARS:
        raise SignatureError(f"Signature is too long ({len(text)} characters, at most {MAX_SIGNATURE_CHARS})")
    sides = _split_top_level(text, "->")
    if len(sides) != 2:
        raise SignatureError(f"A string signature needs exactly one '->', as in 'question -> answer': {text[:200]!r}")

    def fields(side: str, where: str) -> list[FieldSpec]:
        if not side.strip():
            return []
        result = []
        for item in _split_top_level(side, ","):
            name, colon, type_text = item.partition(":")
            name = name.strip()
            if not name:
                raise SignatureError(f"Empty field name in the {where} of {text[:200]!r}")
            if colon and not type_text.strip():
                raise SignatureError(f"Field {name!r} has ':' but no type")
            result.append(_make_field(name, type_text.strip() if colon else None, "", where))
        return result

    return _validated("", "", fields(sides[0], "inputs"), fields(sides[1], "outputs"))


def _parse_map(data: Mapping[str, Any]) -> SignatureSpec:
    name = data.get("name") or ""
    description = data.get("description")
    if description is None:
        description = data.get("instructions") or ""
    if not isinstance(name, str):
        raise SignatureError("Signature 'name' must be a string")
    if not isinstance(description, str):
        raise SignatureError("Signature 'description' must be a string")
    if len(name) > MAX_NAME_CHARS or len(description) > MAX_SIGNATURE_CHARS:
        raise SignatureError("Signature name or description is too long")
    inputs = _parse_field_list(data.get("inputs"), "inputs")
    outputs = _parse_field_list(data.get("outputs"), "outputs")
    return _validated(name, description, inputs, outputs)


def _parse_field_list(raw: Any, where: str) -> list[FieldSpec]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raise SignatureError(f"Signature '{where}' must be a list of fields, not a string")
    if isinstance(raw, Mapping):
        # `{"question": "string"}` or `{"question": {"type": ..., "description": ...}}`
        items: list[Any] = [
            {"name": key, **(val if isinstance(val, Mapping) else {"type": val})} for key, val in raw.items()
        ]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise SignatureError(f"Signature '{where}' must be a list of fields, not {type(raw).__name__}")
    if len(items) > MAX_FIELDS:
        raise SignatureError(f"Signature has too many {where} ({len(items)}, at most {MAX_FIELDS})")
    result = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            name, colon, type_text = item.partition(":")
            result.append(_make_field(name.strip(), type_text.strip() if colon else None, "", where))
        elif isinstance(item, Mapping):
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                raise SignatureError(f"Field {index + 1} of {where} needs a 'name' string")
            type_text = item.get("type")
            if type_text is not None and not isinstance(type_text, str):
                raise SignatureError(f"Field {name!r}: 'type' must be a string")
            desc = item.get("description")
            if desc is None:
                desc = item.get("desc") or ""
            if not isinstance(desc, str):
                raise SignatureError(f"Field {name!r}: 'description' must be a string")
            result.append(_make_field(name.strip(), type_text, desc, where))
        else:
            raise SignatureError(f"Field {index + 1} of {where} must be a map or a name, not {type(item).__name__}")
    return result


def _make_field(name: str, type_text: str | None, description: str, where: str) -> FieldSpec:
    _check_field_name(name, where)
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise SignatureError(f"Field {name!r}: description is too long")
    try:
        node = parse_type(type_text or "")
    except SignatureError as exc:
        raise SignatureError(f"Field {name!r}: {exc}") from None
    return FieldSpec(name=name, type_text=canonical_type_text(node), description=description)


def _check_field_name(name: str, where: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise SignatureError(f"Field name in {where} is too long ({len(name)} characters, at most {MAX_NAME_CHARS})")
    if not name.isidentifier() or not name.isascii():
        raise SignatureError(f"Field name {name!r} in {where} is not a valid identifier "
                             "(ASCII letters, digits and '_', not starting with a digit)")
    # Soft keywords (`match`, `case`, `type`) are ordinary names everywhere DSPy uses them.
    if keyword.iskeyword(name):
        raise SignatureError(f"Field name {name!r} in {where} is a Python keyword; rename the field")
    if name.startswith("__") and name.endswith("__"):
        raise SignatureError(f"Field name {name!r} in {where} is a dunder name (reserved by Python); rename the field")
    if name.startswith("_"):
        raise SignatureError(f"Field name {name!r} in {where} must not start with '_': "
                             "pydantic treats such names as private attributes, not fields")
    why = RESERVED_FIELD_NAMES.get(name) or (RESERVED_INPUT_NAMES.get(name) if where == "inputs" else None)
    if why:
        raise SignatureError(f"Field name {name!r} in {where} is reserved by DSPy ({why}); rename the field")


def _validated(name: str, description: str, inputs: list[FieldSpec], outputs: list[FieldSpec]) -> SignatureSpec:
    if len(inputs) + len(outputs) > MAX_FIELDS:
        raise SignatureError(f"Signature has too many fields ({len(inputs) + len(outputs)}, at most {MAX_FIELDS})")
    if not inputs:
        raise SignatureError("Signature needs at least one input field")
    if not outputs:
        raise SignatureError("Signature needs at least one output field")
    # DSPy keys fields by name alone, so a second field of one name would replace the first.
    side_of: dict[str, str] = {}
    for where, specs in (("inputs", inputs), ("outputs", outputs)):
        for spec in specs:
            if spec.name in side_of:
                places = f"more than once in {where}" if side_of[spec.name] == where else "in both inputs and outputs"
                raise SignatureError(f"Field name {spec.name!r} is used {places}")
            side_of[spec.name] = where
    return SignatureSpec(name=name, description=description, inputs=tuple(inputs), outputs=tuple(outputs))


def _class_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name.strip(), flags=re.ASCII).strip("_")[:MAX_NAME_CHARS]
    if not cleaned:
        return DEFAULT_CLASS_NAME
    if cleaned[0].isdigit():
        cleaned = "S_" + cleaned
    if keyword.iskeyword(cleaned):
        cleaned += "_"
    return cleaned


def signature_class_name(spec: SignatureSpec) -> str:
    """The class name `build_dspy_signature` gives the spec (an identifier)."""
    return _class_name(spec.name)


def build_dspy_signature(spec: SignatureSpec) -> type:
    """Builds the DSPy Signature class for a validated spec, without string parsing."""
    from bridge.adapters.dspy.loader import load_dspy

    dspy = load_dspy()
    fields: dict[str, tuple[Any, Any]] = {}
    for f in spec.inputs:
        fields[f.name] = (type_to_python(f.type_node), dspy.InputField(desc=f.description))
    for f in spec.outputs:
        fields[f.name] = (type_to_python(f.type_node), dspy.OutputField(desc=f.description))
    try:
        return dspy.make_signature(fields, spec.description or None, signature_name=_class_name(spec.name))
    except (TypeError, ValueError, AttributeError) as exc:
        # A DSPy newer than the reserved tables may refuse a name of its own.
        raise SignatureError(f"DSPy rejected the signature: {exc}") from exc


def signature_def(spec: SignatureSpec) -> str:
    """The spec as a DSPy string signature, e.g. `question: str -> answer: int`."""

    def side(fields: tuple[FieldSpec, ...]) -> str:
        return ", ".join(f"{f.name}: {python_type_text(f.type_node)}" for f in fields)

    return f"{side(spec.inputs)} -> {side(spec.outputs)}"


def field_mapping(spec: SignatureSpec) -> dict[str, dict[str, str]]:
    """Field names to canonical DSPex types, per side."""
    return {
        "inputs": {f.name: f.type_text for f in spec.inputs},
        "outputs": {f.name: f.type_text for f in spec.outputs},
    }


def coerce_inputs(spec: SignatureSpec, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checks call inputs against the spec: all inputs present, none unknown. Values stay as given."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise InputValidationError(f"'inputs' must be a map of field name to value, not {type(inputs).__name__}")
    expected = spec.input_names
    missing = [name for name in expected if name not in inputs]
    unknown = sorted(str(name) for name in inputs if name not in expected)
    problems = []
    if missing:
        problems.append("missing required input(s): " + ", ".join(missing))
    if unknown:
        problems.append("unknown input(s): " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
    if problems:
        message = "; ".join(problems)
        raise InputValidationError(message[0].upper() + message[1:] + f" (expected: {', '.join(expected)})")
    return {name: inputs[name] for name in expected}
