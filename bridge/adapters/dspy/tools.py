"""Tools for ReAct programs: Python functions that plugins register with `@tool`.

One module-level registry (TOOLS), like bridge.registry.REGISTRY for commands: `list_tools`,
`create_program`'s `tools` argument and `dspex commands` all read it. The JSON schema is
worked out here from the signature, type hints and docstring without importing DSPy or
pydantic, so a plugin full of tools costs `dspex serve` nothing at start-up; DSPy wraps the
function in its own `dspy.Tool` only when a ReAct program is built.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Names longer than this get no "did you mean" (difflib's cost grows with the name).
MAX_SUGGESTED_NAME = 64
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Google-style "Args:" entries: "    name (type): text" or "    name: text".
_ARG_LINE = re.compile(r"^\s+(?P<name>\w+)(?:\s*\([^)]*\))?\s*:\s*(?P<text>.*)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?)\s*:\s*$")

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                            dict: "object", list: "array", tuple: "array", set: "array"}


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool: the function and what an agent (and `list_tools`) is told about it."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    func: Callable[..., Any]
    plugin: str | None = None
    arg_descriptions: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "plugin": self.plugin}


class ToolRegistry:
    """Name → ToolSpec. Grows only by plugin code at import time, never by a request."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def add(self, spec: ToolSpec) -> ToolSpec:
        existing = self._tools.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ValueError(f"tool {spec.name!r} is already registered")
        self._tools[spec.name] = spec
        return spec

    def find(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [self._tools[name] for name in self.names()]

    def suggest(self, name: str) -> str | None:
        if not isinstance(name, str) or len(name) > MAX_SUGGESTED_NAME:
            return None
        import difflib  # only for a mistyped name

        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        return close[0] if close else None


TOOLS = ToolRegistry()


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before the first section) and each argument's text from "Args:"."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary: list[str] = []
    described: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        heading = _SECTION.match(line)
        if heading:
            section, current = heading.group(1).lower(), None
            continue
        if section is None:
            summary.append(line)
        elif section in ("args", "arguments", "parameters"):
            entry = _ARG_LINE.match(line)
            if entry and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = entry["name"]
                described[current] = entry["text"].strip()
            elif current is not None and line.strip():
                described[current] = f"{described[current]} {line.strip()}".strip()
    return " ".join(part.strip() for part in summary if part.strip()), described


def json_schema_of(annotation: Any) -> dict[str, Any]:
    """A JSON schema for a type hint; unknown types accept anything ({})."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if annotation is type(None):
        return {"type": "null"}
    origin = typing.get_origin(annotation)
    params = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(params)}
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [json_schema_of(p) for p in params]}
    if origin in (list, tuple, set, frozenset):
        schema: dict[str, Any] = {"type": "array"}
        if params and params[0] is not Ellipsis:
            schema["items"] = json_schema_of(params[0])
        return schema
    if origin is dict:
        schema = {"type": "object"}
        if len(params) == 2:
            schema["additionalProperties"] = json_schema_of(params[1])
        return schema
    return {}


def _jsonable_default(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else repr(value)


def describe_function(func: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, str], str]:
    """The parameters schema, each argument's description and the summary of a function."""
    summary, arg_text = _split_docstring(func.__doc__ or "")
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # a hint naming something that is not importable: no types, still a tool
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = json_schema_of(hints.get(name, param.annotation))
        if name in arg_text:
            schema["description"] = arg_text[name]
        if param.default is param.empty:
            required.append(name)
        else:
            schema["default"] = _jsonable_default(param.default)
        properties[name] = schema
    parameters = {"type": "object", "properties": properties, "required": required}
    return parameters, arg_text, summary


