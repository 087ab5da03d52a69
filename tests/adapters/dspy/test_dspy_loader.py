"""The lazy DSPy loader, checked in fresh interpreters so no other test has imported DSPy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixtures import ROOT  # noqa: E402


def _run(code: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_available_does_not_import() -> None:
    _run("import sys\n"
         "from bridge.adapters.dspy import loader as d\n"
         "assert d.dspy_available() is True and d.dspy_available() is True\n"
         "assert 'dspy' not in sys.modules and not d.is_loaded()\n")


def test_load_sets_cost_map_env_and_caches() -> None:
    result = _run("import os, sys\n"
                  "os.environ.pop('LITELLM_LOCAL_MODEL_COST_MAP', None)\n"
                  "from bridge.adapters.dspy import loader as d\n"
                  "m = d.load_dspy()\n"
                  "assert m is sys.modules['dspy'] and d.load_dspy() is m and d.is_loaded()\n"
                  "assert os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] == 'True'\n"
                  "assert m.settings.lm is None  # never configured\n")
    assert result.stdout == ""


def test_existing_env_value_is_respected() -> None:
    _run("import os\n"
         "os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'False'\n"
         "from bridge.adapters.dspy import loader as d\n"
         "d.load_dspy()\n"
         "assert os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] == 'False'\n")


def test_warm_in_background_and_concurrent_loads() -> None:
    _run("import threading\n"
         "from bridge.adapters.dspy import loader as d\n"
         "t = d.warm_in_background()\n"
         "assert t.daemon and t.name == 'dspex-dspy-warmup'\n"
         "results = []\n"
         "threads = [threading.Thread(target=lambda: results.append(d.load_dspy())) for _ in range(8)]\n"
         "[x.start() for x in threads]; [x.join() for x in threads]; t.join(60)\n"
         "assert d.is_loaded() and len({id(m) for m in results}) == 1\n")


def test_missing_dspy_is_reported() -> None:
    _run("import sys\n"
         "sys.modules['dspy'] = None  # makes `import dspy` fail\n"
         "from bridge.adapters.dspy import loader as d\n"
         "try:\n"
         "    d.load_dspy()\n"
         "except d.DSPyUnavailableError as e:\n"
         "    assert e.error_type == 'dspy_unavailable' and isinstance(e, ImportError)\n"
         "else:\n"
         "    raise SystemExit('no error')\n"
         "d.warm_in_background().join(10)  # logs, does not raise\n"
         "assert not d.is_loaded()\n")


def test_warm_up_steps_aside_while_frames_arrive_and_still_finishes() -> None:
    # A probe saying "a frame just arrived" every time: the warm-up pauses before modules,
    # but its total pause is bounded, so the import still completes and the finder is gone.
    _run("import sys, time\n"
         "from bridge.adapters.dspy import loader as d\n"
         "d.TOTAL_PAUSE_SECONDS = 0.3\n"
         "probes = []\n"
         "def busy():\n"
         "    probes.append(1)\n"
         "    return time.monotonic()\n"
         "started = time.monotonic()\n"
         "d.warm_in_background(busy).join(60)\n"
         "assert d.is_loaded(), 'warm-up did not finish'\n"
         "assert len(probes) > 10, probes\n"
         "assert time.monotonic() - started >= 0.3  # it did step aside, for its whole budget\n"
         "assert not any(type(f).__name__ == '_Yielding' for f in sys.meta_path)\n")


def test_a_request_needing_dspy_is_not_held_back_by_the_warm_up() -> None:
    # Pauses that would last for hours if nothing stopped them: a load_dspy() from another
    # thread (a request that needs DSPy) makes the warm-up import at full speed.
    _run("import time\n"
         "from bridge.adapters.dspy import loader as d\n"
         "d.TOTAL_PAUSE_SECONDS = 10_000.0\n"
         "warm = d.warm_in_background(time.monotonic)\n"
         "time.sleep(0.2)\n"
         "assert not d.is_loaded()  # still stepping aside\n"
         "d.load_dspy()\n"
         "assert d.is_loaded(); warm.join(30); assert not warm.is_alive()\n")


def test_a_failing_activity_probe_does_not_break_the_import() -> None:
    _run("from bridge.adapters.dspy import loader as d\n"
         "def broken():\n"
         "    raise IndexError('deque emptied under us')\n"
         "d.warm_in_background(broken).join(60)\n"
         "assert d.is_loaded()\n")
