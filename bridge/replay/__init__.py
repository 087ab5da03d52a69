"""Replay: send a transcript's recorded requests again and compare every reply.

The package, by job:
  runner.py    the order requests are sent in, and `replay_transcript`, the entry point;
  compare.py   what counts as the same reply (varying keys, generated ids, ignore paths);
  cassette.py  recorded LM answers given back instead of the network;
  targets.py   where requests go (an engine, a submit function, a spawned worker), shared
               with the REPL's `--spawn` target;
  inbox.py     replies arriving from any thread;
  update.py    `--update`, writing the replies seen now back into the file;
  results.py   `Mismatch` and `ReplayResult`.
"""

from __future__ import annotations

from .cassette import Cassette, CassetteMiss, install_cassette, load_cassette
from .compare import VARYING_KEYS, Comparer, IgnoreRules, parse_ignore_path
from .results import Mismatch, ReplayResult
from .runner import DEFAULT_REPLY_TIMEOUT, drop_redacted, replay_transcript
from .targets import (CASSETTE_ENV, CallerRunsExecutor, SpawnedWorker, WorkerStartFailed, expand_worker_argv,
                      replay_worker_env)

__all__ = ["CASSETTE_ENV", "DEFAULT_REPLY_TIMEOUT", "CallerRunsExecutor", "Cassette", "CassetteMiss", "Comparer",
           "IgnoreRules", "Mismatch", "ReplayResult", "SpawnedWorker", "VARYING_KEYS", "WorkerStartFailed",
           "drop_redacted", "expand_worker_argv", "install_cassette", "load_cassette", "parse_ignore_path",
           "replay_transcript", "replay_worker_env"]