def tool(func: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         registry: ToolRegistry | None = None) -> Any:
    """Registers a function as a tool ReAct programs may call (`@tool` or `@tool(name=...)`).

    The name defaults to the function's, the description to its docstring's text before
    "Args:", the parameters to a JSON schema of its signature; the function is returned as is.
    """
    def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or target.__name__
        if not TOOL_NAME.match(tool_name) or tool_name == "finish":
            raise ValueError(f"tool name {tool_name!r} must be an identifier (and not 'finish', ReAct's own)")
        parameters, arg_text, summary = describe_function(target)
        module = getattr(target, "__module__", "") or ""
        spec = ToolSpec(name=tool_name, description=description or summary or tool_name, parameters=parameters,
                        func=target, plugin=None if module.startswith("bridge.") else module,
                        arg_descriptions=arg_text)
        (registry or TOOLS).add(spec)
        return target

    return decorate(func) if func is not None else decorate


def resolve_tools(names: Any, registry: ToolRegistry | None = None) -> list[ToolSpec | ClientTool]:
    """The tools a create_program declares: registered tool names and client tool
    declarations (`{"name", "description", "parameters", "handler": "client"}`), in order,
    or a clear error for an unknown name or a bad declaration."""
    from ...errors import InvalidArguments

    registry = registry or TOOLS
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, (str, dict)) for n in names):
        raise InvalidArguments("'tools' must be a list of tool names (strings, see list_tools) or client tool "
                               "declarations ({\"name\", \"description\", \"parameters\", \"handler\": \"client\"})")
    if len(names) > MAX_TOOLS:
        raise InvalidArguments(f"a program takes at most {MAX_TOOLS} tools, got {len(names)}")
    found: dict[str, ToolSpec | ClientTool] = {}
    for entry in names:
        if isinstance(entry, dict):
            client = parse_client_tool(entry)
            if client.name in found:
                raise InvalidArguments(f"tool {client.name!r} is declared twice")
            found[client.name] = client
            continue
        tool_name = entry
        if tool_name in found:
            continue
        spec = registry.find(tool_name)
        if spec is None:
            hint = registry.suggest(tool_name)
            known = ", ".join(registry.names()) or "none (load a plugin that registers some with @tool)"
            shown = tool_name if len(tool_name) <= 80 else f"{tool_name[:80]}…"
            raise InvalidArguments(f"Unknown tool {shown!r}" + (f"; did you mean {hint!r}?" if hint else "")
                                   + f" Registered tools: {known}", details={"suggestion": hint} if hint else None)
        found[tool_name] = spec
    return list(found.values())


def tool_declarations(tools: list[ToolSpec | ClientTool]) -> list[str | dict[str, Any]]:
    """What program_data keeps of a program's tools: registered names, client declarations
    (so another worker rebuilds the same program)."""
    return [tool.declaration() if isinstance(tool, ClientTool) else tool.name for tool in tools]


# -- tools that live in the client ----------------------------------------------------------

# Bounds on what one create_program may declare (each declaration is kept in program_data).
MAX_TOOLS = 64
MAX_DESCRIPTION = 4000
MAX_SCHEMA_BYTES = 16_384


@dataclass(frozen=True)
class ClientTool:
    """A tool the client runs: calling it sends a `callback` event of the request that runs
    the program and waits for the client's answer."""

    name: str
    description: str
    parameters: dict[str, Any]

    def declaration(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "handler": "client"}


def parse_client_tool(entry: dict[str, Any]) -> ClientTool:
    """A client tool declaration, checked: an identifier name, a JSON schema of an object
    for `parameters` (required: the agent must be told what to send)."""
    import json

    from ...errors import InvalidArguments

    name = entry.get("name")
    shown = str(name)[:80]
    if entry.get("handler") != "client":
        raise InvalidArguments(f"tool {shown!r}: a tool given as an object must say \"handler\": \"client\" "
                               "(registered tools are named by a string)")
    if not isinstance(name, str) or not TOOL_NAME.match(name) or name == "finish":
        raise InvalidArguments(f"client tool name {shown!r} must be an identifier of at most 64 characters "
                               "(and not 'finish', ReAct's own)")
    unknown = sorted(set(entry) - {"name", "description", "parameters", "handler"})
    if unknown:
        raise InvalidArguments(f"client tool {name!r} has unknown keys: {', '.join(k[:40] for k in unknown)}")
    description = entry.get("description", name)
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidArguments(f"client tool {name!r}: 'description' must be a string of at most "
                               f"{MAX_DESCRIPTION} characters")
    parameters = entry.get("parameters")
    if parameters is None:
        raise InvalidArguments(f"client tool {name!r} needs 'parameters': a JSON schema of its arguments "
                               "object, e.g. {\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}")
    _check_parameters(name, parameters)
    if len(json.dumps(parameters)) > MAX_SCHEMA_BYTES:
        raise InvalidArguments(f"client tool {name!r}: 'parameters' is larger than {MAX_SCHEMA_BYTES} bytes")
    return ClientTool(name, description or name, parameters)


