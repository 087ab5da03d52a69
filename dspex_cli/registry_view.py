"""Renders the command registry for `dspex commands` and docs/protocol.md."""

from __future__ import annotations

import importlib


def commands_markdown() -> str:
    """A Markdown table of every registered command (docs are generated from this)."""
    from bridge import REGISTRY
    import bridge.commands  # noqa: F401  (registers the built-ins)

    def cell(text: str) -> str:
        # Types such as string|object would otherwise split the table cell.
        return text.replace("|", "\\|")

    lines = ["| command | scheduling | arguments | what it does |", "|---|---|---|---|"]
    for spec in REGISTRY.specs():
        args = ", ".join(f"`{a.name}`{'*' if a.required else ''}: {a.type}" for a in spec.args) or "-"
        name = f"`{spec.name}`" + (f" (alias {', '.join(spec.aliases)})" if spec.aliases else "")
        lines.append(f"| {cell(name)} | {spec.scheduling} | {cell(args)} | {cell(spec.summary)} |")
    return "\n".join(lines) + "\n"


def render_commands(markdown: bool = False, plugins: list[str] | None = None) -> None:
    for name in plugins or []:
        importlib.import_module(name)
    if markdown:
        print(commands_markdown(), end="")
        return
    from rich.console import Console
    from rich.table import Table

    from bridge import REGISTRY
    import bridge.commands  # noqa: F401

    table = Table(title="dspex commands")
    table.add_column("command", style="bold cyan")
    table.add_column("scheduling")
    table.add_column("arguments")
    table.add_column("summary")
    for spec in REGISTRY.specs():
        args = ", ".join(f"{a.name}{'*' if a.required else ''}:{a.type}" for a in spec.args)
        table.add_row(spec.name, spec.scheduling, args, spec.summary)
    Console().print(table)
