"""Drives one real `dspex serve` subprocess with fuzz inputs and checks every promise.

Inputs go out in batches, each batch split into writes of random sizes, while a reader
thread keeps every byte of stdout. After each batch a ping must be answered within 5 s,
then every reply the batch owes must have arrived; at the end the whole stdout stream
must parse as well-formed reply frames, each id answered as often as the oracle says.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .generator import FuzzInput, frame
from .oracle import Expectations, id_key, parse_reply_stream

ROOT = Path(__file__).resolve().parents[2]
PING_DEADLINE = 5.0
# Scheduled work (DSPy program builds, mock LM calls) may finish after the ping: a batch's
# replies get this long, in total, after its ping was answered.
REPLIES_DEADLINE = 30.0


class FuzzFailure(AssertionError):
    """A broken promise, with what is needed to reproduce it."""


class FuzzWorker:
    """One `dspex serve` subprocess, its stdout gathered by a thread."""

    def __init__(self, *args: str, stderr_path: Path, env: dict[str, str] | None = None) -> None:
        self.stderr_file = open(stderr_path, "wb")
        self.stderr_path = stderr_path
        self.process = subprocess.Popen([sys.executable, "-m", "dspex_cli", "serve", "--no-control", *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                        env=env, cwd=str(ROOT), bufsize=0)
        self.output = bytearray()  # stdout bytes not yet parsed into replies
        self.got: Counter = Counter()  # replies received, by id
        self.problem: str | None = None  # the first malformed thing on stdout
        self.eof = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.expects = Expectations()
        self.pings = 0

    def _read(self) -> None:
        fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        while True:
            chunk = os.read(fd, 1 << 20)
            with self.changed:
                if not chunk:
                    self.eof = True
                    if self.output and not self.problem:
                        self.problem = f"stdout ends inside a frame ({len(self.output)} bytes left)"
                    self.changed.notify_all()
                    return
                self.output += chunk
                # Parse whole frames only; a partial one waits for its next chunk.
                end = _whole_frames_end(self.output)
                if end:
                    replies, problem = parse_reply_stream(bytes(self.output[:end]))
                    del self.output[:end]
                    self.got.update(id_key(r["id"]) for r in replies)
                    self.problem = self.problem or problem
                self.changed.notify_all()

    def write(self, data: bytes, rng: random.Random | None = None) -> None:
        """Writes data whole, or in random pieces from 1 byte to 64 KiB."""
        stdin = self.process.stdin
        assert stdin is not None
        view = memoryview(data)
        while view:
            size = len(view) if rng is None else rng.choice([1, 3, 7, 64, 1000, 4096, 65536, len(view)])
            stdin.write(view[:size])
            view = view[size:]

    def wait_for(self, keys: Counter, deadline: float) -> Counter:
        """Waits until every key in `keys` has at least its count of replies; returns what is missing."""
        with self.changed:
            while True:
                missing = Counter({k: n - self.got[k] for k, n in keys.items() if self.got[k] < n})
                if not missing or self.eof or self.problem or time.monotonic() > deadline:
                    return missing
                self.changed.wait(0.05)

    def ping(self) -> float:
        """Sends a ping with a fresh string id; its round trip in seconds, or raises."""
        self.pings += 1
        key = f"fuzz-ping-{self.pings}"
        started = time.monotonic()
        self.write(frame(json.dumps({"id": key, "command": "ping", "args": {}}).encode()))
        self.expects.required[id_key(key)] += 1
        missing = self.wait_for(Counter({id_key(key): 1}), started + PING_DEADLINE)
        if missing:
            state = "exited with %s" % self.process.poll() if self.process.poll() is not None else "alive"
            raise FuzzFailure(f"ping not answered within {PING_DEADLINE:.0f} s (worker {state})")
        return time.monotonic() - started

    def run_batch(self, inputs: list[FuzzInput], rng: random.Random) -> None:
        """Sends a batch, then checks the worker lives, answers a ping and owes nothing."""
        batch = Expectations()
        for item in inputs:
            batch.add(item.expects)
        # A worker that stops reading would block this write forever: kill it instead.
        watchdog = threading.Timer(60.0, self.process.kill)
        watchdog.start()
        try:
            self.write(b"".join(item.data for item in inputs), rng)
        except BrokenPipeError:
            raise FuzzFailure(f"worker closed its input (exit {self.process.wait(5)})") from None
        finally:
            watchdog.cancel()
        self.ping()
        missing = self.wait_for(batch.required, time.monotonic() + REPLIES_DEADLINE)
        if missing:
            raise FuzzFailure(f"no reply for {len(missing)} id(s), e.g. {list(missing)[:3]}")
        self.expects.add(batch)
        self.check_stream()

    def check_stream(self) -> None:
        """The whole of stdout so far: frames only, each id answered as the oracle allows."""
        with self.changed:
            problem = self.problem
            got = Counter(self.got)
        if problem:
            raise FuzzFailure(problem)
        for key, count in got.items():
            limit = self.expects.required[key] + self.expects.allowed[key]
            if count > limit:
                what = "a reply for an id no request carried" if not limit else f"{count} replies, at most {limit} owed"
                raise FuzzFailure(f"{what}: id {key[1]!r} ({key[0]})")

    def close(self, timeout: float = 20.0) -> int:
        """Closes stdin; the exit status (the worker must leave by itself)."""
        try:
            self.process.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -999
        self.reader.join(5)
        self.stderr_file.close()
        return code

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _whole_frames_end(data: bytearray) -> int:
    """Where the last whole frame in data ends."""
    pos = 0
    while len(data) - pos >= 4:
        length = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 4 + length > len(data):
            break
        pos += 4 + length
    return pos
