"""The lazy DSPy loader, checked in fresh interpreters so no other test has imported DSPy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
