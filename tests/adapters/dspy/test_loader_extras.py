"""What the DSPy import leaves out of a worker (loader._OPTIONAL_EXTRAS), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from fixtures import ROOT, worker_env

PROBE = """
import json, sys
from bridge.adapters.dspy.loader import load_dspy
load_dspy()
import requests.compat, requests.models
body = requests.models.Response()
body._content = "caf\\u00e9".encode()
print(json.dumps({"loaded": sorted(m for m in ("IPython", "charset_normalizer", "chardet") if m in sys.modules),
                  "guesser": requests.compat.chardet is None, "text": body.text}))
"""


def test_dspy_imports_without_notebook_display_or_charset_guessers_and_says_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                          cwd=str(ROOT), env=worker_env())
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == {"loaded": [], "guesser": True, "text": "café"}  # a body without charset: UTF-8
    assert "character detection" not in done.stderr
