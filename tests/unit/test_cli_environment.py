"""The CLI's edges without a pseudo-terminal: every command renders through an Environment,
so the same command is rendered here into a StringIO marked as an 80-column terminal and
as a pipe, and compared; the one error boundary turns failures into ExitStatus values."""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest

from dspex_cli.app import run_app
from dspex_cli.console import PIPE_WIDTH
from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded

from fixtures import ROOT  # noqa: E402
ANSI = re.compile(r"\x1b\[")


def rendered(argv: list[str], *, terminal: bool, width: int = 80) -> tuple[int, str, str]:
    """Runs `dspex ARGV` in a simulated environment; (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment.simulated(stdout, terminal=terminal, width=width, stderr=stderr)
    status = run_app(argv, env)
    return status, stdout.getvalue(), stderr.getvalue()


def test_commands_table_fits_an_80_column_terminal_and_a_pipe_gets_every_line_whole() -> None:
    from bridge import catalog

    status, on_terminal, _ = rendered(["commands"], terminal=True)
    assert status == ExitStatus.OK
    status, in_pipe, _ = rendered(["commands"], terminal=False)
    assert status == ExitStatus.OK
    terminal_lines = on_terminal.splitlines()
    assert max(len(line) for line in terminal_lines) <= 80
    # Folded to fit: the terminal needs more lines than the pipe for the same table.
    assert len(terminal_lines) > len(in_pipe.splitlines())
    pipe_lines = in_pipe.splitlines()
    assert max(len(line) for line in pipe_lines) > 80
    for spec in catalog().specs():
        # In a pipe each command's row holds its whole summary, so grep finds it.
        assert any(spec.name in line and spec.summary in line for line in pipe_lines), spec.name
    assert not ANSI.search(on_terminal) and not ANSI.search(in_pipe)  # colour is off in both


def test_colour_only_where_the_environment_allows_it() -> None:
    stdout = io.StringIO()
    env = Environment.simulated(stdout, terminal=True, width=80, colour=True)
    assert run_app(["commands"], env) == ExitStatus.OK
    assert ANSI.search(stdout.getvalue())
    piped = io.StringIO()
    env = Environment.simulated(piped, terminal=False, colour=True)  # a pipe never gets colour codes
    assert not env.colour
    assert run_app(["commands"], env) == ExitStatus.OK
    assert not ANSI.search(piped.getvalue())


def test_json_output_is_the_same_on_a_terminal_and_in_a_pipe() -> None:
    _, on_terminal, _ = rendered(["commands", "--json"], terminal=True)
    _, in_pipe, _ = rendered(["commands", "--json"], terminal=False)
    assert on_terminal == in_pipe
    listed = orjson.loads(in_pipe)
    names = [entry["name"] for entry in listed]
    assert "ping" in names and names == sorted(names)
    # Effect tags are listed for scripts too (never part of the wire contract).
    tags = {entry["name"]: entry["tags"] for entry in listed}
    assert tags["create_program"] == ["builds_state", "creates_program"] and tags["ping"] == []


def test_inspect_transcript_renders_through_the_environment() -> None:
    recording = str(ROOT / "recordings" / "standalone_bridge.jsonl")
    status, on_terminal, _ = rendered(["inspect", recording], terminal=True)
    assert status == ExitStatus.OK
    status, in_pipe, _ = rendered(["inspect", recording], terminal=False)
    assert status == ExitStatus.OK
    assert max(len(line) for line in on_terminal.splitlines()) <= 80
    # The transcript's full path is never folded in a pipe: it is one line's text.
    assert any(recording in line for line in in_pipe.splitlines())
    for word in ("configure_lm", "create_program"):
        assert word in in_pipe
    status, as_json, _ = rendered(["inspect", recording, "programs", "--json"], terminal=True)
    assert status == ExitStatus.OK
    programs = orjson.loads(as_json)["programs"]
    # Programs are found by the "creates_program" tag and runs by "runs_program".
    assert programs and all(p["program_id"] for p in programs)
    assert sum(p["execution_count"] for p in programs) >= 1


def test_user_errors_are_one_line_on_the_environments_stderr_with_their_status() -> None:
    status, stdout, stderr = rendered(["commands", "--plugin", "no_such_plugin_module"], terminal=False)
    assert status == ExitStatus.USAGE
    assert stdout == ""
    assert stderr == "dspex commands: cannot load plugin 'no_such_plugin_module': " \
                     "no module named 'no_such_plugin_module'\n"
    status, stdout, stderr = rendered(["inspect", "/nonexistent/dir/x.jsonl"], terminal=True)
    assert status == ExitStatus.USAGE and stdout == ""
    assert stderr.startswith("dspex inspect: ") and stderr.count("\n") == 1
    status, _, stderr = rendered(["inspect", "--follow"], terminal=False)
    assert status == ExitStatus.USAGE and "dspex inspect:" in stderr


def test_the_error_boundary_maps_every_outcome_to_an_exit_status() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment.simulated(stdout, terminal=False, stderr=stderr)

    def interrupted() -> int:
        raise KeyboardInterrupt

    def reader_gone() -> int:
        raise BrokenPipeError

    def refused() -> int:
        raise UserError("bad  input\nwith api_key sk-abcdefghijklmnopqrstuvwx", ExitStatus.UNREADABLE)

    assert run_guarded("dspex x", interrupted, env) == ExitStatus.INTERRUPTED
    assert run_guarded("dspex x", lambda: None, env) == ExitStatus.OK
    assert run_guarded("dspex x", lambda: ExitStatus.MISMATCH, env) == ExitStatus.MISMATCH
    assert run_guarded("dspex x", reader_gone, env) == ExitStatus.OK
    assert env.stdout is not stdout  # later output goes nowhere instead of raising again
    assert run_guarded("dspex x", refused, env) == ExitStatus.UNREADABLE
    line = stderr.getvalue()
    assert line.startswith("dspex x: bad input with api_key") and line.count("\n") == 1
    assert "sk-abcdefghijklmnopqrstuvwx" not in line
    for code, status in ((None, ExitStatus.OK), (2, ExitStatus.USAGE), ("message", ExitStatus.FAILURE)):
        def exits(code: object = code) -> int:
            raise SystemExit(code)

        assert run_guarded("dspex x", exits, env) == status
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_guarded("dspex x", lambda: 1 // 0, env)


def test_help_and_version_go_through_the_boundary_with_status_ok() -> None:
    status, stdout, _ = rendered(["--help"], terminal=True)
    assert status == ExitStatus.OK and "inspect" in stdout
    status, _, _ = rendered(["no-such-subcommand"], terminal=False)
    assert status == ExitStatus.USAGE


def test_environment_of_the_process_reads_the_real_streams() -> None:
    env = Environment.from_process()
    import sys

    assert env.stdout is sys.stdout and env.stderr is sys.stderr and env.stdin is sys.stdin
    assert env.stdout_tty == sys.stdout.isatty()
    pipe = Environment.simulated(io.StringIO(), terminal=False)
    assert pipe.columns == PIPE_WIDTH and not pipe.interactive
    terminal = Environment.simulated(io.StringIO(), terminal=True, width=123)
    assert terminal.columns == 123 and terminal.interactive
    assert terminal.console().width == 123 and terminal.console().is_terminal
    assert pipe.console().width == PIPE_WIDTH and not pipe.console().is_terminal
