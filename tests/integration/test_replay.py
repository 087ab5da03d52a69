"""Replay: comparison, cassette, ordering, targets, the CLI's outputs and exit codes."""

from __future__ import annotations

from collections.abc import Callable

import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import Engine, EngineConfig
from bridge.wire.client import dspex_serve_argv
from bridge.record.recorder import start_recording
from bridge.replay import Comparer, IgnoreRules, parse_ignore_path, replay_transcript
from bridge.record.transcript import TranscriptWriter, make_header
from fixtures import ROOT, copy_transcript_with, worker_env

SECRET = "sk-test-secret-123456"


def record_session(path: Path, lm_args: dict[str, str]) -> None:
    """A real session on an in-process engine, LM calls over HTTP to the local server."""
    engine = Engine(EngineConfig(worker_id="replay-test"))
    close = start_recording(engine, str(path))
    assert engine.call("ping", request_id=1)["success"]
    assert engine.call("configure_lm", lm_args, request_id=2)["success"]
    created = engine.call("create_program", {"signature": "question -> answer, confident: bool"}, request_id=3)
    program_id = created["result"]["program_id"]  # generated: replay must follow it
    reply = engine.call("execute_program", {"program_id": program_id, "inputs": {"question": "Why is the sky blue?"}},
                        request_id=4, timeout=60)
    assert reply["success"], reply
    assert engine.call("list_programs", request_id=5)["result"]["total_count"] == 1
    assert not engine.call("get_program_info", {"program_id": "nope"}, request_id=6)["success"]
    close()
    engine.close()


@pytest.fixture(scope="module")
def base_transcript(tmp_path_factory: pytest.TempPathFactory, openai_server) -> Path:
    path = tmp_path_factory.mktemp("base") / "session.jsonl"
    lm_args = {"model": "openai/local-model", "api_base": openai_server.base_url, "api_key": SECRET}
    record_session(path, lm_args)
    assert SECRET.encode() not in path.read_bytes()
    return path


def tamper_answer(entry: dict[str, Any]) -> None:
    frame = entry.get("frame")
    if entry.get("dir") == "out" and isinstance(frame, dict) and frame.get("id") == 4:
        frame["result"]["outputs"]["answer"] = "tampered answer"


def run_cli(*args: str) -> tuple[int, str, str]:
    """`dspex replay` in a real process, as CI runs it."""
    done = subprocess.run([sys.executable, "-m", "dspex_cli", "replay", *args], capture_output=True, text=True,
                          env=worker_env(), cwd=str(ROOT), timeout=120)
    return done.returncode, done.stdout, done.stderr


