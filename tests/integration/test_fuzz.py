"""Fuzzing `dspex serve` (issue 9, "make it stay fixed"): malformed and hostile frames
through real worker subprocesses. See docs/fuzzing.md; DSPEX_FUZZ_INPUTS and
DSPEX_FUZZ_SEED make long or repeated runs."""

from __future__ import annotations

import json
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures import worker_env
from fuzz.generator import FuzzInput, Generator, frame
from fuzz.harness import FuzzFailure, FuzzWorker
from fuzz.oracle import Expectations, ReferenceFramer, frame_expectations

MAX_FRAME = 32768
DEFAULT_INPUTS = 50_000
BATCH = 500
SEED = int(os.environ.get("DSPEX_FUZZ_SEED", "20240917"))
INPUTS = int(os.environ.get("DSPEX_FUZZ_INPUTS", str(DEFAULT_INPUTS)))
WORKER_ARGS = ("--no-warm", "--max-frame-size", str(MAX_FRAME), "--log-level", "error")


def corpus_input(kind: str, data: bytes) -> FuzzInput:
    framer = ReferenceFramer(MAX_FRAME)
    expects = Expectations()
    for payload in framer.feed(data):
        if payload is not None:
            expects.add(frame_expectations(payload))
    assert not framer.buffer and not framer.skip, kind
    return FuzzInput(kind, data, expects)


def _req(text: str) -> bytes:
    return frame(text.encode())


# Inputs that broke the worker once (issue 9) or that a fuzz run found: every run sends them.
CORPUS = [
    corpus_input("9.1 command is an array", b'\x00\x00\x00\x15{"id":1,"command":[]}'),
    corpus_input("9.1 command is an object", _req('{"id":2,"command":{}}')),
    corpus_input("9.1 command is a list of a name", _req('{"id":3,"command":["ping"]}')),
    corpus_input("9.1 command is a number", _req('{"id":4,"command":5}')),
    corpus_input("9.1 command is null", _req('{"id":5,"command":null}')),
    corpus_input("9.2 salvaged id below -2^63", _req('{"id": -9223372036854775809, "command": "ping"')),
    corpus_input("9.2 salvaged id above 2^64", _req('{"id": 18446744073709551617, "command": "ping"')),
    corpus_input("9.3 id beyond 64 bits", _req('{"id":1180591620717411303425,"command":"ping","args":{}}')),
    corpus_input("9.3 id below -2^63", _req('{"id":-9223372036854775810,"command":"ping"}')),
    corpus_input("9.3 id 10^30", _req('{"id":1000000000000000000000000000000,"command":"ping"}')),
    corpus_input("9.5 long unknown command", _req(json.dumps({"id": 6, "command": "x" * 30000}))),
    corpus_input("int id, 1e999 in args", _req('{"id":7,"command":"ping","args":{"x":1e999}}')),
    corpus_input("id 1e999", _req('{"id":1e999,"command":"ping"}')),
    corpus_input("10,000 nested lists", _req('{"id":8,"command":"ping","args":{"x":' + "[" * 10000 + "]" * 10000 + "}}")),
    corpus_input("field named self", _req(json.dumps({"id": 9, "command": "create_program", "args": {
        "id": "self_prog", "signature": {"inputs": [{"name": "self"}], "outputs": [{"name": "answer"}]}}}))),
    corpus_input("oversized then a ping", struct.pack(">I", MAX_FRAME + 1) + b" " * (MAX_FRAME + 1)
                 + _req('{"id":10,"command":"ping"}')),
    corpus_input("zero-length frame", b"\x00\x00\x00\x00"),
    corpus_input("23-digit id, 1e999 as args", _req('{"id":10000000000000000000000,"command":"ping","args":1e999}')),
    # Found by this fuzzer (then fixed): an id of any type answered when orjson refuses a
    # number, and a secret-looking id echoed exactly.
    corpus_input("string id, 1e999 in args", _req('{"id":"inf-args","command":"ping","args":{"x":1e999}}')),
    corpus_input("secret scrubber and the echoed id",
                 _req('{"id":"k1","command":"configure_lm","args":{"model":"mock","api_key":"%s%n-long-enough"}}')
                 + _req('{"id":"x:%s%n-long-enough","command":"configure_lm","args":{"model":"mock","session_id":"s1"}}')),
]


@pytest.fixture
def fuzz_worker(tmp_path: Path) -> Iterator[Callable[..., FuzzWorker]]:
    workers: list[FuzzWorker] = []

    def spawn(*args: str) -> FuzzWorker:
        worker = FuzzWorker(*args, stderr_path=tmp_path / f"fuzz-{len(workers)}.stderr", env=worker_env())
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        if worker.process.poll() is None:
            worker.close()


def _mock_lm(worker: FuzzWorker) -> None:
    # Programs the fuzzer creates run on the offline mock LM (never the network).
    worker.write(frame(b'{"id":"setup-lm","command":"configure_lm","args":{"model":"mock"}}'))
    worker.expects.required[("str", "setup-lm")] += 1
    assert not worker.wait_for(worker.expects.required, time.monotonic() + 30)


