"""Completion: commands and argument names from the registry, meta-commands from their
registry, and the program ids, sessions and models the console has seen; also through a
real prompt_toolkit session fed by a pipe."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dspex_cli.repl.app import build_session
from dspex_cli.repl.completion import candidates
from dspex_cli.repl.config import ModelMemory, ReplConfig
from dspex_cli.repl.meta import META
from dspex_cli.repl.parsing import registry
from dspex_cli.repl.pipe import JsonLinesOutput
from dspex_cli.repl.shell import Shell
from dspex_cli.repl.targets import InProcessTarget


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    out = io.StringIO()
    shell = Shell(InProcessTarget(), JsonLinesOutput(out), ReplConfig(),
                  ModelMemory(tmp_path / "models.json"))
    yield shell
    shell.close()


def texts(text: str, shell: Shell) -> list[str]:
    return [c.text for c in candidates(text, shell)]


def test_first_word_completes_every_registered_command(shell: Shell) -> None:
    for name in registry().names(include_aliases=True):
        assert name in texts(name[:3], shell)
    assert texts("list_s", shell) == ["list_sessions"]
    assert set(texts("exec", shell)) == {n for n in registry().names(include_aliases=True) if n.startswith("exec")}


def test_colon_completes_every_meta_command(shell: Shell) -> None:
    assert set(texts(":", shell)) == {f":{name}" for name in META.names()}
    assert texts(":hist", shell) == [":history"]


def test_argument_names_come_from_the_registry_and_skip_used_ones(shell: Shell) -> None:
    spec = registry().get("execute_program")
    assert texts("execute_program ", shell) == [f"{a.name}=" for a in spec.args]
    assert "program_id=" not in texts("execute_program program_id=qa ", shell)
    assert texts("configure_lm api_", shell) == ["api_key=", "api_base="]
    assert texts("configure_lm cache=", shell) == ["cache=true", "cache=false"]
    assert texts("create_program program_type=c", shell) == ["program_type=chain_of_thought"]


def test_program_ids_sessions_and_models_seen_before(shell: Shell) -> None:
    shell.handle(":lm mock")
    shell.handle("alpha = question -> answer")
    shell.handle("beta = question -> answer: int")
    shell.handle(":session other")
    shell.handle("gamma = text -> label")
    assert texts("execute_program program_id=", shell) == ["program_id=gamma"]
    shell.handle(":session anonymous")
    assert texts("execute_program program_id=", shell) == ["program_id=alpha", "program_id=beta"]
    assert texts("al", shell) == ["alpha("]
    assert texts(":call b", shell) == ["beta"]
    assert texts(":save a", shell) == ["alpha"]
    assert set(texts(":session ", shell)) >= {"anonymous", "other"}
    assert texts("list_programs session_id=o", shell) == ["session_id=other"]
    assert texts(":lm m", shell) == ["mock"]
    assert texts("configure_lm model=", shell)[0] == "model=mock"
    # Models persist for the next console.
    assert "mock" in ModelMemory(shell.models.path).models


def test_meta_argument_kinds(shell: Shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert texts(":json ", shell) == ["on", "off"]
    assert "execute_program" in texts(":help exe", shell)
    assert ":history" in texts(":help :hi", shell)
    (tmp_path / "session-one.jsonl").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert texts(":replay sess", shell) == ["session-one.jsonl"]
    assert texts(":record su", shell) == ["sub/"]
    assert texts(":lm mock ", shell)[0].endswith("=")
    assert "model=" not in texts(":lm mock ", shell)


def type_keys(shell: Shell, *chunks: str) -> str:
    """Types chunks into a real PromptSession, pausing between them as a person would,
    since completions are applied asynchronously; returns the accepted input."""
    with create_pipe_input() as pipe:
        session = build_session(shell, ReplConfig(), input=pipe, output=DummyOutput())

        def typist() -> None:
            for chunk in chunks:
                time.sleep(0.15)
                pipe.send_text(chunk)

        threading.Thread(target=typist, daemon=True).start()
        return session.prompt()


def test_tab_in_a_real_prompt_session_completes_the_command(shell: Shell) -> None:
    assert type_keys(shell, "list_prog", "\t", "\r") == "list_programs"


def test_tab_completes_argument_names_in_a_prompt_session(shell: Shell) -> None:
    assert type_keys(shell, "delete_program prog", "\t", "qa", "\r") == "delete_program program_id=qa"


def test_enter_inserts_a_newline_while_json_is_open(shell: Shell) -> None:
    with create_pipe_input() as pipe:
        session = build_session(shell, ReplConfig(), input=pipe, output=DummyOutput())
        pipe.send_text('execute_program {"program_id": "qa",\r"inputs": {}}\r')
        assert session.prompt() == 'execute_program {"program_id": "qa",\n"inputs": {}}'


def test_highlighting_tells_known_commands_from_unknown_ones(shell: Shell) -> None:
    from prompt_toolkit.document import Document

    from dspex_cli.repl.app import ReplLexer

    def styles(text: str) -> list[tuple[str, str]]:
        return [(style, part) for style, part in ReplLexer().lex_document(Document(text))(0) if part.strip()]

    assert styles('execute_program program_id=qa inputs.n=3 note="hi"') == [
        ("class:command", "execute_program"), ("class:key", "program_id"), ("", "="), ("", "q"), ("", "a"),
        ("class:key", "inputs.n"), ("", "="), ("class:number", "3"), ("class:key", "note"), ("", "="),
        ("class:string", '"hi"')]
    assert styles(":history 3")[0] == ("class:meta", ":history")
    assert styles(":histroy")[0] == ("class:unknown", ":histroy")
