"""The field-type language of signatures: a small parser of our own over a fixed whitelist
(DSPex names such as `integer`, `list<string>`, `union<A|B>` and Python spellings such as
`list[str]`, `Literal['a', 'b']`), and its mapping onto Python types.

Type text comes from outside the worker: it is never evaluated, and its length and depth
are bounded.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

MAX_TYPE_CHARS = 1_000
MAX_TYPE_DEPTH = 16


class SignatureError(ValueError):
    """A signature (or one of its types) that the worker refuses to build."""

    error_type = "invalid_signature"


# --------------------------------------------------------------------------- types

Kind = Literal["string", "integer", "float", "boolean", "any", "none", "list", "dict", "union", "literal"]
# Python's Literal allows no floats, so neither do we.
LiteralValue = Union[str, int, bool, None]


@dataclass(frozen=True)
class TypeNode:
    """A parsed field type. `args` holds nested types; `values` the choices of a literal."""

    kind: Kind
    args: tuple["TypeNode", ...] = ()
    values: tuple[LiteralValue, ...] = ()


STRING = TypeNode("string")
NONE = TypeNode("none")

# Both spellings (DSPex `integer`, Python `int`) map onto one node kind; lookups are
# case-insensitive because DSPex clients send `String`, `Integer` and the like.
_SIMPLE_NAMES: dict[str, Kind] = {
    "string": "string", "str": "string", "text": "string",
    "integer": "integer", "int": "integer",
    "float": "float", "number": "float",
    "boolean": "boolean", "bool": "boolean",
    "any": "any",
    "none": "none", "nonetype": "none", "null": "none",
}
_GENERIC_NAMES = {"list", "dict", "union", "optional", "literal"}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<number>-?\d+)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<punct>[<>\[\],|])
    )""",
    re.X | re.S,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SignatureError(f"Invalid type {text!r}: unexpected {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _TypeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self, why: str) -> SignatureError:
        return SignatureError(f"Invalid type {self.text!r}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end")
        self.pos += 1
        return token

    def expect(self, punct: str) -> None:
        kind, value = self.take()
        if kind != "punct" or value != punct:
            raise self.fail(f"expected {punct!r}, found {value!r}")

    def at(self, *puncts: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "punct" and token[1] in puncts

    def parse(self) -> TypeNode:
        if not self.tokens:
            raise self.fail("empty type")
        node = self.union(0)
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def union(self, depth: int) -> TypeNode:
        # `A | B` is the loosest binding, so it is parsed at every type position.
        members = [self.primary(depth)]
        while self.at("|"):
            self.take()
            members.append(self.primary(depth))
        return _make_union(members) if len(members) > 1 else members[0]

    def primary(self, depth: int) -> TypeNode:
        if depth > MAX_TYPE_DEPTH:
            raise self.fail("nested too deeply")
        kind, value = self.take()
        if kind != "name":
            raise self.fail(f"expected a type name, found {value!r}")
        lowered = value.lower()
        if lowered.startswith("typing."):
            lowered = lowered[len("typing."):]
        if lowered in _SIMPLE_NAMES:
            if self.at("<", "["):
                raise self.fail(f"{value!r} takes no parameters")
            return TypeNode(_SIMPLE_NAMES[lowered])
        if lowered not in _GENERIC_NAMES:
            raise SignatureError(
                f"Unknown type {value!r} in {self.text!r}; allowed: string, integer, float, boolean, any, "
                "list<T>, dict<K,V>, union<A|B>, literal (or str, int, float, bool, list[T], dict[K, V], "
                "Optional[T], Union[A, B], A | B, Any, Literal['a', 'b'])"
            )
        if not self.at("<", "["):
            if lowered in ("list", "dict"):
                return TypeNode(lowered)  # type: ignore[arg-type]
            raise self.fail(f"{value!r} needs parameters")
        close = ">" if self.take()[1] == "<" else "]"
        if lowered == "literal":
            values = self.literal_values()
            self.expect(close)
            return TypeNode("literal", values=values)
        args = [self.union(depth + 1)]
        while self.at(","):
            self.take()
            args.append(self.union(depth + 1))
        self.expect(close)
        if lowered == "list":
            if len(args) != 1:
                raise self.fail("list takes one element type")
            return TypeNode("list", (args[0],))
        if lowered == "dict":
            if len(args) != 2:
                raise self.fail("dict takes a key type and a value type")
            return TypeNode("dict", (args[0], args[1]))
        if lowered == "optional":
            if len(args) != 1:
                raise self.fail("Optional takes one type")
            return _make_union([args[0], NONE])
        return _make_union(args)

    def literal_values(self) -> tuple[LiteralValue, ...]:
        values: list[LiteralValue] = []
        while True:
            kind, value = self.take()
            if kind == "string":
                values.append(_unquote(value))
            elif kind == "number":
                values.append(int(value))
            elif kind == "name" and value in ("True", "False", "None", "true", "false", "null"):
                values.append({"True": True, "true": True, "False": False, "false": False}.get(value))
            else:
                raise self.fail(f"literal values must be quoted strings, integers, booleans or None, found {value!r}")
            if not self.at(",", "|"):
                break
            self.take()
        # Literal['a', 'a'] is legal Python; duplicates only clutter the prompt.
        # keyed by type too, since True == 1 would otherwise swallow one of them.
        return tuple({(type(v), v): v for v in values}.values())


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body, flags=re.S)


def _make_union(members: list[TypeNode]) -> TypeNode:
    flat: list[TypeNode] = []
    for member in members:
        for item in member.args if member.kind == "union" else (member,):
            if item not in flat:
                flat.append(item)
    if any(m.kind == "any" for m in flat):
        return TypeNode("any")
    return flat[0] if len(flat) == 1 else TypeNode("union", tuple(flat))


def parse_type(text: str) -> TypeNode:
    """Parses a DSPex or Python type spelling into a `TypeNode`, from a whitelist only."""
    if not isinstance(text, str):
        raise SignatureError(f"A type must be a string, not {type(text).__name__}")
    if len(text) > MAX_TYPE_CHARS:
        raise SignatureError(f"Type is too long ({len(text)} characters, at most {MAX_TYPE_CHARS})")
    if not text.strip():
        return STRING
    return _TypeParser(text).parse()


def type_to_python(node: TypeNode) -> Any:
    """Turns a `TypeNode` into the type expression DSPy and pydantic understand."""
    kind = node.kind
    if kind == "string":
        return str
    if kind == "integer":
        return int
    if kind == "float":
        return float
    if kind == "boolean":
        return bool
    if kind == "any":
        return typing.Any
    if kind == "none":
        return type(None)
    if kind == "list":
        return list[type_to_python(node.args[0])] if node.args else list  # type: ignore[misc]
    if kind == "dict":
        if not node.args:
            return dict
        return dict[type_to_python(node.args[0]), type_to_python(node.args[1])]  # type: ignore[misc]
    if kind == "union":
        return Union[tuple(type_to_python(a) for a in node.args)]  # type: ignore[return-value]
    if kind == "literal":
        return Literal[node.values]  # type: ignore[valid-type]
    raise SignatureError(f"Unknown type kind {kind!r}")


def _literal_text(value: LiteralValue, *, python: bool) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "None" if python else "null"
    if isinstance(value, bool):
        return str(value) if python else str(value).lower()
    return repr(value)


def canonical_type_text(node: TypeNode) -> str:
    """The DSPex spelling of a type, e.g. `list<string>` or `union<integer|none>`."""
    kind = node.kind
    if kind == "list":
        return f"list<{canonical_type_text(node.args[0])}>" if node.args else "list"
    if kind == "dict":
        return f"dict<{canonical_type_text(node.args[0])},{canonical_type_text(node.args[1])}>" if node.args else "dict"
    if kind == "union":
        return "union<" + "|".join(canonical_type_text(a) for a in node.args) + ">"
    if kind == "literal":
        return "literal<" + ",".join(_literal_text(v, python=False) for v in node.values) + ">"
    return kind


def python_type_text(node: TypeNode) -> str:
    """The Python spelling of a type, as DSPy prints it in a string signature."""
    kind = node.kind
    simple = {"string": "str", "integer": "int", "float": "float", "boolean": "bool", "any": "Any", "none": "None"}
    if kind in simple:
        return simple[kind]
    if kind == "list":
        return f"list[{python_type_text(node.args[0])}]" if node.args else "list"
    if kind == "dict":
        return f"dict[{python_type_text(node.args[0])}, {python_type_text(node.args[1])}]" if node.args else "dict"
    if kind == "union":
        others = [a for a in node.args if a.kind != "none"]
        if len(others) == 1 and len(node.args) == 2:
            return f"Optional[{python_type_text(others[0])}]"
        return "Union[" + ", ".join(python_type_text(a) for a in node.args) + "]"
    if kind == "literal":
        return "Literal[" + ", ".join(_literal_text(v, python=True) for v in node.values) + "]"
    raise SignatureError(f"Unknown type kind {kind!r}")
