"""Portable programs: export_program documents and program_data carry the compiled state to a
second worker, which serves the compiled program; documents that do not fit are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from compile_helpers import DEVSET, SIGNATURE, TRAINSET, compile_wait, configure, score
from fixtures import ok


@pytest.fixture
def compiled(spawn_worker: Any, openai_server: Any) -> tuple[Any, dict[str, Any]]:
    worker = spawn_worker()
    configure(worker, openai_server)
    ok(worker.request("create_program", {"id": "plain", "signature": SIGNATURE, "program_type": "chain_of_thought"},
                      timeout=60))
    result = compile_wait(worker, "plain", "labeled_few_shot", trainset=TRAINSET, options={"k": 2},
                          new_program_id="taught")
    return worker, result


def test_export_import_on_a_second_worker_gives_the_same_outputs(compiled: Any, spawn_worker: Any,
                                                                  openai_server: Any) -> None:
    first, _ = compiled
    document = ok(first.request("export_program", {"program_id": "taught"}))["program"]
    assert document["format"] == "dspex.program" and document["version"] == 1
    assert document["program_type"] == "chain_of_thought" and document["dspy_version"].startswith("3.")
    assert len(document["state"]["predict"]["demos"]) == 2
    score_first, outputs_first = score(first, "taught", DEVSET)
    second = spawn_worker()
    configure(second, openai_server)
    imported = ok(second.request("import_program", {"program": document, "program_id": "moved"}))
    assert imported["program_id"] == "moved" and imported["status"] == "imported"
    score_second, outputs_second = score(second, "moved", DEVSET)
    assert score_first == score_second == 1.0 and outputs_first == outputs_second
    # The document round-trips: exporting the imported program gives the same state.
    again = ok(second.request("export_program", {"program_id": "moved"}))["program"]
    assert again["state"] == document["state"]
    assert "sk-compile-secret-9876" not in str(document)


@pytest.mark.slow
def test_program_data_alone_serves_the_compiled_program(compiled: Any, spawn_worker: Any, openai_server: Any) -> None:
    first, result = compiled
    program_data = result["program_data"]
    info = ok(first.request("get_program_info", {"program_id": "taught"}))
    assert info["program_data"]["state"] == program_data["state"]
    second = spawn_worker()
    configure(second, openai_server)
    blank = dict(program_data)
    blank.pop("state")
    assert score(second, "blank", DEVSET, program_data=blank)[0] == 0.0  # without the state: not taught
    assert score(second, "taught", DEVSET, program_data=program_data)[0] == 1.0


def _bad_documents(document: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    cases = []

    def variant(name: str, change: Any, fragment: str) -> None:
        changed = copy.deepcopy(document)
        change(changed)
        cases.append((name, changed, fragment))

    variant("other major version", lambda d: d.update(dspy_version="2.6.0"), "major versions differ")
    variant("not a document", lambda d: d.update(format="something"), "not a program document")
    variant("state missing", lambda d: d.pop("state"), "'state' is missing")
    variant("other predictor names", lambda d: d.update(state={"generate": d["state"]["predict"]}),
            "not the program's")
    variant("fewer fields", lambda d: d["state"]["predict"]["signature"]["fields"].pop(), "the state has 2 fields")
    variant("other field names", lambda d: d.update(signature="query -> answer"), "question")
    variant("demo with foreign field", lambda d: d["state"]["predict"]["demos"][0].update(context="x"),
            "fields the signature does not: context")
    variant("saved LM", lambda d: d["state"]["predict"].update(lm={"model": "openai/x", "api_base": "http://10.0.0.1"}),
            "a saved LM is not accepted")
    variant("unknown state key", lambda d: d["state"]["predict"].update(forward="x"), "unknown state keys forward")
    variant("demos not a list", lambda d: d["state"]["predict"].update(demos="x"), "'demos' must be a list")
    return cases


def test_documents_that_do_not_fit_are_refused(compiled: Any) -> None:
    worker, _ = compiled
    document = ok(worker.request("export_program", {"program_id": "taught"}))["program"]
    for name, bad, fragment in _bad_documents(document):
        reply = worker.request("import_program", {"program": bad, "program_id": "x"})
        assert reply["success"] is False and reply["error_type"] == "invalid_program_state", (name, reply)
        assert fragment in reply["error"], (name, reply["error"])
    # Nothing was half-made: no program "x", and the good document still imports.
    assert "x" not in [p["id"] for p in ok(worker.request("list_programs"))["programs"]]
    ok(worker.request("import_program", {"program": document, "program_id": "x"}))
    exists = worker.request("import_program", {"program": document, "program_id": "x"})
    assert exists["error_type"] == "program_exists"
    missing = worker.request("export_program", {"program_id": "nope"})
    assert missing["error_type"] == "program_not_found"


def test_program_data_with_a_bad_state_is_refused(compiled: Any) -> None:
    worker, result = compiled
    program_data = copy.deepcopy(result["program_data"])
    program_data["state"]["predict"]["signature"]["fields"] = []
    reply = worker.request("execute_program", {"program_id": "elsewhere", "inputs": {"question": "q"},
                                               "program_data": program_data})
    assert reply["error_type"] == "invalid_program_state", reply


def _shape(value: Any) -> Any:
    """The keys of a JSON value all the way down (lists by their first item), not its values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_protocol_md_examples_are_what_a_worker_does(spawn_worker: Any, openai_server: Any) -> None:
    import json

    from doc_examples import doc_test

    worker = spawn_worker()
    configure(worker, openai_server)
    request = json.loads(doc_test("protocol.md", "json compile-request").body)
    ok(worker.request("create_program", {"id": request["args"]["program_id"], "signature": SIGNATURE}))
    result = ok(worker.request(request["command"], request["args"], timeout=60))
    assert result["program_id"] == request["args"]["new_program_id"]
    documented = json.loads(doc_test("protocol.md", "json program-document").body)
    ok(worker.request("import_program", {"program": documented, "program_id": "from_docs"}))
    exported = ok(worker.request("export_program", {"program_id": "from_docs"}))["program"]
    assert _shape(exported) == _shape(documented) and exported["state"] == documented["state"]
    assert score(worker, "from_docs", DEVSET)[0] == 1.0  # its one demo teaches the task