def _culprit(inputs: list[FuzzInput], spawn: Callable[..., FuzzWorker], args: tuple[str, ...]) -> FuzzInput | None:
    """Bisects a failing batch on fresh workers down to one input that fails alone."""
    rng = random.Random(0)
    candidates = inputs
    while len(candidates) > 1:
        half = candidates[: len(candidates) // 2]
        if _fails(half, spawn, args, rng):
            candidates = half
        else:
            rest = candidates[len(candidates) // 2:]
            if not _fails(rest, spawn, args, rng):
                return None  # needs inputs from both halves: the batch itself is the reproducer
            candidates = rest
    return candidates[0] if candidates and _fails(candidates, spawn, args, rng) else None


def _fails(inputs: list[FuzzInput], spawn: Callable[..., FuzzWorker], args: tuple[str, ...],
           rng: random.Random) -> bool:
    worker = spawn(*args)
    try:
        _mock_lm(worker)
        worker.run_batch(inputs, rng)
        return False
    except (FuzzFailure, AssertionError):
        return True
    finally:
        worker.close(5)


def _fail(message: str, batch: list[FuzzInput], spawn: Callable[..., FuzzWorker], args: tuple[str, ...],
          worker: FuzzWorker, tmp_path: Path) -> None:
    culprit = _culprit(batch, spawn, args)
    reproducer = tmp_path / "fuzz-reproducer.bin"
    reproducer.write_bytes(culprit.data if culprit else b"".join(i.data for i in batch))
    shown = culprit.describe() if culprit else f"(no single input fails alone; whole batch of {len(batch)})"
    pytest.fail(f"{message}\nDSPEX_FUZZ_SEED={SEED}\nminimal input: {shown}\nbytes written to {reproducer}\n"
                f"worker stderr (tail):\n{worker.stderr_tail()}", pytrace=False)


def test_fixed_corpus_one_input_at_a_time(fuzz_worker: Callable[..., FuzzWorker]) -> None:
    """Each regression input alone, then a ping: the worker lives and answers as owed."""
    failures = []
    worker = fuzz_worker(*WORKER_ARGS)
    for item in CORPUS:
        try:
            worker.run_batch([item], random.Random(1))
        except FuzzFailure as exc:
            failures.append(f"{item.kind}: {exc}")
            # A fresh worker: one crash must not hide what the next input does.
            worker.process.kill()
            worker.close()
            worker = fuzz_worker(*WORKER_ARGS)
    assert not failures, "\n".join(failures)
    assert worker.close() == 0


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_fuzz_one_worker(fuzz_worker: Callable[..., FuzzWorker], tmp_path: Path) -> None:
    """INPUTS generated inputs through ONE worker, in batches split into random writes."""
    generator = Generator(SEED, MAX_FRAME)
    rng = random.Random(SEED)
    worker = fuzz_worker(*WORKER_ARGS)
    _mock_lm(worker)
    sent = 0
    kinds: dict[str, int] = {}
    while sent < INPUTS:
        batch = [generator.next_input() for _ in range(min(BATCH, INPUTS - sent))]
        for item in batch:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        try:
            worker.run_batch(batch, rng)
        except FuzzFailure as exc:
            _fail(f"after {sent} inputs: {exc}", batch, fuzz_worker, WORKER_ARGS, worker, tmp_path)
        sent += len(batch)
    assert len(kinds) >= 15, kinds  # the mix really exercised every kind of input
    assert worker.process.poll() is None
    assert worker.close() == 0, worker.stderr_tail()
    worker.check_stream()


@pytest.mark.parametrize("index", range(4))
@pytest.mark.slow
def test_fuzz_short_lived_workers(fuzz_worker: Callable[..., FuzzWorker], tmp_path: Path, index: int) -> None:
    """Warmed-up workers (DSPy imported in the background) fed tiny-to-large random writes,
    then end of input: each leaves by itself (exit 0) with every owed reply written."""
    seed = SEED + 1000 + index
    generator = Generator(seed, MAX_FRAME)
    rng = random.Random(seed)
    args = ("--max-frame-size", str(MAX_FRAME), "--log-level", "error")
    worker = fuzz_worker(*args)
    _mock_lm(worker)
    batch = [generator.next_input() for _ in range(400)]
    try:
        worker.run_batch(batch, rng)
    except FuzzFailure as exc:
        _fail(f"short-lived worker {index} (seed {seed}): {exc}", batch, fuzz_worker, args, worker, tmp_path)
    # The last thing it reads is a lying header: end of input arrives inside a frame.
    tail = [generator.next_input() for _ in range(50)]
    for item in tail:
        worker.expects.add(item.expects)
    worker.write(b"".join(i.data for i in tail) + struct.pack(">I", 1000) + b'{"id":', rng)
    assert worker.close() == 0, worker.stderr_tail()
    assert not worker.wait_for(worker.expects.required, 0), "replies lost at exit"
    worker.check_stream()
