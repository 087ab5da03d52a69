"""The console and two-way frames: `:stream on` shows events as they arrive, client tools
are answered by a `--tools FILE` function (pipe, in-process and --spawn targets) or by
hand at a prompt in a real pseudo-terminal (pexpect)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fixtures import PLUGINS, ROOT
from openai_server import LocalOpenAIServer
from test_repl_pipe import replies, run_repl
from test_repl_terminal import PROMPT, Console, console_env

TOOLS_FILE = '''
def lookup(query):
    return {"row": query.upper()}


def count_words(text):
    return len(text.split())


def asked(asked):
    return "local:" + asked


def _helper():
    return "not a tool"
'''

LOOKUP = {"name": "lookup", "description": "Finds a row.", "handler": "client",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
COUNT = {"name": "count_words", "description": "Counts words.", "handler": "client",
         "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_FILE)
    return path


def plugin_env() -> dict[str, str]:
    return {"PYTHONPATH": f"{ROOT}:{PLUGINS}"}


def test_stream_on_writes_each_chunk_before_the_reply_and_off_stops_it(tmp_path: Path) -> None:
    text = ":stream on\ntw_stream n=3\n:stream off\ntw_stream n=2\n"
    result = run_repl(tmp_path, text, "--plugin", "twoway_plugin", **plugin_env())
    assert result.returncode == 0, result.stderr
    lines = replies(result)
    chunks = [line for line in lines[1:5] if line.get("event") == "chunk"]
    assert [c["data"]["delta"] for c in chunks] == ["part0 ", "part1 ", "part2 "]
    assert lines[4]["result"]["text"] == "".join(c["data"]["delta"] for c in chunks)
    assert lines[5]["result"] == {"stream": False}
    assert lines[6]["result"]["text"] == "part0 part1 " and len(lines) == 7  # no events once off


@pytest.mark.parametrize("target", [[], ["--spawn", f"{sys.executable} -m dspex_cli serve --plugin twoway_plugin"]],
                         ids=["in-process", "spawn"])
def test_a_tools_file_answers_callbacks_and_a_missing_function_is_an_error(tmp_path: Path, tools_file: Path,
                                                                            target: list[str]) -> None:
    ask = {"names": ["asked", "nowhere"], "tools": [{"name": "asked", "handler": "client"},
                                                    {"name": "nowhere", "handler": "client"}]}
    result = run_repl(tmp_path, f"tw_ask {json.dumps(ask)}\n", "--plugin", "twoway_plugin", "--tools",
                      str(tools_file), *target, **plugin_env())
    lines = replies(result)
    callbacks = [line["data"]["name"] for line in lines if line.get("event") == "callback"]
    answers = lines[-1]["result"]["answers"]
    assert callbacks == ["asked", "nowhere"]
    assert answers["asked"] == "local:asked"
    assert answers["nowhere"]["error_type"] == "callback_failed"
    assert "no --tools function nowhere" in answers["nowhere"]["error"]


def test_a_react_agent_in_the_console_calls_the_tools_file(tmp_path: Path, tools_file: Path,
                                                           openai_server: LocalOpenAIServer) -> None:
    create = {"id": "agent", "signature": "question -> answer", "program_type": "react", "tools": [LOOKUP, COUNT]}
    text = (f"configure_lm model=openai/repl-tools api_base={openai_server.base_url} api_key=sk-test-secret-123456\n"
            f"create_program {json.dumps(create)}\n"
            'execute_program program_id=agent inputs={"question": "find bob now"}\n')
    result = run_repl(tmp_path, text, "--tools", str(tools_file))
    assert result.returncode == 0, result.stderr
    reply = replies(result)[-1]
    steps = reply["result"]["trajectory"]
    assert [(s["tool"], s["observation"]) for s in steps] == [
        ("lookup", {"row": "FIND BOB NOW"}), ("count_words", 3), ("finish", "Completed.")]


def test_a_tools_file_that_does_not_load_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def lookup(:\n")
    result = run_repl(tmp_path, "ping\n", "--tools", str(broken))
    assert result.returncode != 0 and "--tools" in result.stderr and "SyntaxError" in result.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n")
    result = run_repl(tmp_path, "ping\n", "--tools", str(empty))
    assert result.returncode != 0 and "defines no function" in result.stderr
    assert "Traceback" not in result.stderr


class PluginConsole(Console):
    """The terminal console with the suite's test plugins importable."""

    def __init__(self, home: Path, *args: str) -> None:
        import pexpect

        env = {**console_env(home), "PYTHONPATH": f"{ROOT}:{PLUGINS}"}
        self.child = pexpect.spawn(sys.executable, ["-m", "dspex_cli", "repl", *args], env=env, cwd=str(home),
                                   dimensions=(40, 120), encoding="utf-8", timeout=30)
        self.seen = ""
        self.position = 0
        self.wait_for(PROMPT)


def test_the_terminal_asks_for_a_callback_answer_by_hand(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    console = PluginConsole(home, "--plugin", "twoway_plugin", "--no-history")
    try:
        tools = [{"name": "typed", "handler": "client"}, {"name": "refused", "handler": "client"}]
        console.send("tw_ask " + json.dumps({"names": ["typed", "refused"], "tools": tools}) + "\r")
        console.wait_for('tool typed asks {"asked":"typed"}')
        console.wait_for("answer (JSON or text")
        console.send('{"by": "hand"}\r')
        console.wait_for('tool refused asks {"asked":"refused"}')
        console.wait_for("answer (JSON or text")
        console.send("!not today\r")
        shown = console.wait_for("dspex> ")
        assert '"by": "hand"' in shown or "'by': 'hand'" in shown or '"by":"hand"' in shown, shown
        assert "not today" in shown
    finally:
        console.child.sendcontrol("d")
        console.child.close(force=True)


def test_hand_answers_are_parsed_as_json_text_or_errors() -> None:
    from dspex_cli.repl.callbacks import parse_hand_answer

    assert parse_hand_answer(' {"a": 1} ') == {"result": {"a": 1}}
    assert parse_hand_answer("42") == {"result": 42}
    assert parse_hand_answer("plain words") == {"result": "plain words"}
    assert parse_hand_answer("!broken") == {"error": "broken"}
    assert "no answer" in parse_hand_answer("  ")["error"]
