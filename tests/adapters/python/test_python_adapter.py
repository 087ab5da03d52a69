"""The Python adapter through real `dspex serve` workers: calls, references, release,
session cleanup, concurrency, and the refusals of its allow-list (docs/adapters.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.python.allow import AllowList, NotAllowed, resolve
from bridge.adapters.python.refs import MAX_REPR, Counter, RefTable, to_reply
from bridge.wire.client import WorkerClient
from bridge.control.client import ControlClient
from fixtures import ok, wait_for, worker_env

ALLOW = "math,collections,statistics,json,time,builtins"


@pytest.fixture
def worker(spawn_worker: Callable[..., WorkerClient], runtime: Path) -> WorkerClient:
    client = spawn_worker(env=worker_env(DSPEX_ALLOW=ALLOW, XDG_RUNTIME_DIR=str(runtime)))
    assert ok(client.request("ping"))["status"] == "ok"
    return client


@pytest.fixture(scope="module")
def refusing_worker(module_spawn: Callable[..., WorkerClient], tmp_path_factory: pytest.TempPathFactory) -> WorkerClient:
    """One worker for all the refused targets: a refusal makes no reference."""
    runtime = tmp_path_factory.mktemp("python-refusals")
    client = module_spawn(env=worker_env(DSPEX_ALLOW=ALLOW, XDG_RUNTIME_DIR=str(runtime)))
    assert ok(client.request("ping"))["status"] == "ok"
    return client


def call(worker: WorkerClient, target: Any, *args: Any, session: str = "s1", **extra: Any) -> dict[str, Any]:
    return worker.request("python.call", {"target": target, "args": list(args), "session_id": session, **extra})


def test_calls_values_and_references_across_requests(worker: WorkerClient) -> None:
    assert ok(call(worker, "math.sqrt", 16)) == {"value": 4.0}
    assert ok(call(worker, "statistics.mean", [1, 2, 3, 4])) == {"value": 2.5}
    assert ok(call(worker, "math.hypot", kwargs={}, args=[3, 4])) == {"value": 5.0}
    counter = ok(call(worker, "collections.Counter", "abracadabra"))
    assert counter["type"] == "collections.Counter" and counter["ref"].startswith("r-")
    assert "'a': 5" in counter["repr"]
    # The reference outlives its request: a method call on it, later.
    assert ok(call(worker, {"ref": counter["ref"]}, 2, method="most_common")) == {"value": [["a", 5], ["b", 2]]}
    # A reference as an argument, inside a list, and as a keyword argument.
    assert ok(call(worker, "json.dumps", {"ref": counter["ref"]}, kwargs={"sort_keys": True})) == {
        "value": '{"a": 5, "b": 2, "c": 1, "d": 1, "r": 2}'}
    other = ok(call(worker, "collections.Counter", "aab"))
    assert ok(call(worker, {"ref": counter["ref"]}, {"ref": other["ref"]}, method="update")) == {"value": None}
    assert ok(call(worker, {"ref": counter["ref"]}, method="total")) == {"value": 14}
    # Only an object whose one key is "ref" stands for a reference; others are data.
    assert ok(call(worker, "json.dumps", {"ref": "r-1", "n": 1})) == {"value": '{"ref": "r-1", "n": 1}'}
    # A Python exception is a python_error reply naming it.
    failed = call(worker, "math.sqrt", -1)
    assert failed["error_type"] == "python_error" and "ValueError" in failed["error"]
    # python.get: an attribute of a module, of a reference.
    assert ok(worker.request("python.get", {"target": "math.pi"}))["value"] == pytest.approx(3.14159265)
    assert ok(worker.request("python.get", {"target": {"ref": counter["ref"]}, "attribute": "total",
                                            "session_id": "s1"}))["type"] == "method"
    # A result that is not JSON (a non-finite float, a set) comes back as a reference.
    infinite = ok(worker.request("python.get", {"target": "math.inf", "session_id": "s1"}))
    assert infinite["type"] == "float" and infinite["repr"] == "inf"


def test_refs_release_and_cleanup_session(worker: WorkerClient) -> None:
    first = ok(call(worker, "collections.Counter", "aa"))["ref"]
    second = ok(call(worker, "collections.deque", [1, 2]))["ref"]
    ok(call(worker, "collections.Counter", "b", session="s2"))
    listed = ok(worker.request("python.refs", {"session_id": "s1"}))
    assert listed["count"] == 2 and {r["ref"] for r in listed["refs"]} == {first, second}
    assert {r["type"] for r in listed["refs"]} == {"collections.Counter", "collections.deque"}
    assert ok(worker.request("get_stats"))["python_refs"] == 3
    released = ok(worker.request("python.release", {"refs": [first, "r-0000000000000000"], "session_id": "s1"}))
    assert released == {"session_id": "s1", "released": 1, "unknown": ["r-0000000000000000"]}
    gone = call(worker, {"ref": first}, method="most_common")
    assert gone["error_type"] == "not_allowed" and "No reference" in gone["error"]
    sessions = {s["session_id"]: s["python_refs"] for s in ok(worker.request("list_sessions"))["sessions"]}
    assert sessions == {"s1": 1, "s2": 1}
    assert ok(worker.request("cleanup_session", {"session_id": "s1"}))["python_refs_released"] == 1
    assert call(worker, {"ref": second}, method="pop")["error_type"] == "not_allowed"
    assert ok(worker.request("python.refs", {"session_id": "s1"}))["count"] == 0
    assert ok(worker.request("get_stats"))["python_refs"] == 1
    assert ok(worker.request("cleanup"))["python_refs_released"] == 1
    assert ok(worker.request("get_stats"))["python_refs"] == 0
    ok(call(worker, "collections.Counter", "c", session="s3"))
    assert ok(worker.request("reset_state"))["python_refs_released"] == 1
    assert ok(worker.request("python.release", {"all": True, "session_id": "s3"}))["released"] == 0


def test_a_reference_belongs_to_its_session(worker: WorkerClient) -> None:
    mine = ok(call(worker, "collections.Counter", "abc", session="alice"))["ref"]
    stolen = call(worker, {"ref": mine}, method="most_common", session="bob")
    assert stolen["error_type"] == "not_allowed" and "'bob'" in stolen["error"]
    assert call(worker, "json.dumps", {"ref": mine}, session="bob")["error_type"] == "not_allowed"
    assert ok(call(worker, {"ref": mine}, 1, method="most_common", session="alice"))["value"] == [["a", 1]]


def test_slow_calls_overlap_and_pings_are_answered(worker: WorkerClient) -> None:
    began = time.monotonic()
    futures = [worker.submit("python.call", {"target": "time.sleep", "args": [0.5], "session_id": "s1"})
               for _ in range(6)]
    ping = worker.request("ping", timeout=5)
    assert ping["success"] and not any(f.done() for f in futures)  # answered while all six still sleep
    assert [ok(f.result(10)) for f in futures] == [{"value": None}] * 6
    # Six half-second sleeps one after another would take 3 s; overlapping, about 0.5 s.
    assert time.monotonic() - began < 2.5


REFUSED = [
    ("os.system", "no module of it is in the allow-list"),
    ("subprocess.run", "no module of it is in the allow-list"),
    ("builtins.eval", "builtins.eval"),         # builtins is allowed, eval is not named exactly
    ("builtins.getattr", "builtins.getattr"),
    ("builtins.open", "builtins.open"),
    ("math.__class__", "names starting with '_'"),
    ("math._private", "names starting with '_'"),
    ("statistics.sys", "the module sys"),        # statistics imports sys: an allowed module's attribute
    ("statistics.random", "the module random"),
    ("json.codecs", "the module codecs"),
    ("json.decoder", "the module json.decoder"),  # `json` does not cover its submodules; `json.*` would
    ("collections.abc", "the module collections.abc"),
    ("statistics.sys.modules", "the module sys"),
    ("math.sqrt.__self__", "names starting with '_'"),
    ("math.sqrt; import os", "is not a Python identifier"),
    ("builtins.str.format", "str.format"),       # "{0.__init__.__globals__}".format(x) would show globals
    ("builtins.vars", "builtins.vars"),
]


@pytest.mark.parametrize(("target", "fragment"), REFUSED)
def test_refused_targets_answer_not_allowed(refusing_worker: WorkerClient, target: str, fragment: str) -> None:
    for reply in (call(refusing_worker, target), refusing_worker.request("python.get", {"target": target})):
        assert reply["success"] is False and reply["error_type"] == "not_allowed", reply
        assert fragment in reply["error"], reply


def test_refused_methods_and_references(worker: WorkerClient) -> None:
    counter = ok(call(worker, "collections.Counter", "ab"))["ref"]
    for method in ("__class__", "__init__", "_keep_positive", "update.__globals__"):
        reply = call(worker, {"ref": counter}, method=method)
        assert reply["error_type"] == "not_allowed", (method, reply)
    assert call(worker, {"ref": "r-nonexistent"})["error_type"] == "not_allowed"
    assert call(worker, "json.dumps", {"ref": "r-nonexistent"})["error_type"] == "not_allowed"
    # A module reached through a reference is checked like one reached by name.
    statistics_ref = ok(worker.request("python.get", {"target": "statistics", "session_id": "s1"}))
    assert statistics_ref["type"] == "module"
    reply = worker.request("python.get", {"target": {"ref": statistics_ref["ref"]}, "attribute": "sys",
                                          "session_id": "s1"})
    assert reply["error_type"] == "not_allowed" and "the module sys" in reply["error"]
    assert ok(call(worker, {"ref": statistics_ref["ref"]}, [2, 4], method="mean")) == {"value": 3}


def test_off_unless_enabled(spawn_worker: Callable[..., WorkerClient]) -> None:
    worker = spawn_worker("--no-control", env=worker_env(DSPEX_ALLOW=""))
    for command, args in (("python.call", {"target": "math.sqrt", "args": [4]}), ("python.get", {"target": "math.pi"}),
                          ("python.refs", {}), ("python.release", {"all": True})):
        reply = worker.request(command, args)
        assert reply["error_type"] == "not_allowed" and "--allow" in reply["error"] and "DSPEX_ALLOW" in reply["error"]
    # A worker that does not use the adapter answers as before: nothing of it in other replies.
    assert "python_refs" not in ok(worker.request("get_stats"))
    assert "python_refs_released" not in ok(worker.request("cleanup"))
    assert worker.close() == 0


def test_inspect_lists_references(worker: WorkerClient, runtime: Path) -> None:
    ref = ok(call(worker, "collections.Counter", "zz", session="seen"))["ref"]
    socket = wait_for(lambda: next((runtime / "dspex").glob(f"{worker.pid}.sock"), None))
    view = ControlClient(socket).call("refs")
    assert view["total"] == 1 and "math" in view["allow"]
    [entry] = view["refs"]
    assert (entry["session_id"], entry["ref"], entry["type"]) == ("seen", ref, "collections.Counter")
    assert "'z': 2" in entry["repr"]


def test_allow_list_rules_in_process() -> None:
    exact = AllowList(["builtins.open", "json"])
    assert resolve("builtins.open", exact) is open            # named exactly: allowed
    with pytest.raises(NotAllowed):
        resolve("builtins.eval", exact)                        # builtins itself is not covered
    with pytest.raises(NotAllowed):
        resolve("json.decoder.JSONDecoder", exact)             # json.decoder is a module of its own
    prefix = AllowList(["json.*"])
    assert resolve("json.decoder.JSONDecoder", prefix).__name__ == "JSONDecoder"
    assert resolve("json.JSONDecoder", exact).__module__ == "json.decoder"  # json's own code, re-exported
    assert resolve("functools.reduce", AllowList(["functools"])).__module__ == "_functools"  # its C accelerator
    with pytest.raises(NotAllowed):
        resolve("statistics.sqrt", AllowList(["statistics"]))  # math's function, re-exported by statistics
    with pytest.raises(NotAllowed, match="off"):
        resolve("math.sqrt", AllowList())
    with pytest.raises(ValueError):
        AllowList(["os; rm -rf"])


def test_results_that_lead_outside_are_not_held() -> None:
    import os

    allow = AllowList(["collections", "builtins"])
    table = RefTable(Counter())
    with pytest.raises(NotAllowed, match="module os"):
        to_reply(os, table, allow, "a call")                   # dict.get on a dict of modules, say
    with pytest.raises(NotAllowed, match="posix"):
        to_reply(os.system, table, allow, "a call")
    with pytest.raises(NotAllowed, match="builtins.eval"):
        to_reply(eval, table, allow, "a call")                 # refused even with builtins allowed
    assert to_reply({"a": (1, 2)}, table, allow, "a call") == {"value": {"a": [1, 2]}}
    assert len(table) == 0
    assert to_reply({1: "non-string key"}, table, allow, "a call")["type"] == "dict"
    big = to_reply(list(range(20_000)), table, allow, "a call")  # past the bound of a value
    assert big["type"] == "list" and len(big["repr"]) <= MAX_REPR and len(table) == 2


def test_the_documented_adapter_runs(spawn_worker: Callable[..., WorkerClient], tmp_path: Path) -> None:
    """docs/adapters.md's complete example, as a plugin of a real worker serving it alone."""
    from doc_examples import doc_test

    (tmp_path / "notebook_adapter.py").write_text(doc_test("adapters.md", "python notebook-adapter").body)
    worker = spawn_worker("--plugin", "notebook_adapter", "--adapters", "notebook", "--no-control",
                          env=worker_env(tmp_path))
    assert "dspy_loaded" not in ok(worker.request("ping"))
    assert ok(worker.request("note_add", {"text": "hi", "session_id": "a"})) == {"count": 1}
    ok(worker.request("note_add", {"text": "there", "session_id": "a"}))
    assert ok(worker.request("note_list", {"session_id": "a"})) == {"notes": ["hi", "there"]}
    assert {s["session_id"]: s["notes"] for s in ok(worker.request("list_sessions"))["sessions"]} == {"a": 2}
    for _ in range(101):  # the 101st is one too many
        last = worker.request("note_add", {"text": "x", "session_id": "b"})
    assert last["error_type"] == "notebook_full"
    assert ok(worker.request("cleanup_session", {"session_id": "a"})) == {
        "status": "cleaned", "session_id": "a", "notes_dropped": 2}
    assert ok(worker.request("cleanup"))["notes_dropped"] == 100
    assert worker.request("python.call", {"target": "math.sqrt"})["error_type"] == "unknown_command"
    assert worker.close() == 0
