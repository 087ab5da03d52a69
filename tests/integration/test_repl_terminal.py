"""`dspex repl` in a real pseudo-terminal (pexpect), typed at as a person would."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from fixtures import ROOT, worker_env

SECRET = "sk-test-secret-123456"  # the api_key of the lm_args fixture
PROMPT = "dspex> "


def console_env(home: Path) -> dict[str, str]:
    return worker_env(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"),
                      TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")


# Colour and cursor sequences: a styled word is split by them, so text is matched without.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[>=]|\r")


class Console:
    def __init__(self, home: Path, *args: str) -> None:
        self.child = pexpect.spawn(sys.executable, ["-m", "dspex_cli", "repl", *args], env=console_env(home),
                                   cwd=str(home), dimensions=(40, 120), encoding="utf-8", timeout=30)
        self.seen = ""
        self.position = 0
        self.wait_for(PROMPT)

    def screen(self) -> str:
        return ANSI.sub("", self.seen)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """Waits until `text` shows after what was matched last; returns the output in between."""
        deadline = time.monotonic() + timeout
        while True:
            plain = self.screen()
            found = plain.find(text, self.position)
            if found >= 0:
                between = plain[self.position:found]
                self.position = found + len(text)
                return between
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear; the screen ends with:\n{plain[-1500:]}")
            try:
                self.seen += self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                pass

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def run(self, line: str, *expect: str) -> str:
        """Types a line and Enter, waits for each expected text and the next prompt."""
        self.child.send(line + "\r")
        screen = "".join(self.wait_for(text) + text for text in expect)
        return screen + self.wait_for(PROMPT)

    def exit(self) -> int:
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF, timeout=15)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def console(home: Path) -> Iterator[Console]:
    console = Console(home)
    yield console
    if console.child.isalive():
        console.child.terminate(force=True)


def test_first_run_writes_config_and_tab_completes(console: Console, home: Path) -> None:
    config = home / "config" / "dspex" / "repl.toml"
    assert config.exists() and "# key_bindings" in config.read_text()
    console.send("list_prog")
    console.send("\t")
    console.wait_for("list_programs")
    console.run("", "no programs in session anonymous")
    console.send(":hist\t")
    console.wait_for(":history")
    console.run("", "no LM calls yet")
    screen = console.run("frobnicate x=1", "Unknown command: frobnicate")
    assert "hint" in screen or "hint" in console.screen()
    # An open bracket: Enter continues the input instead of running it.
    console.send('execute_program {"program_id": "qa",\r')
    console.wait_for(".....")  # the continuation prompt
    console.run('"inputs": {}}', "program_not_found")
    assert console.exit() == 0
    history = (home / "state" / "dspex" / "repl_history").read_text()
    assert "+list_programs" in history


def test_program_against_the_local_openai_server(console: Console, lm_args: dict) -> None:
    console.run(f":lm {lm_args['model']} api_base={lm_args['api_base']} api_key={lm_args['api_key']}",
                "✓ LM openai/local-model (default)")
    console.run("count = text -> length: int", "✓ count")
    screen = console.run('count(text="abcdefghij")', "╭─ count")
    # The server's answer for an int field is the total length of the inputs: 10.
    assert "length 10" in " ".join(screen.split())
    assert SECRET not in screen
    assert console.exit() == 0


def test_ctrl_c_cancels_a_slow_call_and_keeps_the_console(console: Console, openai_server) -> None:
    console.run(f":lm openai/slow-delay-3000 api_base={openai_server.base_url} api_key=x", "✓ LM")
    console.run("slow = question -> answer", "✓ slow")
    console.send('slow(question="take your time")\r')
    console.wait_for("→ execute_program")
    time.sleep(0.5)
    started = time.monotonic()
    console.child.sendintr()
    console.wait_for("cancelled: execute_program")
    console.wait_for(PROMPT)
    console.run("ping", "uptime")
    # Back at work well before the 3 s call could have ended.
    assert time.monotonic() - started < 2.5
    assert console.child.isalive()
    assert console.exit() == 0


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_record_a_session_and_replay_it_with_dspex_replay(console: Console, home: Path, lm_args: dict) -> None:
    transcript = home / "session.jsonl"
    console.run(f":record {transcript}", "recording to")
    console.run(f":lm {lm_args['model']} api_base={lm_args['api_base']} api_key={lm_args['api_key']}", "✓ LM")
    console.run(":cot qa question -> answer", "✓ qa")
    console.run('qa(question="What is recorded?")', "reasoning:")
    console.run("list_programs", "programs in anonymous")
    console.run(":record off", "recording finished")
    assert console.exit() == 0
    text = transcript.read_text()
    assert SECRET not in text
    replay = subprocess.run([sys.executable, "-m", "dspex_cli", "replay", str(transcript)], capture_output=True,
                            text=True, env=worker_env(), cwd=str(ROOT), timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "1 passed" in replay.stdout
    # A changed recording must fail the replay: the comparison is real.
    transcript.write_text(text.replace('"status":"configured"', '"status":"changed"'))
    changed = subprocess.run([sys.executable, "-m", "dspex_cli", "replay", str(transcript)], capture_output=True,
                             text=True, env=worker_env(), cwd=str(ROOT), timeout=60)
    assert changed.returncode == 1


def test_history_search_with_ctrl_r_in_a_new_console(home: Path) -> None:
    first = Console(home)
    first.run("update_session_data key=colour value=blue", "updated")
    first.run("ping", "uptime")
    assert first.exit() == 0
    second = Console(home)
    second.child.sendcontrol("r")
    second.send("colour")
    second.wait_for("update_session_data key=colour value=blue")
    second.send("\r")  # accept the search result
    second.run("", '"status": "updated"')
    assert second.exit() == 0


def test_vi_key_bindings_from_the_config_file(home: Path) -> None:
    config = home / "config" / "dspex" / "repl.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[repl]\nkey_bindings = "vi"\n')
    console = Console(home)
    console.send("pong")
    console.send("\x1b")  # to normal mode; a lone Escape needs a pause to be read as one
    time.sleep(0.6)
    console.send("0cwping")
    console.send("\x1b")
    time.sleep(0.6)
    console.run("", "→ ping", "uptime")  # Enter in normal mode runs the edited line at once
    assert console.exit() == 0
