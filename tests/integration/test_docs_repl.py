"""The examples in docs/repl.md run, and show what the doc says (issue 10.9).

Two kinds of fenced block are tested, by their info string:
- ```console: a console session. Lines starting with `dspex> ` are typed into a fresh
  console (the real Shell, in-process engine, rich renderer at a fixed width); the lines
  after each one are what it must show, in order.
- ```shell: `$ COMMAND` lines run through bash (`dspex` as this checkout's
  `python -m dspex_cli`); the lines after each one must be its stdout, line for line.
In both, `...` in a shown line stands for anything, and what varies from run to run is
masked before comparing: latencies (`3 ms`), token counts and panel widths.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import ROOT
from test_repl_pipe import repl_env

DOC = ROOT / "docs" / "repl.md"
FENCE = re.compile(r"^```(?P<info>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
PROMPT = "dspex> "


def blocks(kind: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(DOC.read_text()) if m["info"] == kind]


def normalise(line: str) -> str:
    """A line with the box drawing, the spacing and the numbers that vary taken out."""
    line = re.sub(r"[╭╮╰╯│─]", " ", line)
    line = re.sub(r"\b\d+(\.\d+)? ms\b", "N ms", line)
    line = re.sub(r"\b\d+ tokens\b", "N tokens", line)
    return " ".join(line.split())


def pattern(shown: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in normalise(shown).split("...")) + "$")


def assert_shows(expected: list[str], actual: list[str], what: str) -> None:
    """Every expected line matches an actual one, in order (actual may have more)."""
    lines = [normalise(a) for a in actual if normalise(a)]
    position = 0
    for shown in expected:
        if not normalise(shown):
            continue
        wanted = pattern(shown)
        while position < len(lines) and not wanted.match(lines[position]):
            position += 1
        assert position < len(lines), f"{what}: {shown!r} not shown; the output was:\n" + "\n".join(actual)
        position += 1


def sessions() -> list[list[tuple[str, list[str]]]]:
    found = []
    for body in blocks("console"):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith(PROMPT):
                steps.append((line[len(PROMPT):], []))
            elif steps:
                steps[-1][1].append(line)
        found.append(steps)
    return found


def test_the_doc_has_tested_examples() -> None:
    assert len(sessions()) >= 2 and len(blocks("shell")) >= 1


@pytest.mark.parametrize("steps", sessions(), ids=lambda steps: steps[0][0] if steps else "empty")
def test_console_examples(steps: list[tuple[str, list[str]]], tmp_path: Path, monkeypatch) -> None:
    from rich.console import Console

    from dspex_cli.repl.render import RichOutput
    from dspex_cli.repl.shell import Shell
    from dspex_cli.repl.targets import InProcessTarget

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    screen = io.StringIO()
    shell = Shell(InProcessTarget(), RichOutput(Console(file=screen, width=100, color_system=None,
                                                        highlight=False, soft_wrap=False)))
    try:
        for typed, expected in steps:
            before = screen.tell()
            shell.handle(typed)
            assert_shows(expected, screen.getvalue()[before:].splitlines(), typed)
    finally:
        shell.close()


@pytest.mark.parametrize("body", blocks("shell"))
@pytest.mark.slow
def test_shell_examples(body: str, tmp_path: Path) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    (tmp_path / "run").mkdir(mode=0o700)
    for command, expected in commands:
        runnable = re.sub(r"\bdspex\b(?= repl)", f"{sys.executable} -m dspex_cli", command)
        result = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, timeout=120,
                                env=repl_env(tmp_path), cwd=str(tmp_path))
        actual = result.stdout.splitlines()
        assert len(actual) == len(expected), f"{command}: {result.stdout}{result.stderr}"
        for shown, line in zip(expected, actual):
            assert pattern(shown).match(normalise(line)), f"{command}: {shown!r} does not match {line!r}"