def _check_parameters(name: str, parameters: Any) -> None:
    from ...errors import InvalidArguments

    def bad(why: str) -> InvalidArguments:
        return InvalidArguments(f"client tool {name!r}: 'parameters' {why}")

    if not isinstance(parameters, dict):
        raise bad("must be a JSON schema object")
    if parameters.get("type", "object") != "object":
        raise bad("must describe an object (\"type\": \"object\"): an agent calls a tool with named arguments")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(k, str) and TOOL_NAME.match(k) and isinstance(v, dict)
                                                   for k, v in properties.items()):
        raise bad("'properties' must map argument names (identifiers) to JSON schemas (objects)")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) and r in properties for r in required):
        raise bad("'required' must list names of its properties")
    from jsonschema import Draft202012Validator  # dspy's own dependency; only for a client tool
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise bad(f"is not a valid JSON schema: {str(exc.message)[:300]}") from None


def calling_request() -> Any:
    """The RequestContext of the request whose DSPy call is running here, found through
    the LM-call observer every runner of programs puts into `dspy.context` (execute_program,
    evaluate, batches, compile jobs), so a tool or metric deep inside DSPy reaches the request
    without a global. None outside such a call."""
    from ...twoway import RequestContext
    from .lm_calls import current_observer

    observer = current_observer()
    ctx = getattr(observer, "ctx", None)
    return ctx if isinstance(ctx, RequestContext) else None


def _noting_tool_calls(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`func`, telling the request's observer when it runs (inspect shows the phase "tool")."""
    from .lm_calls import current_observer

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            observer = current_observer()
            if observer is not None:
                observer.tool_started(name)
            try:
                return await func(*args, **kwargs)
            finally:
                if observer is not None:
                    observer.tool_ended()
        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        observer = current_observer()
        if observer is not None:
            observer.tool_started(name)
        try:
            return func(*args, **kwargs)
        finally:
            if observer is not None:
                observer.tool_ended()
    return run


def _client_tool_function(tool: ClientTool) -> Callable[..., Any]:
    def call_client(**kwargs: Any) -> Any:
        from ...errors import CallbackFailed

        ctx = calling_request()
        if ctx is None:
            raise CallbackFailed(f"tool {tool.name} lives in the client, but no request is running it")
        ctx.enable_callbacks()  # running a program with client tools is asking for their callbacks
        # An error answer or a timeout raises CallbackFailed: ReAct turns it into the observation.
        return ctx.callback("tool", tool.name, kwargs)

    call_client.__name__ = tool.name
    return call_client


def dspy_tools(specs: list[ToolSpec | ClientTool]) -> list[Any]:
    """The tools as DSPy's own `dspy.Tool` objects (DSPy validates and converts the arguments;
    a client tool's against the schema the client gave)."""
    from .loader import load_dspy

    dspy = load_dspy()
    tools = []
    for spec in specs:
        if isinstance(spec, ClientTool):
            properties = spec.parameters.get("properties", {})
            tools.append(dspy.Tool(_noting_tool_calls(_client_tool_function(spec), spec.name), name=spec.name, desc=spec.description,
                                   args=dict(properties), arg_types={name: Any for name in properties}))
        else:
            tools.append(dspy.Tool(_noting_tool_calls(spec.func, spec.name), name=spec.name, desc=spec.description,
                                   arg_desc=spec.arg_descriptions or None))
    return tools
