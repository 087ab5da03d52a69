"""The `dspex` command line's conventions, in real processes: --version, -h, placeholders,
one-line user errors (exit 2, no traceback), --json, and output that a pipe gets whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fixtures import ROOT, worker_env

# Subcommands whose help typer renders (serve and repl parse their own options).
TYPER_COMMANDS = ("shim", "commands", "demo", "replay", "inspect")


def dspex(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m dspex_cli ARGS` with stdout and stderr as pipes (not terminals)."""
    return subprocess.run([sys.executable, "-m", "dspex_cli", *args], capture_output=True, text=True,
                          env=worker_env(), cwd=str(cwd), timeout=timeout)


def test_version_is_one_line_with_three_versions_and_does_not_import_dspy() -> None:
    from importlib import metadata
    import platform

    for flag in ("--version", "-V"):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dspex_cli", flag], capture_output=True,
                              text=True, env=worker_env(), cwd=str(ROOT), timeout=60)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1
        line = lines[0]
        assert line.startswith(f"dspex {metadata.version('dspex')} ")
        assert f"DSPy {metadata.version('dspy')}" in line and f"Python {platform.python_version()}" in line
        imported = {row.rsplit("|", 1)[-1].strip() for row in done.stderr.splitlines() if "|" in row}
        assert "dspy" not in imported and "typer" not in imported


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_short_help_works_wherever_help_does() -> None:
    for args in ((), *((name,) for name in (*TYPER_COMMANDS, "serve", "repl"))):
        long_help = dspex(*args, "--help")
        short_help = dspex(*args, "-h")
        assert long_help.returncode == 0 and short_help.returncode == 0, (args, short_help.stderr)
        # serve prints its help on stderr: its stdout belongs to the protocol.
        text = short_help.stdout + short_help.stderr
        assert "usage" in text.lower()
        assert text == long_help.stdout + long_help.stderr, args


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_help_placeholders_say_what_to_type() -> None:
    for args in ((), *((name,) for name in TYPER_COMMANDS)):
        text = dspex(*args, "--help").stdout
        for python_type in ("<bool>", "<list[str]>", "<str>", "<int>", "<float>", "<path>"):
            assert python_type not in text, (args, python_type)
    assert "--limit" in dspex("inspect", "-h").stdout and " N " in dspex("inspect", "-h").stdout
    assert "MODULE" in dspex("commands", "-h").stdout


@pytest.mark.parametrize("args, fragment", [
    (("shim", "-o", "/nonexistent/dir/x"), "cannot write /nonexistent/dir/x"),
    (("shim", "-o", "/tmp"), "/tmp is a directory"),
    (("commands", "--plugin", "no_such_module"), "no_such_module"),
    (("commands", "--markdown", "--json"), "--markdown"),
    (("replay", "recordings/typed_outputs.jsonl", "--jobs", "0"), "--jobs"),
    (("inspect", "recordings/typed_outputs.jsonl", "--limit", "many"), "--limit"),
])
@pytest.mark.slow
def test_user_errors_are_one_line_and_exit_2(args: tuple[str, ...], fragment: str) -> None:
    done = dspex(*args)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dspex {args[0]}: ") and fragment in lines[0], done.stderr


def test_commands_json_is_the_registry() -> None:
    from bridge import catalog

    REGISTRY = catalog()

    done = dspex("commands", "--json")
    assert done.returncode == 0
    listed = orjson.loads(done.stdout)
    assert [item["name"] for item in listed] == [spec.name for spec in REGISTRY.specs()]
    for item, spec in zip(listed, REGISTRY.specs()):
        assert [(a["name"], a["type"], a["required"]) for a in item["args"]] == \
            [(a.name, a.type, a.required) for a in spec.args]
        assert item["scheduling"] == spec.scheduling and item["summary"] == spec.summary
    assert any(item["args"] for item in listed)


def test_commands_table_is_not_cut_in_a_pipe() -> None:
    from bridge import catalog

    REGISTRY = catalog()

    done = dspex("commands")
    assert done.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") >= 4}
    widest = max(REGISTRY.specs(), key=lambda spec: len(spec.args))
    assert len(widest.args) >= 3
    row = rows[widest.name]
    for arg in widest.args:
        assert f"{arg.name}{'*' if arg.required else ''}:{arg.type}" in row
    assert widest.summary in row and "…" not in done.stdout


def long_copy(tmp_path: Path, name: str = "typed_outputs") -> Path:
    """A recording copied under a path far longer than 80 columns."""
    folder = tmp_path / ("a-folder-name-long-enough-to-overflow-any-80-column-table-" * 2)
    folder.mkdir()
    target = folder / f"{name}-with-a-long-file-name-as-ci-artifacts-often-have.jsonl"
    target.write_bytes((ROOT / "recordings" / f"{name}.jsonl").read_bytes())
    assert len(str(target)) > 160
    return target


def test_replay_table_prints_long_paths_whole_in_a_pipe(tmp_path: Path) -> None:
    transcript = long_copy(tmp_path)
    done = dspex("replay", str(transcript))
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(str(transcript) in line and "pass" in line for line in done.stdout.splitlines()), done.stdout


def test_inspect_prints_long_paths_whole_in_a_pipe(tmp_path: Path) -> None:
    transcript = long_copy(tmp_path)
    done = dspex("inspect", str(transcript))
    assert done.returncode == 0, done.stderr
    assert any(str(transcript) in line for line in done.stdout.splitlines()), done.stdout
    # Panels keep their natural width: no line padded out to the pipe's huge width.
    assert max(len(line) for line in done.stdout.splitlines()) < len(str(transcript)) + 200


@pytest.mark.slow
def test_demo_prints_a_short_summary_and_raw_frames_with_json() -> None:
    from dspex_cli.demo import STEPS

    done = dspex("demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(STEPS) + 2
    for (command, _, _), line in zip(STEPS, lines[1:]):
        assert f" {command} " in line and " ok " in line
    assert '"success"' not in done.stdout  # a summary, not the frames
    assert "answer = " in done.stdout and "Traceback" not in done.stderr

    raw = dspex("demo", "--json")
    assert raw.returncode == 0, raw.stderr
    frames = [orjson.loads(line) for line in raw.stdout.splitlines()]
    assert len(frames) == 2 * len(STEPS)
    requests, replies = frames[0::2], frames[1::2]
    assert [r["command"] for r in requests] == [command for command, _, _ in STEPS]
    assert [r["id"] for r in replies] == [r["id"] for r in requests]
    assert all(reply["success"] is True for reply in replies)