def run_cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`dspex replay` in this process, through the CLI's own error boundary (no
    interpreter start-up, no second DSPy import)."""
    from dspex_cli.app import run_app

    code = run_app(["replay", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- replay results --------------------------------------------------------------------


def test_replay_matches_and_never_touches_the_network(base_transcript: Path, openai_server) -> None:
    before = len(openai_server.requests)
    result = replay_transcript(str(base_transcript))
    assert result.ok, result.mismatches
    assert result.requests == 6 and result.replies_compared == 6 and result.frames == 12
    assert result.lm_calls_served == 1
    assert len(openai_server.requests) == before


def test_changed_reply_is_reported_with_its_path(base_transcript: Path, tmp_path: Path) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "t.jsonl", tamper_answer)
    result = replay_transcript(str(tampered))
    assert not result.ok and result.status == "fail"
    [mismatch] = result.mismatches
    assert (mismatch.request_id, mismatch.command, mismatch.path) == (4, "execute_program", "result.outputs.answer")
    assert mismatch.expected == "tampered answer" and mismatch.actual.startswith("answer for question=")
    assert replay_transcript(str(tampered), ignore=["result.outputs.answer"]).ok
    assert replay_transcript(str(tampered), ignore=["execute_program:result.outputs.*"]).ok
    assert not replay_transcript(str(tampered), ignore=["list_programs:result.outputs.answer"]).ok


def test_header_ignore_paths_apply(base_transcript: Path, tmp_path: Path) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "t.jsonl", tamper_answer)
    lines = tampered.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    header["ignore"] = ["$.result.outputs.answer"]
    tampered.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))
    assert replay_transcript(str(tampered)).ok


def test_missing_cassette_answer_names_the_closest_recorded_call(base_transcript: Path, tmp_path: Path,
                                                                openai_server) -> None:
    def ask_differently(entry: dict[str, Any]) -> None:
        frame = entry.get("frame")
        if entry.get("dir") == "in" and isinstance(frame, dict) and frame.get("id") == 4:
            frame["args"]["inputs"]["question"] = "Why is grass green?"

    changed = copy_transcript_with(base_transcript, tmp_path / "t.jsonl", ask_differently)
    before = len(openai_server.requests)
    result = replay_transcript(str(changed))
    assert len(openai_server.requests) == before
    misses = [m for m in result.mismatches if m.kind == "lm_miss"]
    assert len(misses) == 1
    miss = misses[0]
    assert miss.request_id == 4 and miss.path.startswith("lm_call.request.messages[")
    assert "sky blue" in miss.expected and "grass green" in miss.actual
    failed = [m for m in result.mismatches if m.request_id == 4 and m.path == "success"]
    assert failed and failed[0].actual is False


def test_live_lm_mode_calls_the_configured_lm(base_transcript: Path, openai_server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-env-key-0000")  # the transcript's key was scrubbed
    before = len(openai_server.requests)
    result = replay_transcript(str(base_transcript), lm_mode="live", ignore=["configure_lm:result.lm.api_key_set"])
    assert result.ok, result.mismatches
    assert len(openai_server.requests) == before + 1
    assert openai_server.requests[-1]["authorization"] == "Bearer sk-live-env-key-0000"


def test_update_rewrites_expectations_in_place(base_transcript: Path, tmp_path: Path) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "t.jsonl", tamper_answer)
    result = replay_transcript(str(tampered), update=True)
    assert result.updated and result.ok
    data = tampered.read_bytes()
    assert b"tampered answer" not in data and SECRET.encode() not in data
    # Only the changed value was rewritten: the generated program id (new in every replay),
    # clocks and durations keep their recorded values, so the file is as recorded.
    untouched = copy_transcript_with(base_transcript, tmp_path / "same.jsonl", lambda entry: None)
    assert data == untouched.read_bytes()
    [change] = result.updates
    assert (change.request_id, change.path, change.expected) == (4, "result.outputs.answer", "tampered answer")
    again = replay_transcript(str(tampered))
    assert again.ok and again.replies_compared == 6
    # Nothing to update: the file is left alone.
    stamp = tampered.stat().st_mtime_ns
    assert not replay_transcript(str(tampered), update=True).updated
    assert tampered.stat().st_mtime_ns == stamp


def test_torn_last_line_still_replays(base_transcript: Path, tmp_path: Path) -> None:
    data = base_transcript.read_bytes().splitlines(keepends=True)
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(data[:-1]) + data[-1][:10])
    result = replay_transcript(str(torn))
    assert result.ok and result.torn


@pytest.mark.slow
def test_worker_target_replays_through_real_framing(base_transcript: Path, tmp_path: Path) -> None:
    argv = dspex_serve_argv("--no-control", "{args}")
    result = replay_transcript(str(base_transcript), worker_argv=argv)
    assert result.ok and result.target == "worker" and result.replies_compared == 6
    tampered = copy_transcript_with(base_transcript, tmp_path / "t.jsonl", tamper_answer)
    failed = replay_transcript(str(tampered), worker_argv=argv)
    assert [m.path for m in failed.mismatches] == ["result.outputs.answer"]


def _logging_target(log: list[str]) -> Callable[[bytes, Callable[[bytes], None]], None]:
    """A replay target that answers each request on its own thread ("slow" ones after
    200 ms) and logs when each was sent and answered, to check the replay's order."""
    def submit(payload: bytes, send: Callable[[bytes], None]) -> None:
        request = orjson.loads(payload)
        rid = request["id"]
        log.append(f"sent {rid}")

        def answer() -> None:
            if request["command"] == "slow":
                time.sleep(0.2)
            log.append(f"replied {rid}")
            send(orjson.dumps({"id": rid, "success": True, "result": {}}))

        threading.Thread(target=answer).start()

    return submit


