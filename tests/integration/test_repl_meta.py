"""Meta-commands and the friendly layer, rendered into a fixed-width rich console, and the
whole read-eval-print loop driven through prompt_toolkit's pipe input."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from bridge.record.reader import read_transcript
from fixtures import ROOT
from repl_screen import Screen
from dspex_cli.repl.app import prompt_message, run_console, toolbar_text
from dspex_cli.repl.completion import candidates
from dspex_cli.repl.config import ReplConfig, load_config
from dspex_cli.repl.meta import META, meta
from dspex_cli.repl.meta_registry import MetaContext
from dspex_cli.repl.parsing import registry




@pytest.fixture
def screen(tmp_path: Path) -> Iterator[Screen]:
    screen = Screen(tmp_path)
    yield screen
    screen.shell.close()


def test_help_lists_every_registered_command_and_every_meta_command(screen: Screen) -> None:
    text = screen.run(":help")
    for name in registry().names():
        assert name in text
    for name in META.names():
        assert f":{name}" in text
    detail = screen.run(":help execute_program")
    for arg in registry().get("execute_program").args:
        assert arg.name in detail
    assert "required" in detail
    assert ":history [n]" in screen.run(":help history")


def test_unknown_names_get_suggestions_not_tracebacks(screen: Screen) -> None:
    text = screen.run(":hisotry")
    assert "✗ parse_error: Unknown meta-command :hisotry" in text and "did you mean ':history'" in text
    text = screen.run("list_program")
    assert "Unknown command: list_program" in text and "did you mean 'list_programs'" in text
    assert "did you mean 'ping'" in screen.run(":help pign")
    assert "Traceback" not in screen.buffer.getvalue()
    assert screen.shell.failures == 3


def test_json_and_timing_switches(screen: Screen) -> None:
    text = screen.run("ping")
    assert "→ ping" in text and re.search(r"\(\d+\.\d ms\)", text)
    screen.run(":json on")
    raw = screen.run("ping initialization=true")
    request_line = raw.splitlines()[0]
    assert request_line.startswith("→ {")
    assert json.loads(request_line[2:]) == {"id": 2, "command": "ping", "args": {"initialization": True}}
    assert '"success": true' in raw
    screen.run(":timing off")
    assert " ms)" not in screen.run("ping")
    assert "json off" in screen.run(":json")  # no argument toggles
    with_error = screen.run(":timing maybe")
    assert "expected on or off" in with_error


def test_missing_lm_is_explained_with_how_to_configure_one(screen: Screen) -> None:
    screen.run("qa = question -> answer")
    text = screen.run('qa(question="hi")')
    assert "✗ lm_not_configured" in text
    assert ":lm mock" in text
    assert "LM none" in toolbar_text(screen.shell)[0][1]


def test_friendly_layer_shows_the_protocol_commands_it_sends(screen: Screen) -> None:
    text = screen.run(":lm mock temperature=0.5")
    assert "→ configure_lm model=mock temperature=0.5" in text and "✓ LM mock" in text
    text = screen.run("qa = question -> answer: int")
    assert '→ create_program id=qa signature="question -> answer: int"' in text
    text = screen.run('qa(question="What is DSPy?")')
    assert '→ execute_program program_id=qa inputs={"question": "What is DSPy?"}' in text
    assert re.search(r"╭─ qa ─+", text) and re.search(r"│ answer\s+-?\d+", text)
    text = screen.run(":cot why question -> answer")
    assert "program_type=chain_of_thought" in text
    assert "reasoning:" in screen.run(":call why question='Why is the sky blue?'")
    # Redefining replaces: both protocol commands are shown, and the new signature wins.
    text = screen.run("qa = question -> answer: bool")
    assert "→ delete_program program_id=qa" in text and "answer: bool" in text
    toolbar = toolbar_text(screen.shell)[0][1]
    assert "LM mock" in toolbar and "session anonymous" in toolbar and "tokens" in toolbar


def test_session_switch_goes_to_every_command_that_takes_one(screen: Screen) -> None:
    screen.run(":lm mock")
    text = screen.run(":session s1")
    assert "session is now s1" in text
    assert prompt_message(screen.shell)[0][1] == "dspex:s1> "
    assert "session_id=s1" in screen.run("t = text -> label")
    assert "session_id" not in screen.run("ping")  # ping takes no session
    programs = screen.run(":programs")
    assert "programs in s1" in programs and "│ t " in programs
    sessions = screen.run(":session")
    assert re.search(r"\*\s+│ s1", sessions)
    screen.run(":session anonymous")
    assert "no programs in session anonymous" in screen.run(":programs")


def test_history_and_usage_report_the_lm_calls(screen: Screen) -> None:
    screen.run(":lm mock")
    screen.run("qa = question -> answer")
    screen.run('qa(question="first question")')
    screen.run('qa(question="second question")')
    history = screen.run(":history 1")
    # Table cells wrap at spaces, so single words are what can be looked for.
    assert "second" in history and "first" not in history and "mock" in history
    assert "first" in screen.run(":history")
    stats = screen.shell.target.engine.stats
    usage = screen.run(":usage")
    assert f"{stats.lm_calls} LM calls" in usage
    assert f"= {stats.usage['total_tokens']} tokens" in usage
    assert "takes a number" in screen.run(":history lots")


def test_save_and_load_a_program(screen: Screen, tmp_path: Path) -> None:
    screen.run(":lm mock")
    screen.run(":cot qa question, context: list[str] -> answer: int")
    file = tmp_path / "qa.json"
    assert f"saved qa to {file}" in screen.run(f":save qa {file}")
    saved = json.loads(file.read_text())
    assert saved["format"] == "dspex.program" and saved["program_type"] == "chain_of_thought"
    assert [f["name"] for f in saved["signature"]["inputs"]] == ["question", "context"]
    text = screen.run(f":load {file} qa2")
    assert "→ import_program" in text and "qa2" in text
    first = screen.run('qa(question="q", context=["a"])')
    second = screen.run('qa2(question="q", context=["a"])')
    answer = re.compile(r"│ answer\s+(-?\d+)")
    assert answer.search(first).group(1) == answer.search(second).group(1)
    (tmp_path / "broken.json").write_text("{")
    assert "is not JSON" in screen.run(f":load {tmp_path / 'broken.json'}")
    assert "holds no program" in screen.run(f":load {tmp_path / 'models.json'}")
    assert "program_not_found" in screen.run(":save nothing")
    # A file of :save from before portable documents (program_data only) still loads.
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"format": "dspex-program", "version": 1, "program_id": "old",
                                  "program_data": {"signature": saved["signature"], "program_type": "predict"}}))
    assert "✓ old" in screen.run(f":load {legacy}")


def test_record_starts_with_the_state_it_depends_on(screen: Screen, tmp_path: Path) -> None:
    screen.run(":lm mock")
    screen.run("qa = question -> answer")
    path = tmp_path / "session.jsonl"
    assert "2 command(s)" in screen.run(f":record {path}")
    screen.run('qa(question="recorded")')
    assert "recording finished" in screen.run(":record off")
    assert read_transcript(path).header["format"] == "dspex-transcript"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    sent = [e["frame"]["command"] for e in entries if e.get("type") == "frame" and e["dir"] == "in"]
    assert sent == ["configure_lm", "create_program", "execute_program"]
    assert any(e.get("type") == "lm_call" for e in entries)
    assert "No such directory" in screen.run(f":record {tmp_path / 'missing' / 'x.jsonl'}")


def test_a_bug_in_the_console_is_reported_and_the_console_goes_on(screen: Screen,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(screen.shell.target, "submit", broken)
    text = screen.run("ping")
    assert "✗ console_error: RuntimeError: boom" in text and "Traceback" not in text
    monkeypatch.undo()
    assert "uptime" in screen.run("ping")


def test_one_registry_feeds_dispatch_help_and_completion(screen: Screen) -> None:
    @meta("echo_test", "TEXT")
    def echo_test(ctx: MetaContext, argument: str) -> None:
        """Repeats its argument (test only)."""
        ctx.out.info(f"echo {argument}")

    try:
        assert "echo hello" in screen.run(":echo_test hello")
        assert ":echo_test" in screen.run(":help")
        assert ":echo_test" in [c.text for c in candidates(":echo", screen.shell)]
    finally:
        META.remove("echo_test")
    assert "echo_test" not in META and "Unknown meta-command :echo_test" in screen.run(":echo_test hi")


def test_quit_ends_the_loop(screen: Screen) -> None:
    screen.run(":quit")
    assert screen.shell.quit_requested


def test_config_file_is_written_commented_on_first_run(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "repl.toml"
    config = load_config(path)
    text = path.read_text()
    assert config.key_bindings == "emacs" and not config.problems
    assert all(line.startswith("#") or line.startswith("[") or not line.strip() for line in text.splitlines())
    path.write_text(text.replace('# key_bindings = "emacs"', 'key_bindings = "vi"')
                    .replace('# lm = ""', 'lm = "mock"')
                    .replace('# prompt = "ansicyan bold"', 'prompt = "ansired"'))
    config = load_config(path)
    assert config.vi and config.lm == "mock" and config.colours["prompt"] == "ansired"
    path.write_text("[repl]\nkey_bindings = 3\nwhat = 1\n")
    config = load_config(path)
    assert config.key_bindings == "emacs" and len(config.problems) == 2
    path.write_text("[repl\n")
    assert "using defaults" in load_config(path).problems[0]


def test_the_loop_through_prompt_toolkit_pipe_input(tmp_path: Path) -> None:
    screen = Screen(tmp_path)
    lines = [":lm mock", "qa = question -> answer: int", 'qa(question="from the pipe")',
             'execute_program {"program_id": "qa",\r "inputs": {"question": "multi-line"}}', "bogus"]
    with create_pipe_input() as pipe:
        def typist() -> None:
            for line in lines:
                time.sleep(0.3)
                pipe.send_text(line + "\r")
            time.sleep(0.3)
            pipe.send_text("\x04")  # Ctrl-D on an empty line leaves

        threading.Thread(target=typist, daemon=True).start()
        code = run_console(screen.shell, ReplConfig(), str(tmp_path / "history"), input=pipe,
                           output=DummyOutput())
    screen.shell.close()
    text = screen.buffer.getvalue()
    assert code == 0
    assert "✓ LM mock" in text and "╭─ qa" in text
    assert '→ execute_program program_id=qa inputs={"question": "multi-line"}' in text
    assert "Unknown command: bogus" in text
    history = (tmp_path / "history").read_text()
    assert "+:lm mock" in history and '+ "inputs": {"question": "multi-line"}}' in history


def test_history_file_is_trimmed_to_the_configured_size(tmp_path: Path) -> None:
    from prompt_toolkit.history import FileHistory

    from dspex_cli.repl.config import trim_history

    path = tmp_path / "history"
    history = FileHistory(str(path))
    for index in range(6):
        history.append_string(f"ping {index}\n  initialization=true" if index == 4 else f"ping {index}")
    trim_history(path, 3)
    assert list(FileHistory(str(path)).load_history_strings()) == ["ping 5", "ping 4\n  initialization=true",
                                                                   "ping 3"]


def test_docs_describe_every_meta_command() -> None:
    doc = (ROOT / "docs" / "repl.md").read_text()
    for name in META.names():
        assert f"`:{name}" in doc or f"`:{name}`" in doc, f":{name} is not in docs/repl.md"
