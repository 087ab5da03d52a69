"""The console through an Environment (no pseudo-terminal), its meta-commands in the one
registry type with a narrow MetaContext, and what it learns read from effect tags."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.registry import CREATES_PROGRAM, RUNS_PROGRAM, CommandSpec, Registry, command
from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus
from dspex_cli.repl import render as render_module
from dspex_cli.repl import shell as shell_module
from dspex_cli.repl.config import ModelMemory, ReplConfig
from dspex_cli.repl.meta import META
from dspex_cli.repl.meta_registry import MetaContext, MetaRegistry, MetaSpec, meta
from dspex_cli.repl.parsing import registry
from dspex_cli.repl.render import RichOutput
from dspex_cli.repl.runner import execute
from dspex_cli.repl.shell import Shell
from dspex_cli.repl.targets import InProcessTarget


def help_screen(*, terminal: bool, tmp_path: Path) -> str:
    stdout = io.StringIO()
    env = Environment.simulated(stdout, terminal=terminal, width=80)
    shell = Shell(InProcessTarget(), RichOutput(env=env), ReplConfig(), ModelMemory(tmp_path / "m.json"))
    try:
        shell.handle(":help")
    finally:
        shell.close()
    return stdout.getvalue()


def test_help_fits_an_80_column_terminal_and_is_whole_in_a_pipe(tmp_path: Path) -> None:
    on_terminal = help_screen(terminal=True, tmp_path=tmp_path)
    in_pipe = help_screen(terminal=False, tmp_path=tmp_path)
    assert max(len(line) for line in on_terminal.splitlines()) <= 80
    assert len(on_terminal.splitlines()) > len(in_pipe.splitlines())
    for spec in registry().specs():
        assert any(spec.name in line and spec.summary in line for line in in_pipe.splitlines()), spec.name
    for spec in META.specs():
        assert any(f":{spec.name}" in line and spec.summary in line for line in in_pipe.splitlines())


@pytest.fixture
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The console's state and config under tmp_path; the root logger restored afterwards."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DSPEX_PLUGINS", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_piped(argv: list[str], text: str) -> tuple[int, list[Any], str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment.simulated(stdout, terminal=False, stdin=io.StringIO(text), stderr=stderr)
    status = execute(argv, env)
    return status, [orjson.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


def test_a_piped_console_reads_the_environments_stdin_and_writes_json_lines(private_dirs: None) -> None:
    status, lines, _ = run_piped([], "ping\n:lm mock\nqa = question -> answer\nqa(question='hi')\n")
    assert status == ExitStatus.OK
    assert [line["success"] for line in lines] == [True, True, True, True]
    assert lines[0]["result"]["status"] == "ok"
    assert lines[3]["result"]["program_id"] == "qa" and "answer" in lines[3]["result"]["outputs"]
    status, lines, _ = run_piped([], "ping\nno_such_command\n")
    assert status == ExitStatus.FAILURE
    assert lines[1]["success"] is False and "no_such_command" in lines[1]["error"]


def test_console_usage_errors_are_one_line_and_exit_usage(private_dirs: None) -> None:
    status, lines, stderr = run_piped(["--attach", "1", "--spawn", "dspex serve"], "")
    assert status == ExitStatus.USAGE and lines == []
    assert stderr.count("\n") >= 1 and "not allowed with argument" in stderr  # argparse's own message


def test_meta_commands_live_in_the_bridge_registry_type() -> None:
    assert isinstance(META, Registry) and isinstance(META, MetaRegistry)
    assert all(isinstance(spec, CommandSpec) and isinstance(spec, MetaSpec) for spec in META.specs())
    assert META.get("h").name == "help" and "?" in META
    with pytest.raises(TypeError):
        META.add(CommandSpec(name="plain", handler=lambda args, ctx: {}, summary="not a meta-command"))
    with pytest.raises(ValueError):
        meta("bad_completion", complete="telepathy")(lambda ctx, argument: None)
    assert "bad_completion" not in META


def test_meta_handlers_get_a_narrow_context_not_the_shell(tmp_path: Path) -> None:
    seen: list[Any] = []
    local = MetaRegistry()

    @meta("peek", "", registry=local)
    def peek(ctx: MetaContext, argument: str) -> None:
        """Records what it was handed (test only)."""
        seen.append(ctx)
        ctx.out.info(f"session {ctx.session} argument {argument}")

    stdout = io.StringIO()
    shell = Shell(InProcessTarget(), RichOutput(env=Environment.simulated(stdout, terminal=False)), ReplConfig(),
                  ModelMemory(tmp_path / "m.json"))
    try:
        local.run(MetaContext(shell), "peek", "x")
        ctx = seen[0]
        assert not isinstance(ctx, Shell)
        for inner in ("programs", "sessions", "handle", "observe", "guard", "failures", "setup_log_append"):
            assert not hasattr(ctx, inner), inner
        assert "session anonymous argument x" in stdout.getvalue()
        ctx.switch_session("s1")
        assert shell.session == "s1" and ctx.session == "s1"
        ctx.show_json = True
        assert shell.show_json
    finally:
        shell.close()


@pytest.fixture
def widget_catalog(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A catalog with commands named nothing like DSPy's, tagged with the effects the console reads."""
    commands = Registry()

    @command("make_widget", registry=commands, tags={CREATES_PROGRAM})
    def make_widget(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """Makes a widget (test only)."""
        return {}

    @command("spin_widget", registry=commands, tags={RUNS_PROGRAM})
    def spin_widget(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """Spins a widget (test only)."""
        return {}

    @command("create_program", registry=commands)
    def untagged(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """Named like DSPy's but without tags: the console must learn nothing from it."""
        return {}

    monkeypatch.setattr(shell_module, "registry", lambda: commands)
    monkeypatch.setattr(render_module, "registry", lambda: commands)
    return commands


def test_the_console_learns_from_tags_not_names(widget_catalog: Registry, tmp_path: Path) -> None:
    stdout = io.StringIO()
    shell = Shell(InProcessTarget(), RichOutput(env=Environment.simulated(stdout, terminal=False)), ReplConfig(),
                  ModelMemory(tmp_path / "m.json"))
    try:
        ok = {"success": True}
        shell.observe({"command": "make_widget", "args": {}}, {**ok, "result": {"program_id": "w1"}})
        shell.observe({"command": "create_program", "args": {}}, {**ok, "result": {"program_id": "p1"}})
        assert shell.known_programs() == ["w1"]
        shell.observe({"command": "spin_widget", "args": {"program_id": "w1"}},
                      {**ok, "result": {"duration_ms": 12.5, "usage": {"total_tokens": 7}}})
        assert (shell.last_latency_ms, shell.last_tokens) == (12.5, 7)
        output = RichOutput(env=Environment.simulated(stdout, terminal=False))
        output.reply({"command": "make_widget"}, {**ok, "result": {"program_id": "w1", "signature_def": "a -> b",
                                                                 "program_type": "predict"}}, None, False)
        output.reply({"command": "create_program"}, {**ok, "result": {"program_id": "p1"}}, None, False)
        text = stdout.getvalue()
        assert "✓ w1 = a -> b (predict)" in text
        assert "✓ p1" not in text and '"program_id": "p1"' in text  # untagged: plain JSON
    finally:
        shell.close()


def test_effect_lookup_picks_the_command_that_is_not_a_variant() -> None:
    from bridge.registry import CONFIGURES_LM, VARIANT

    catalog = registry()
    assert catalog.for_effect(CREATES_PROGRAM).name == "create_program"
    assert catalog.for_effect(RUNS_PROGRAM).name == "execute_program"
    assert catalog.for_effect(CONFIGURES_LM).name == "configure_lm"
    assert {s.name for s in catalog.tagged(CREATES_PROGRAM)} == {"create_program", "create_gemini_program"}
    assert catalog.get("create_gemini_program").has(VARIANT)
    with pytest.raises(LookupError):
        Registry().for_effect(CREATES_PROGRAM)
    with pytest.raises(ValueError):
        command("empty_tag", registry=Registry(), tags={""})


def test_an_effect_no_command_provides_is_a_clear_console_error(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from dspex_cli.repl import parsing

    only_core = Registry()
    for spec in registry().specs():
        if not spec.tags & {CREATES_PROGRAM, RUNS_PROGRAM}:
            only_core.add(spec)
    monkeypatch.setattr(parsing, "registry", lambda: only_core)
    monkeypatch.setattr(shell_module, "registry", lambda: only_core)
    stdout = io.StringIO()
    shell = Shell(InProcessTarget(), RichOutput(env=Environment.simulated(stdout, terminal=False)), ReplConfig(),
                  ModelMemory(tmp_path / "m.json"))
    try:
        shell.handle("qa(question='x')")
        text = stdout.getvalue()
        assert "✗ parse_error: No command of this console does that" in text and "runs_program" in text
        assert "console_error" not in text and shell.failures == 1
    finally:
        shell.close()