def test_one_sessions_requests_wait_for_each_other_others_overlap(tmp_path: Path) -> None:
    """In the recording, 1 and 2 (session s) and 3 (session t) were all in flight together."""
    path = tmp_path / "order.jsonl"
    with TranscriptWriter(path, make_header(mode="standalone", worker_id="w", argv=[])) as writer:
        writer.frame("in", 1, {"id": 1, "command": "slow", "args": {"session_id": "s"}})
        writer.frame("in", 2, {"id": 2, "command": "fast", "args": {"session_id": "s"}})
        writer.frame("in", 3, {"id": 3, "command": "fast", "args": {"session_id": "t"}})
        for rid in (1, 2, 3):
            writer.frame("out", 10 + rid, {"id": rid, "success": True, "result": {}})
        writer.frame("in", 20, {"id": 4, "command": "fast", "args": {"session_id": "t"}})
        writer.frame("out", 21, {"id": 4, "success": True, "result": {}})
    log: list[str] = []
    submit = _logging_target(log)
    result = replay_transcript(str(path), submit=submit)
    assert result.ok, result.mismatches
    # 2 waits for 1 (same session); 3 overlaps 1; 4 waits for every reply recorded before it.
    assert log.index("sent 2") > log.index("replied 1")
    assert log.index("sent 3") < log.index("replied 1")
    assert log.index("sent 4") > max(log.index(f"replied {rid}") for rid in (1, 2, 3))


def test_a_worker_wide_command_waits_for_every_held_back_request(tmp_path: Path) -> None:
    """`cleanup` (scheduled "global") recorded after 1 and 2 of session s: 2 is held back
    behind 1, and cleanup is sent only once both were answered, as the engine would run it."""
    path = tmp_path / "barrier.jsonl"
    with TranscriptWriter(path, make_header(mode="standalone", worker_id="w", argv=[])) as writer:
        writer.frame("in", 1, {"id": 1, "command": "slow", "args": {"session_id": "s"}})
        writer.frame("in", 2, {"id": 2, "command": "fast", "args": {"session_id": "s"}})
        writer.frame("in", 3, {"id": 3, "command": "cleanup", "args": {}})
        for rid in (1, 2, 3):
            writer.frame("out", 10 + rid, {"id": rid, "success": True, "result": {}})
    log: list[str] = []
    submit = _logging_target(log)
    result = replay_transcript(str(path), submit=submit)
    assert result.ok and result.requests == 3, result.mismatches
    assert log.index("sent 2") > log.index("replied 1")
    assert log.index("sent 3") > log.index("replied 2")


def test_engine_runs_scheduled_requests_on_the_executor_it_is_given() -> None:
    """Replay builds its engine with CallerRunsExecutor instead of patching one in: a
    scheduled (not inline) command is answered before submit_frame returns, on this thread."""
    from bridge.replay import CallerRunsExecutor

    executor = CallerRunsExecutor()
    engine = Engine(EngineConfig(worker_id="inline"), executor=executor)
    assert engine.executor is executor
    replies: list[tuple[bytes, threading.Thread]] = []
    request = {"id": 7, "command": "update_session_data", "args": {"session_id": "s", "key": "k", "value": 1}}
    engine.submit_frame(orjson.dumps(request), lambda data: replies.append((data, threading.current_thread())))
    [(reply, thread)] = replies
    assert orjson.loads(reply)["success"] and thread is threading.current_thread()
    assert engine.call("get_session_data", {"session_id": "s", "key": "k"})["result"]["value"] == 1
    engine.close()
    pooled = Engine(EngineConfig(worker_id="pooled"))
    assert type(pooled.executor).__name__ == "ThreadPoolExecutor"
    pooled.close()


def test_on_reply_counts_every_reply_for_each_target(base_transcript: Path) -> None:
    counted: list[int] = []
    result = replay_transcript(str(base_transcript), on_reply=lambda: counted.append(1))
    assert result.ok and len(counted) == result.replies_compared == 6
    counted.clear()
    worker = replay_transcript(str(base_transcript), worker_argv=dspex_serve_argv("--no-control", "{args}"),
                               on_reply=lambda: counted.append(1))
    assert worker.ok and len(counted) == worker.replies_compared == 6


def test_a_worker_command_that_cannot_start_is_one_clear_error(base_transcript: Path, tmp_path: Path) -> None:
    from bridge.replay import SpawnedWorker, WorkerStartFailed

    missing = str(tmp_path / "no-such-worker")
    with pytest.raises(WorkerStartFailed, match=r"^cannot start worker .*no-such-worker: No such file"):
        replay_transcript(str(base_transcript), worker_argv=[missing])
    worker = SpawnedWorker([sys.executable, "-c", "import sys; sys.exit(4)"])
    try:
        worker.client.process.wait(10)
        assert worker.exit_code() == 4 and worker.gone_reason() == "exited with code 4"
    finally:
        worker.close()


def test_replay_modules_stay_small() -> None:
    for module in sorted((ROOT / "bridge" / "replay").glob("*.py")):
        assert len(module.read_text().splitlines()) <= 400, module.name


