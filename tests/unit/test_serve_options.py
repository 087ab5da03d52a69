"""`dspex serve`'s options are one table (bridge/serve/options.py) read two ways: by argparse
and by a short path that skips argparse's import for a pool's plain command lines. Whenever
the short path answers, it must answer what argparse answers."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.serve.options import SERVE_OPTIONS, build_parser, parse_common

ROOT = Path(__file__).resolve().parents[2]

FLAGS = [option.flag for option in SERVE_OPTIONS]
# Values of every kind the options take, and of kinds they refuse or read specially.
VALUES = ["pool-worker", "standalone", "on", "off", "read-only", "w1", "openai/gpt-4o-mini", "3", "0", "-1",
          "+7", " 5", "2.5", "nan", "1e3", "x", "", "-", "--", "-5", "--lm", "a=b", "127.0.0.1:9100", "é"]
NEAR_MISSES = ["--mod", "--worker", "--help", "-h", "--", "-m", "pool-worker", "--no-warm=1", "--plugin="]


def argparse_reading(argv: list[str]) -> dict[str, Any] | None:
    """argparse's reading of argv, or None where it refuses it (it exits 2)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(build_parser().parse_args(argv))
    except SystemExit:  # refused (2), or --help printed (0)
        return None


token = st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES), st.sampled_from(NEAR_MISSES),
                  st.builds(lambda flag, value: f"{flag}={value}", st.sampled_from(FLAGS), st.sampled_from(VALUES)))




def plausible(option: Any) -> st.SearchStrategy[list[str]]:
    """One option as a pool would write it (so the short path gets to answer), now and then
    with a value of the wrong kind."""
    if not option.takes_value():
        return st.just([option.flag])
    if option.choices is not None:
        good = st.sampled_from(list(option.choices))
    elif option.type is int:
        good = st.integers(0, 10**6).map(str)
    elif option.type is float:
        good = st.floats(0, 1e6, allow_nan=False).map(repr)
    else:
        good = st.text("abcdefghijklmnopqrstuvwxyz0123456789/._:-", min_size=1, max_size=12)
    value = st.one_of(good, good, good, st.sampled_from(VALUES))
    return st.one_of(value.map(lambda text: [option.flag, text]), value.map(lambda text: [f"{option.flag}={text}"]))


command_lines = st.one_of(
    st.lists(token, max_size=8),
    st.lists(st.one_of(*[plausible(option) for option in SERVE_OPTIONS]), max_size=6).map(
        lambda parts: [word for part in parts for word in part]),
)


@settings(max_examples=600, deadline=None)
@given(argv=command_lines)
def test_the_short_path_reads_what_argparse_reads_or_leaves_it_to_argparse(argv: list[str]) -> None:
    quick = parse_common(argv)
    if quick is not None:
        # Compared by repr: `--drain-timeout nan` reads as NaN both ways, and NaN != NaN.
        assert repr(vars(quick)) == repr(argparse_reading(argv)), argv


@pytest.mark.parametrize("argv", [
    [],
    ["--mode", "pool-worker"],
    ["--mode=pool-worker", "--worker-id", "w1", "--no-warm", "--control", "off"],
    ["--plugin", "a", "--plugin=b", "--allow", "math", "--max-concurrency", "8", "--drain-timeout", "2.5"],
    ["--no-control", "--control", "read-only", "--lm", "openai/gpt-4o-mini", "--record", "/tmp/t.jsonl"],
])
def test_a_pool_s_command_lines_take_the_short_path(argv: list[str]) -> None:
    quick = parse_common(argv)
    assert quick is not None and vars(quick) == argparse_reading(argv)


def test_a_fresh_list_per_reading() -> None:
    first = parse_common(["--plugin", "a"])
    second = parse_common([])
    assert first is not None and second is not None
    assert first.plugin == ["a"] and second.plugin == [] and second.allow == []


def test_a_worker_started_the_usual_way_never_imports_argparse() -> None:
    code = ("import sys; from bridge.serve.config import read_config; "
            "config = read_config(['--mode', 'pool-worker', '--worker-id', 'w1'], {}); "
            "assert config.mode == 'pool-worker' and config.worker_id == 'w1'; "
            "print(sorted(name for name in ('argparse', 'gettext', 'locale') if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_argparse_still_speaks_for_what_the_short_path_leaves(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.serve.config import read_config

    with pytest.raises(SystemExit) as exited:
        read_config(["--recrod", "x"], {})
    assert exited.value.code == 2
    assert "did you mean --record?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        read_config(["--drain-timeout", "-1"], {})  # parsed by argparse (a dash), refused after
    assert exited.value.code == 2
    assert "--drain-timeout must not be negative" in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert all(flag in help_text for flag in FLAGS)
