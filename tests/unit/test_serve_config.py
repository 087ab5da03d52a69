"""`dspex serve`'s one config reader (bridge/serve/config.py) and its one stdout guard."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from bridge.serve.config import ENVIRONMENT, ConfigError, ServeConfig, read_config, split_list
from fixtures import ROOT, worker_env


def test_defaults_without_flags_or_variables() -> None:
    config = read_config([], {})
    assert config == ServeConfig(adapter_options={"python": {"allow": []}})


def test_flags_win_over_their_variables() -> None:
    environ = {"DSPEX_RECORD": "/env/path", "DSPEX_LOG_LEVEL": "DEBUG", "DSPEX_ADAPTERS": "dspy"}
    assert read_config([], environ).record == "/env/path"
    assert read_config([], environ).log_level == "debug"
    assert read_config([], environ).adapters == ["dspy"]
    flagged = read_config(["--record", "/flag/path", "--log-level", "error", "--adapters", "tiny, other"], environ)
    assert (flagged.record, flagged.log_level, flagged.adapters) == ("/flag/path", "error", ["tiny", "other"])


def test_list_settings_take_flags_then_variables_each_once() -> None:
    config = read_config(["--plugin", "a", "--plugin", "b", "--allow", "math", "--allow", "numpy.*"],
                         {"DSPEX_PLUGINS": " b, c ,,", "DSPEX_ALLOW": "collections,math"})
    assert config.plugins == ["a", "b", "c"]
    assert config.adapter_options["python"] == {"allow": ["math", "numpy.*", "collections"]}


def test_allow_from_the_variable_alone() -> None:
    assert read_config([], {"DSPEX_ALLOW": "numpy,sklearn.*"}).adapter_options["python"]["allow"] == \
        ["numpy", "sklearn.*"]


def test_record_ignore_and_entry_point_adapters_are_read_here() -> None:
    config = read_config([], {"DSPEX_RECORD_IGNORE": "result.uptime, result.outputs.reasoning,,",
                              "DSPEX_ENTRY_POINT_ADAPTERS": "Yes"})
    assert config.record_ignore == ["result.uptime", "result.outputs.reasoning"]
    assert config.entry_point_adapters is True
    for word in ("", "0", "no", "off", "2"):
        assert read_config([], {"DSPEX_ENTRY_POINT_ADAPTERS": word}).entry_point_adapters is False


def test_in_process_engines_ignore_the_serve_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Only the serve config reads DSPEX_ALLOW, DSPEX_ENTRY_POINT_ADAPTERS and
    DSPEX_RECORD_IGNORE; an engine built in-process gets its values passed in."""
    import bridge.adapters as adapters_module
    from bridge.adapters.python import PythonAdapter
    from bridge.engine import Engine
    from bridge.record.recorder import Recorder

    monkeypatch.setenv("DSPEX_ALLOW", "math")
    monkeypatch.setenv("DSPEX_ENTRY_POINT_ADAPTERS", "1")
    monkeypatch.setenv("DSPEX_RECORD_IGNORE", "result.uptime")
    scans: list[int] = []
    monkeypatch.setattr(adapters_module, "_entry_point_factories", lambda: scans.append(1) or [])
    engine = Engine(adapters=[PythonAdapter()])
    try:
        assert not engine.adapter("python").allow
        assert engine.call("python.call", {"target": "math.sqrt", "args": [4]})["error_type"] == "not_allowed"
        assert PythonAdapter(allow=["math"]).allow.entries() == ["math"]
        adapters_module.default_adapters()
        assert scans == []
        adapters_module.default_adapters(entry_points=True)
        assert scans == [1]
        recorder = Recorder(engine, str(tmp_path / "t.jsonl"), subprocess_writer=False)
        recorder.close()
        header = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
        assert "result.uptime" not in json.dumps(header)
        recorder = Recorder(engine, str(tmp_path / "u.jsonl"), ignore=["result.uptime"], subprocess_writer=False)
        recorder.close()
        assert "result.uptime" in (tmp_path / "u.jsonl").read_text().splitlines()[0]
    finally:
        engine.close()


def test_replay_cassette_and_numbers() -> None:
    config = read_config(["--max-concurrency", "3", "--max-frame-size", "1024", "--drain-timeout", "0",
                          "--no-warm", "--no-control", "--mode", "pool-worker", "--worker-id", "w1"],
                         {"DSPEX_REPLAY_CASSETTE": "/tmp/c.jsonl"})
    assert (config.max_concurrency, config.max_frame_size, config.drain_timeout) == (3, 1024, 0.0)
    assert (config.warm, config.control, config.mode, config.worker_id) == (False, "off", "pool-worker", "w1")
    assert config.replay_cassette == "/tmp/c.jsonl"


@pytest.mark.parametrize("argv", [["--max-concurrency", "0"], ["--max-frame-size", "8"], ["--drain-timeout", "-1"],
                                  ["--recrod", "x"], ["--mode", "nope"]])
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        read_config(argv, {})
    assert exited.value.code == 2
    assert "dspex serve" in capsys.readouterr().err


def test_adapter_readers_fill_their_options_and_their_errors_are_config_errors() -> None:
    def reader(options: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
        if environ.get("BAD"):
            raise ValueError("the value of BAD is bad")
        return {"model": options.lm}

    assert read_config(["--lm", "mock"], {}, adapter_readers={"dspy": reader}).adapter_options["dspy"] == \
        {"model": "mock"}
    with pytest.raises(ConfigError, match="the value of BAD is bad"):
        read_config([], {"BAD": "1"}, adapter_readers={"dspy": reader})


def test_split_list() -> None:
    assert split_list(" a, b,,c ,") == ["a", "b", "c"] and split_list(None) == [] and split_list("") == []


def test_help_lists_every_variable_the_config_reads() -> None:
    result = subprocess.run([sys.executable, "-m", "dspex_cli", "serve", "--help"], cwd=ROOT,
                            env=worker_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    # --help is printed after the stdout guard: it reaches stderr, never the protocol's fd.
    assert result.stdout == ""
    for name in [*ENVIRONMENT, "DSPEX_LM", "--allow"]:
        assert name in result.stderr, name


def test_no_module_reads_the_serve_variables_but_the_config() -> None:
    """The one reader: no other module of bridge/ or dspex_cli/ looks these variables up."""
    offenders = []
    for path in sorted([*(ROOT / "bridge").rglob("*.py"), *(ROOT / "dspex_cli").rglob("*.py")]):
        if path == ROOT / "bridge" / "serve" / "config.py":
            continue
        text = path.read_text()
        for name in ("DSPEX_ADAPTERS", "DSPEX_ALLOW", "DSPEX_LOG_LEVEL", "DSPEX_RECORD_IGNORE",
                     "DSPEX_ENTRY_POINT_ADAPTERS"):
            for pattern in (f'environ.get("{name}"', f'environ["{name}"]', f"getenv(\"{name}\""):
                if pattern in text and not path.parts[-2] == "repl":  # the console has its own options
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_the_stdout_guard_moves_the_protocol_off_fd_1() -> None:
    # In a fresh interpreter: after the guard, print() and os.write(1) reach stderr and only
    # the returned fd reaches the original stdout.
    code = ("import os, sys\n"
            "from bridge.serve.stdio import protect_stdout\n"
            "fd = protect_stdout()\n"
            "print('stray print'); sys.stdout.flush(); os.write(1, b'stray write\\n')\n"
            "os.write(fd, b'FRAME')\n"
            "assert not os.get_inheritable(fd)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"FRAME"
    assert b"stray print" in result.stderr and b"stray write" in result.stderr