# -- comparison rules ------------------------------------------------------------------


def test_comparer_normalises_what_varies_and_nothing_else() -> None:
    comparer = Comparer(IgnoreRules(["result.items[*].score"]))
    expected = {"id": 1, "timestamp": 1.0, "result": {
        "uptime": 3.5, "memory_usage": {"rss": 1}, "duration_ms": 2.0, "count": 1, "flag": True,
        "api_key_set": "[REDACTED]", "items": [{"name": "a", "score": 1}, {"name": "b", "score": 2}],
        "sessions": [{"session_id": "x", "n": 1}, {"session_id": "y", "n": 2}]}}
    actual = {"id": 1, "timestamp": 9.0, "result": {
        "uptime": 7.25, "memory_usage": {"rss": 99, "vms": 5}, "duration_ms": 8.5, "count": 1, "flag": True,
        "api_key_set": True, "items": [{"name": "a", "score": 10}, {"name": "b", "score": 20}],
        "sessions": [{"session_id": "y", "n": 2}, {"session_id": "x", "n": 1}]}}
    assert comparer.compare(expected, actual, "x") == []
    changed = orjson.loads(orjson.dumps(actual))
    changed["result"]["count"] = 1.0  # an integer turned float is a change for Elixir
    changed["result"]["flag"] = 1
    changed["result"]["uptime"] = "soon"  # varying values must still keep their kind
    changed["result"]["new_key"] = 0
    del changed["result"]["duration_ms"]
    found = {(path, kind) for path, _e, _a, kind in comparer.compare(expected, changed, "x")}
    assert found == {("result.count", "value"), ("result.flag", "value"), ("result.uptime", "value"),
                     ("result.new_key", "extra"), ("result.duration_ms", "missing")}


def test_generated_ids_are_followed_into_later_requests() -> None:
    comparer = Comparer(IgnoreRules([]))
    assert comparer.compare({"result": {"program_id": "program_0123456789ab"}},
                            {"result": {"program_id": "program_ba9876543210"}}, "create_program") == []
    request = {"args": {"program_id": "program_0123456789ab", "other": ["program_0123456789ab", 1]}}
    assert comparer.rewrite(request) == {"args": {"program_id": "program_ba9876543210",
                                                  "other": ["program_ba9876543210", 1]}}
    assert comparer.compare({"error": "Program not found: program_0123456789ab"},
                            {"error": "Program not found: program_ffffffffffff"}, "x") == []
    assert comparer.compare({"error": "Program not found: qa"}, {"error": "Program not found: qb"}, "x")


def test_ignore_path_syntax_and_matching() -> None:
    rules = IgnoreRules(["$.result.items[*].name", "execute_program:result.usage", "result.programs[0]",
                         "result.*.x"])
    assert rules.matches(None, ("result", "items", 3, "name"))
    assert not rules.matches(None, ("result", "items", "k", "name"))
    assert rules.matches("execute_program", ("result", "usage"))
    assert not rules.matches("ping", ("result", "usage"))
    assert rules.matches(None, ("result", "programs", 0)) and not rules.matches(None, ("result", "programs", 1))
    assert rules.matches(None, ("result", "a", "x")) and not rules.matches(None, ("result", 0, "x"))
    assert parse_ignore_path("execute_program:result.usage")[0] == "execute_program"


def test_bad_ignore_path_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_ignore_path("result[x]")
    with pytest.raises(ValueError):
        parse_ignore_path("")


# -- the CLI ---------------------------------------------------------------------------


def test_cli_json_junit_and_exit_codes(base_transcript: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "tampered.jsonl", tamper_answer)
    junit = tmp_path / "report.xml"
    code, out, err = run_cli_here(capsys, str(base_transcript), str(tampered), "--json", "--junit", str(junit))
    assert code == 1
    document = orjson.loads(out)
    assert document["exit_code"] == 1 and document["summary"] == {"pass": 1, "fail": 1, "error": 0}
    statuses = {Path(t["path"]).name: t["status"] for t in document["transcripts"]}
    assert statuses == {"session.jsonl": "pass", "tampered.jsonl": "fail"}
    [failing] = [t for t in document["transcripts"] if t["status"] == "fail"]
    assert failing["mismatches"][0]["path"] == "result.outputs.answer"
    assert err == ""  # no progress bar: stderr is not a terminal
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.find("failure") is not None for c in cases] == [False, True]
    assert "result.outputs.answer" in cases[1].find("failure").text

    code, out, _ = run_cli_here(capsys, str(tampered))
    assert code == 1 and "result.outputs.answer" in out and "tampered answer" in out and "replay summary" in out
    code, out, _ = run_cli_here(capsys, str(tampered), "--ignore", "result.outputs.answer")
    assert code == 0 and "1 passed" in out


