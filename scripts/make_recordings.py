"""Regenerates recordings/: a real Elixir client drives `dspex serve --record`.

The LM behind the recordings is the local OpenAI-compatible test server
(tests/openai_server.py), reached through DSPy's real HTTP path, so every cassette
holds genuine HTTP responses. Each new transcript must replay cleanly and must not
contain the API key used while recording before it replaces the old one.

    python scripts/make_recordings.py [--out recordings] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from openai_server import LocalOpenAIServer  # noqa: E402

from bridge.replay import replay_transcript  # noqa: E402

SCRIPT = ROOT / "tests" / "elixir" / "record_sessions.exs"
# Looks like a real key so the scrubbers' shape rules are exercised too.
RECORDING_API_KEY = "sk-recording-do-not-leak-4f9a2c"


def record(out_dir: Path, scenarios: list[str], api_key: str = RECORDING_API_KEY) -> list[Path]:
    """Runs the Elixir recorder into out_dir and returns the transcripts it wrote."""
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SystemExit("make_recordings: the `elixir` command is missing (apt-get install elixir erlang-jiffy)")
    server = LocalOpenAIServer().start()
    try:
        env = dict(os.environ)
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        for name in ("OPENAI_API_KEY", "DSPEX_RECORD", "DSPEX_REPLAY_CASSETTE"):
            env.pop(name, None)
        completed = subprocess.run(
            [elixir, str(SCRIPT), str(out_dir), server.base_url, sys.executable, str(ROOT), api_key, *scenarios],
            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"make_recordings: the Elixir client failed (exit {completed.returncode})")
    return [Path(line.split(" -> ", 1)[1].strip()) for line in completed.stdout.splitlines()
            if line.startswith("recorded ")]


def check(path: Path, api_key: str) -> None:
    """A new transcript must hold no key and must replay without a difference."""
    data = path.read_bytes()
    if api_key.encode() in data:
        raise SystemExit(f"make_recordings: {path} contains the API key; not keeping it")
    result = replay_transcript(str(path))
    if not result.ok:
        details = "; ".join(f"{m.request_id} {m.path}: {m.expected!r} != {m.actual!r}" for m in result.mismatches[:5])
        raise SystemExit(f"make_recordings: {path} does not replay cleanly: {result.error or details}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "recordings"), help="where the transcripts go")
    parser.add_argument("scenarios", nargs="*", help="only these scenarios (default: all)")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dspex-recordings-") as staging:
        paths = record(Path(staging), options.scenarios)
        for path in paths:
            check(path, RECORDING_API_KEY)
        for path in paths:
            shutil.move(str(path), out / path.name)
            print(f"wrote {out / path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
