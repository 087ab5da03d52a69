"""Renders the command registry for `dspex commands` (table, --markdown, --json) and docs/protocol.md."""

from __future__ import annotations

import importlib
from typing import Any

from dspex_cli.env import Environment

from dspex_cli.exit_status import UserError


def _specs() -> list[Any]:
    from bridge import catalog

    return catalog().specs()


def load_plugins(names: list[str]) -> None:
    """Imports plugin modules; one that cannot be imported is the user's error, not a crash."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                raise UserError(f"cannot load plugin {name!r}: no module named {exc.name!r}") from None
            raise UserError(f"cannot load plugin {name!r}: {exc}") from None
        except Exception as exc:  # the plugin's own code failed while registering
            raise UserError(f"cannot load plugin {name!r}: {type(exc).__name__}: {exc}") from None


def commands_markdown() -> str:
    """A Markdown table of every registered command (docs are generated from this)."""

    def cell(text: str) -> str:
        # Types such as string|object would otherwise split the table cell.
        return text.replace("|", "\\|")

    lines = ["| command | scheduling | arguments | what it does |", "|---|---|---|---|"]
    for spec in _specs():
        args = ", ".join(f"`{a.name}`{'*' if a.required else ''}: {a.type}" for a in spec.args) or "-"
        name = f"`{spec.name}`" + (f" (alias {', '.join(spec.aliases)})" if spec.aliases else "")
        lines.append(f"| {cell(name)} | {spec.scheduling} | {cell(args)} | {cell(spec.summary)} |")
    return "\n".join(lines) + "\n"


def commands_data() -> list[dict[str, Any]]:
    """Every registered command as plain data (what `dspex commands --json` prints)."""
    return [{"name": spec.name, "aliases": list(spec.aliases), "scheduling": spec.scheduling,
             "summary": spec.summary, "plugin": spec.plugin, "tags": sorted(spec.tags),
             "args": [{"name": a.name, "type": a.type, "required": a.required, "help": a.help,
                       **({"choices": list(a.choices)} if a.choices else {})} for a in spec.args]}
            for spec in _specs()]


def render_commands(markdown: bool = False, as_json: bool = False, plugins: list[str] | None = None,
                    env: Environment | None = None) -> None:
    env = env or Environment.from_process()
    load_plugins(plugins or [])
    if as_json:
        import orjson

        env.write(orjson.dumps(commands_data(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if markdown:
        env.write(commands_markdown())
        return
    from rich.table import Table

    table = Table(title="dspex commands")
    table.add_column("command", style="bold cyan")
    table.add_column("scheduling")
    table.add_column("arguments")
    table.add_column("summary")
    for spec in _specs():
        args = ", ".join(f"{a.name}{'*' if a.required else ''}:{a.type}" for a in spec.args)
        table.add_row(spec.name, spec.scheduling, args, spec.summary)
    env.console().print(table)
    _print_tools(env)


def _print_tools(env: Environment) -> None:
    """The ReAct tools plugins registered (@tool), when there are any."""
    from bridge.adapters.dspy.tools import TOOLS

    if not TOOLS.names():
        return
    from rich.table import Table

    table = Table(title="tools (for react programs' `tools`)")
    table.add_column("tool", style="bold cyan")
    table.add_column("parameters")
    table.add_column("description")
    for spec in TOOLS.specs():
        required = set(spec.parameters.get("required", []))
        params = ", ".join(f"{name}{'*' if name in required else ''}:{schema.get('type', 'any')}"
                           for name, schema in spec.parameters.get("properties", {}).items())
        table.add_row(spec.name, params, spec.description)
    env.console().print(table)
