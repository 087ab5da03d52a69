"""Starting the transcript writer process: its command line and environment.

Kept apart from `writer` so the worker never imports the writer's module (which runs as
`__main__` in its own process) and the writer never imports the recorder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The writer process's module, run as `python -m WRITER_MODULE PATH WORKER_PID`.
WRITER_MODULE = "bridge.record.writer"


def writer_env() -> dict[str, str]:
    """The writer process imports this package from wherever the worker did."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("DSPEX_RECORD", "DSPEX_REPLAY_CASSETTE", "DSPEX_PLUGINS"):
        env.pop(name, None)
    return env


def spawn_writer(path: str) -> subprocess.Popen[bytes]:
    """The writer process for transcript `path`, reading records on its stdin; it is told
    this worker's pid so it can tell the worker's death from a signal to the group."""
    return subprocess.Popen([sys.executable, "-m", WRITER_MODULE, path, str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True, env=writer_env())


__all__ = ["WRITER_MODULE", "spawn_writer", "writer_env"]
