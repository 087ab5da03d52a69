"""The one command registry: registration, lookup, aliases, validation, suggestions."""

from __future__ import annotations

from typing import Any

import pytest

import bridge
from bridge.errors import InvalidArguments, UnknownCommand
from bridge.registry import REGISTRY, Arg, CommandSpec, Registry, command

CONTRACT_COMMANDS = {
    "ping", "configure_lm", "create_program", "execute_program", "list_programs", "get_program_info",
    "delete_program", "get_stats", "cleanup", "reset_state", "cleanup_session", "shutdown",
    "get_session_data", "update_session_data", "create_gemini_program", "execute_gemini_program",
}


def _handler(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Echoes its args."""
    return dict(args)


def test_builtins_register_through_the_same_registry() -> None:
    catalog = bridge.catalog()
    assert CONTRACT_COMMANDS <= set(catalog.names())
    for name in CONTRACT_COMMANDS:
        spec = catalog.get(name)
        assert spec.name == name and spec.plugin is None and spec.summary


def test_scheduling_of_builtins() -> None:
    REGISTRY = bridge.catalog()
    assert REGISTRY.get("ping").scheduling == "inline"
    assert REGISTRY.get("get_stats").scheduling == "inline"
    assert REGISTRY.get("execute_program").scheduling == "read"
    assert REGISTRY.get("create_program").scheduling == "write"
    assert REGISTRY.get("configure_lm").scheduling == "write"
    assert REGISTRY.get("cleanup").scheduling == "global"


def test_decorator_registers_on_a_private_registry_with_docstring_summary() -> None:
    registry = Registry()
    returned = command("echo", registry=registry, args=(Arg("n", "integer", required=True),),
                       scheduling="read", aliases=("say",))(_handler)
    assert returned is _handler  # the function stays usable as is
    spec = registry.get("echo")
    assert spec.summary == "Echoes its args."
    assert spec.scheduling == "read"
    assert registry.get("say") is spec
    assert "say" in registry and "echo" in registry and "nope" not in registry
    assert registry.names() == ["echo"]
    assert registry.names(include_aliases=True) == ["echo", "say"]
    assert "echo" not in REGISTRY  # a private registry leaves the global one alone


def test_bridge_package_exports_the_decorator() -> None:
    assert bridge.command is command
    assert bridge.Arg is Arg
    assert bridge.REGISTRY is REGISTRY


def test_plugin_module_is_recorded() -> None:
    registry = Registry()

    def handler(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {}

    handler.__module__ = "my_company.plugin"
    command("p", registry=registry)(handler)
    assert registry.get("p").plugin == "my_company.plugin"


def test_duplicate_name_is_refused() -> None:
    registry = Registry()
    command("dup", registry=registry)(_handler)

    def other(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="already registered"):
        command("dup", registry=registry)(other)
    with pytest.raises(ValueError, match="already registered"):
        command("other", registry=registry, aliases=("dup",))(other)


def test_bad_scheduling_and_arg_type_are_refused() -> None:
    with pytest.raises(ValueError, match="scheduling"):
        command("x", registry=Registry(), scheduling="sometimes")(_handler)
    with pytest.raises(ValueError, match="unknown type"):
        Arg("x", "float32")


def test_unknown_command_suggests_the_closest_name() -> None:
    registry = Registry()
    command("execute_program", registry=registry)(_handler)
    with pytest.raises(UnknownCommand) as info:
        registry.get("execute_progam")
    assert info.value.message == "Unknown command: execute_progam"
    assert info.value.details == {"suggestion": "execute_program"}
    with pytest.raises(UnknownCommand) as info:
        registry.get("zzzz")
    assert info.value.details is None


@pytest.mark.parametrize("arg, good, bad", [
    (Arg("a", "string"), ["x", ""], [1, True, [], {}]),
    (Arg("a", "integer"), [0, -5, 2 ** 40], [1.5, "1", True, False]),
    (Arg("a", "number"), [1, 1.5], ["1", True, [1]]),
    (Arg("a", "boolean"), [True, False], [0, 1, "true"]),
    (Arg("a", "object"), [{}, {"k": 1}], [[], "x"]),
    (Arg("a", "array"), [[], [1]], [{}, "x"]),
    (Arg("a", "string|object"), ["s", {}], [[], 3]),
    (Arg("a", "any"), [1, "x", [], {}, False], []),
])
def test_arg_type_checks(arg: Arg, good: list, bad: list) -> None:
    assert arg.accepts(None)  # optional: absent is fine
    for value in good:
        assert arg.accepts(value), value
    for value in bad:
        assert not arg.accepts(value), value


def test_validate_reports_every_problem_at_once() -> None:
    spec = CommandSpec("c", _handler, "c", args=(Arg("n", "integer", required=True),
                                                   Arg("s", "string"), Arg("o", "object")))
    spec.validate({"n": 1, "s": "x", "extra": object()})  # undeclared args pass
    with pytest.raises(InvalidArguments) as info:
        spec.validate({"s": 3, "o": []})
    message = info.value.message
    assert info.value.error_type == "invalid_arguments"
    assert message.startswith("c: ")
    assert "'n' is required (integer)" in message
    assert "'s' must be string, got integer" in message
    assert "'o' must be object, got array" in message
    with pytest.raises(InvalidArguments, match="'n' must be integer, got boolean"):
        spec.validate({"n": True})


def test_specs_are_sorted_and_arg_names_listed() -> None:
    registry = Registry()
    command("b", registry=registry, args=(Arg("x"), Arg("y")))(_handler)
    command("a", registry=registry)(_handler)
    assert [s.name for s in registry.specs()] == ["a", "b"]
    assert registry.get("b").arg_names == ["x", "y"]