def test_cli_update_then_clean(base_transcript: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "tampered.jsonl", tamper_answer)
    code, out, _ = run_cli_here(capsys, str(tampered), "--update")
    assert code == 0 and "updated" in out
    code, _, _ = run_cli_here(capsys, str(tampered))
    assert code == 0


def test_cli_parallel_jobs_match_serial(base_transcript: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    tampered = copy_transcript_with(base_transcript, tmp_path / "tampered.jsonl", tamper_answer)
    good = tmp_path / "good.jsonl"
    good.write_bytes(base_transcript.read_bytes())

    def outcome(*jobs: str) -> list[tuple[str, str, list]]:
        code, out, _ = run_cli_here(capsys, str(tmp_path / "*.jsonl"), *jobs, "--json")
        assert code == 1
        return [(Path(t["path"]).name, t["status"], t["mismatches"]) for t in orjson.loads(out)["transcripts"]]

    parallel = outcome("-j", "2")
    assert [(name, status) for name, status, _ in parallel] == [("good.jsonl", "pass"), (tampered.name, "fail")]
    assert parallel[1][2]  # the tampered answer is reported...
    assert parallel == outcome("-j", "1")  # ...exactly as a serial run reports it


def test_cli_worker_option(base_transcript: Path) -> None:
    worker = f"{sys.executable} -m dspex_cli serve --no-control {{args}}"
    code, out, err = run_cli(str(base_transcript), "--worker", worker, "--quiet")
    assert code == 0 and "1/1 transcripts match" in out, err


def _frame_line_without_dir(path: Path) -> None:
    path.write_bytes(orjson.dumps(make_header(mode="standalone", worker_id=None, argv=[])) + b"\n"
                     + b'{"type": "frame", "ms": 1, "frame": {"id": 1, "command": "ping"}}\n')


@pytest.mark.parametrize("case", ["missing", "empty_dir", "corrupt", "newer", "unparseable_request",
                                  "not_transcript", "no_glob_match"])
@pytest.mark.slow
def test_bad_input_exits_3_with_one_line(case: str, base_transcript: Path, tmp_path: Path) -> None:
    target = tmp_path / "bad.jsonl"
    expected = {"missing": "no such file", "empty_dir": "no transcripts", "corrupt": ":4: corrupt line",
                "newer": "newer than this dspex", "unparseable_request": ":2: frame has no valid 'dir'",
                "not_transcript": "not a dspex transcript", "no_glob_match": "no file matches"}[case]
    argument = str(target)
    if case == "empty_dir":
        argument = str(tmp_path / "empty")
        Path(argument).mkdir()
    elif case == "corrupt":
        lines = base_transcript.read_bytes().splitlines(keepends=True)
        target.write_bytes(b"".join(lines[:3]) + b"{broken\n" + b"".join(lines[3:]))
    elif case == "newer":
        target.write_bytes(b'{"format": "dspex-transcript", "version": 2}\n')
    elif case == "unparseable_request":
        _frame_line_without_dir(target)
    elif case == "not_transcript":
        target.write_bytes(b'{"hello": "world"}\n')
    elif case == "no_glob_match":
        argument = str(tmp_path / "nothing-*.jsonl")
    code, out, err = run_cli(argument)
    assert code == 3, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err + out


@pytest.mark.parametrize("args, fragment", [
    (["--lm", "bogus"], "--lm must be"),
    (["-j", "0"], "at least 1"),
    (["--ignore", "result[x]"], "cannot parse ignore path"),
    (["--worker", "no-such-binary-here --flag"], "command not found"),
])
def test_usage_errors_exit_2(args: list[str], fragment: str, base_transcript: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli_here(capsys, str(base_transcript), *args)
    assert code == 2 and fragment in err


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    """In a real terminal a progress bar runs while several transcripts replay."""
    import pexpect

    directory = tmp_path / "many"
    directory.mkdir()
    for name in ("pool_session", "standalone_bridge", "typed_outputs"):
        (directory / f"{name}.jsonl").write_bytes((ROOT / "recordings" / f"{name}.jsonl").read_bytes())
    child = pexpect.spawn(sys.executable, ["-m", "dspex_cli", "replay", str(directory)], env=worker_env(),
                          cwd=str(ROOT), timeout=60, dimensions=(30, 120))
    child.expect("replaying")  # rich's bar on stderr, which is this terminal
    child.expect("3 passed, 0 failed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- replay's own honesty: ignore paths that match nothing, what --update changed -------


def recording_copy(tmp_path: Path, name: str = "chain_of_thought") -> tuple[Path, bytes]:
    original = (ROOT / "recordings" / f"{name}.jsonl").read_bytes()
    target = tmp_path / f"{name}.jsonl"
    target.write_bytes(original)
    return target, original


def change_first_answer(path: Path, new_value: str) -> tuple[Any, str, str]:
    """Rewrites the first execute_program reply's first output; returns (id, name, old value)."""
    lines = path.read_bytes().splitlines(keepends=True)
    for index, line in enumerate(lines):
        entry = orjson.loads(line)
        frame = entry.get("frame")
        if entry.get("dir") == "out" and isinstance(frame, dict) and "outputs" in (frame.get("result") or {}):
            name, old = next(iter(frame["result"]["outputs"].items()))
            frame["result"]["outputs"][name] = new_value
            head = line[:line.index(b',"frame":') + len(b',"frame":')]
            lines[index] = head + orjson.dumps(frame) + b"}\n"
            path.write_bytes(b"".join(lines))
            return frame["id"], name, old
    raise AssertionError("no execute_program reply in the recording")


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_an_ignore_path_that_matches_nothing_is_reported(tmp_path: Path) -> None:
    transcript, _ = recording_copy(tmp_path)
    code, out, err = run_cli(str(transcript), "--ignore", "result.outptus.answer", "--ignore", "result.status")
    assert code == 0, out + err
    warnings = [line for line in err.splitlines() if "warning" in line]
    # The misspelt path is named; result.status exists in replies, so it is not.
    assert warnings == ["dspex replay: warning: --ignore result.outptus.answer matched nothing in any reply "
                        "of this run"]
    code, out, err = run_cli(str(transcript), "--ignore", "execute_program:result.outputs.*", "--json")
    assert code == 0 and "warning" not in err and orjson.loads(out)["unmatched_ignores"] == []
    # A path that exists, but only for another command, matches nothing.
    code, out, _ = run_cli(str(transcript), "--ignore", "ping:result.outputs", "--json")
    assert orjson.loads(out)["unmatched_ignores"] == ["ping:result.outputs"]


@pytest.mark.slow
def test_update_on_an_unchanged_recording_changes_nothing_and_says_nothing(tmp_path: Path) -> None:
    transcript, original = recording_copy(tmp_path)
    code, out, err = run_cli(str(transcript), "--update")
    assert code == 0, out + err
    assert transcript.read_bytes() == original
    assert "updated" not in out and "(updated)" not in out


@pytest.mark.slow  # over 5 s here: CI runs it, a developer's default run skips it
def test_update_of_a_changed_answer_prints_that_one_change_and_only_it_reaches_the_file(tmp_path: Path) -> None:
    transcript, original = recording_copy(tmp_path)
    rid, name, old = change_first_answer(transcript, "REGRESSION")
    code, out, err = run_cli(str(transcript), "--update")
    assert code == 0, out + err
    change_lines = [line for line in out.splitlines() if line.startswith("  request ")]
    assert change_lines == [f'  request {rid} (execute_program) result.outputs.{name}: "REGRESSION" -> '
                            f'{orjson.dumps(old).decode()}']
    assert f"updated {transcript}:" in out
    # The replayed answer is the one originally recorded: every byte is back, the end line,
    # generated ids and clocks included.
    assert transcript.read_bytes() == original
    code, out, _ = run_cli(str(transcript), "--update")
    assert code == 0 and "updated" not in out


def test_live_replay_never_sends_the_environment_key_where_a_transcript_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.replay import drop_redacted

    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-env-key-0000")
    frame = {"id": 1, "command": "configure_lm",
             "args": {"model": "openai/m", "api_key": "[REDACTED]", "api_base": "http://203.0.113.9/v1"}}
    assert "api_key" not in drop_redacted(frame)["args"]
    local = {**frame, "args": {**frame["args"], "api_base": "http://127.0.0.1:9/v1"}}
    assert drop_redacted(local)["args"]["api_key"] == "sk-live-env-key-0000"
    default = {**frame, "args": {"model": "openai/m", "api_key": "[REDACTED]"}}
    assert drop_redacted(default)["args"]["api_key"] == "sk-live-env-key-0000"
