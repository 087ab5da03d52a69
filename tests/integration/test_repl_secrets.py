"""Secrets in the console (issue 10.2): masked echo, redacted history, private files,
keys from the environment or typed unseen, and spawned-worker logs that do not pile up."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_repl_pipe import repl_env, replies, run_repl
from test_repl_terminal import PROMPT, Console, console_env

from dspex_cli.repl.config import prune_worker_logs, secure_state_dir
from dspex_cli.repl.secrets import mask_args, redact_line, resolve_secret_args
from dspex_cli.repl.parsing import ParseError

TYPED_KEY = "sk-typed-unseen-7788990011"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_redact_line_removes_values_of_secret_arguments_only() -> None:
    line = redact_line(":lm openai/x api_key=plain-value-42 api_base=http://127.0.0.1:9/v1")
    assert "plain-value-42" not in line and "api_base=http://127.0.0.1:9/v1" in line
    assert redact_line(":lm openai/x api_key=$OPENAI_API_KEY") == ":lm openai/x api_key=$OPENAI_API_KEY"
    pasted = redact_line('configure_lm {"model": "m", "api_key": "other-plain-1"}')
    assert "other-plain-1" not in pasted and json.loads(pasted.split(" ", 1)[1])["model"] == "m"
    # Program inputs named like secrets are the user's data, kept as typed.
    assert redact_line('qa(keywords="alpha beta")') == 'qa(keywords="alpha beta")'


def test_env_reference_resolves_and_a_missing_variable_is_a_clear_error() -> None:
    args = resolve_secret_args({"model": "m", "api_key": "$MY_KEY", "inputs": {"api_key": "$MY_KEY"}},
                               environ={"MY_KEY": "from-env-123"})
    assert args["api_key"] == "from-env-123"
    assert args["inputs"] == {"api_key": "$MY_KEY"}  # nested values are data, never looked up
    with pytest.raises(ParseError, match="MISSING_VAR is not set"):
        resolve_secret_args({"api_key": "${MISSING_VAR}"}, environ={})
    assert mask_args({"model": "m", "api_key": "from-env-123"})["api_key"] != "from-env-123"


def test_pipe_reads_the_key_from_the_environment_and_never_stores_it(tmp_path: Path, openai_server) -> None:
    script = (f":lm openai/local-model api_base={openai_server.base_url} api_key=$REPL_TEST_KEY\n"
              "qa = question -> answer\n"
              'qa(question="hello")\n'
              ":lm openai/other api_key=$NOT_SET_ANYWHERE\n")
    result = run_repl(tmp_path, script, REPL_TEST_KEY=TYPED_KEY)
    out = replies(result)
    assert out[0]["success"] and out[2]["success"], result.stdout
    assert out[3] == {"success": False, "error": "api_key: environment variable NOT_SET_ANYWHERE is not set",
                      "error_type": "parse_error", "suggestion": out[3]["suggestion"]}
    # The real HTTP call carried the key read from the environment.
    assert any(r["authorization"] == f"Bearer {TYPED_KEY}" for r in openai_server.requests)
    assert TYPED_KEY not in result.stdout + result.stderr


def test_pipe_key_flag_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(exist_ok=True, mode=0o700)
    # start_new_session: no controlling terminal, so /dev/tty cannot be opened.
    result = subprocess.run([sys.executable, "-m", "dspex_cli", "repl"], input=":lm openai/x --key\nping\n",
                            capture_output=True, text=True, env=repl_env(tmp_path), cwd=str(tmp_path),
                            timeout=60, start_new_session=True)
    out = replies(result)
    assert out[0]["success"] is False and "--key needs a terminal" in out[0]["error"]
    assert out[1]["result"]["status"] == "ok"  # the script's next line was not eaten as a key
    assert result.returncode == 1


def test_state_dir_and_history_become_private(tmp_path: Path) -> None:
    state = tmp_path / "state" / "dspex"
    state.mkdir(parents=True, mode=0o755)
    state.chmod(0o755)
    history = state / "repl_history"
    history.write_text("\n# 2026-01-01 00:00:00\n+:lm openai/x api_key=old-plain-secret-99\n")
    history.chmod(0o644)
    secure_state_dir(state)
    assert _mode(state) == 0o700 and _mode(history) == 0o600


def test_prune_keeps_the_newest_worker_logs(tmp_path: Path) -> None:
    for number in range(9):
        log = tmp_path / f"spawned-worker-{1000 + number}.log"
        log.write_text("x")
        os.utime(log, (1_700_000_000 + number, 1_700_000_000 + number))
    (tmp_path / "repl_history").write_text("")
    deleted = prune_worker_logs(tmp_path, keep=5)
    assert len(deleted) == 4
    left = sorted(p.name for p in tmp_path.glob("spawned-worker-*.log"))
    assert left == [f"spawned-worker-{1000 + n}.log" for n in range(4, 9)]
    assert (tmp_path / "repl_history").exists()


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_spawned_consoles_leave_at_most_five_logs(tmp_path: Path) -> None:
    spawn = f"{sys.executable} -m dspex_cli serve --no-control"
    for _ in range(7):
        result = run_repl(tmp_path, "ping\n", "--spawn", spawn)
        assert result.returncode == 0, result.stderr
    logs = list((tmp_path / "home" / "state" / "dspex").glob("spawned-worker-*.log"))
    assert 1 <= len(logs) <= 5
    assert all(_mode(log) == 0o600 for log in logs)


def test_terminal_masks_the_key_and_the_history_file_never_holds_it(tmp_path: Path, lm_args: dict) -> None:
    home = tmp_path / "home"
    state = home / "state" / "dspex"
    state.mkdir(parents=True)
    state.chmod(0o755)
    old = state / "repl_history"
    old.write_text("\n# 2026-01-01 00:00:00\n+:lm openai/x api_key=old-plain-secret-99\n")
    old.chmod(0o644)
    console = Console(home)
    try:
        assert _mode(state) == 0o700 and _mode(old) == 0o600
        assert "old-plain-secret-99" not in old.read_text()  # an older, unredacted history is cleaned
        secret = lm_args["api_key"]
        screen = console.run(f":lm {lm_args['model']} api_base={lm_args['api_base']} api_key={secret}",
                             "✓ LM openai/local-model")
        echo = screen[screen.index("→ configure_lm"):]
        assert secret not in echo and 'api_key="[REDACTED]"' in echo
        # Up recalls the redacted line; sending it is refused with a way out, not a wrong key.
        console.send("\x1b[A")
        console.run("", "this line came from the history")
        # Raw JSON mode masks the request it shows the same way.
        console.run(":json on", "json on")
        screen = console.run(f'configure_lm {{"model": "openai/y", "api_key": "{secret}"}}', '"success": true')
        raw = screen[screen.index("→ {"):]
        assert secret not in raw and '"api_key": "[REDACTED]"' in raw
        assert console.exit() == 0
    finally:
        if console.child.isalive():
            console.child.terminate(force=True)
    text = old.read_text()
    assert secret not in text and "api_key='[REDACTED]'" in text
    assert _mode(old) == 0o600


def test_terminal_key_flag_prompts_without_echo(tmp_path: Path, openai_server) -> None:
    home = tmp_path / "home"
    home.mkdir()
    console = Console(home)
    try:
        console.send(f":lm openai/local-model api_base={openai_server.base_url} --key\r")
        console.wait_for("API key for openai/local-model:")
        console.send(TYPED_KEY + "\r")
        screen = console.wait_for(PROMPT)
        assert "✓ LM openai/local-model" in screen
        assert TYPED_KEY not in console.screen()  # neither as typed nor in the echo line
        console.run("qa = question -> answer", "✓ qa")
        console.run('qa(question="who holds the key?")', "╭─ qa")
        assert console.exit() == 0
    finally:
        if console.child.isalive():
            console.child.terminate(force=True)
    assert any(r["authorization"] == f"Bearer {TYPED_KEY}" for r in openai_server.requests)
    history = (home / "state" / "dspex" / "repl_history").read_text()
    assert TYPED_KEY not in history and "--key" in history



def test_pipe_key_flag_asks_on_the_terminal_without_echo(tmp_path: Path, openai_server) -> None:
    import pexpect

    home = tmp_path / "home"
    home.mkdir()
    script = (f":lm openai/local-model api_base={openai_server.base_url} --key\\n"
              "qa = question -> answer\\nqa(question=\\\"hi\\\")\\n")
    # The script comes through a pipe; the key from the terminal the pipe runs on.
    child = pexpect.spawn("bash", ["-c", f'printf "{script}" | {sys.executable} -m dspex_cli repl'],
                          env=console_env(home), cwd=str(tmp_path), encoding="utf-8", timeout=60)
    try:
        child.expect("API key for openai/local-model: ")
        child.sendline(TYPED_KEY)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    lines = [line for line in (child.before or "").splitlines() if line.startswith("{")]
    configured, created, executed = (json.loads(line) for line in lines)
    assert configured["success"] and executed["success"], lines
    assert TYPED_KEY not in (child.before or "")  # getpass did not echo it
    assert any(r["authorization"] == f"Bearer {TYPED_KEY}" for r in openai_server.requests)
    assert child.exitstatus == 0
