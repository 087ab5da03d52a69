"""Tools for ReAct through real workers: the plugin tests/plugins/sample_tools.py and the
docs/plugins.md example, against the local server's deterministic agent (each tool the
prompt lists once, in order, then `finish`), so each call and observation is real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from bridge.adapters.dspy.tools import ToolRegistry, tool
from doc_examples import doc_test
from fixtures import PLUGINS, ROOT, ok, worker_env
from openai_server import value_for


def react(worker: Any, tools: list[str], question: str = "hello world", **extra: Any) -> dict[str, Any]:
    ok(worker.request("create_program", {"id": "agent", "signature": "question -> answer", "program_type": "react",
                                         "tools": tools, "options": {"max_iters": 6}, **extra}, timeout=60))
    return ok(worker.request("execute_program", {"program_id": "agent", "inputs": {"question": question}},
                             timeout=60))


def test_list_tools_describes_each_registered_tool(worker: Any) -> None:
    tools = {t["name"]: t for t in ok(worker.request("list_tools"))["tools"]}
    assert sorted(tools) == ["broken_lookup", "shout", "text_stats"]
    assert tools["shout"] == {
        "name": "shout", "description": "Repeats a text in capitals.", "plugin": "sample_tools",
        "parameters": {"type": "object", "required": ["text"], "properties": {
            "text": {"type": "string", "description": "what to repeat"},
            "excited": {"type": "boolean", "description": 'end with "!" instead of "."', "default": False}}}}
    # name= and description= override the function's own
    assert tools["text_stats"]["description"] == "Counts the words and characters of a text."


def test_react_calls_two_plugin_tools_and_the_trajectory_shows_both(worker: Any) -> None:
    result = react(worker, ["shout", "text_stats"])
    steps = result["trajectory"]
    assert [step["tool"] for step in steps] == ["shout", "text_stats", "finish"]
    # the server chose the arguments from the prompt's tool list; the results are the tools' own
    assert steps[0]["args"] == {"text": "hello world", "excited": False} and steps[0]["observation"] == "HELLO WORLD."
    assert steps[1]["args"] == {"text": "hello world"} and steps[1]["observation"] == {"words": 2, "chars": 11}
    assert steps[2]["observation"] == "Completed." and all(isinstance(s["thought"], str) for s in steps)
    # the final answer is computed from the observations the agent saw
    seen = 'HELLO WORLD. ; {"words": 2, "chars": 11} ; Completed.'
    assert result["outputs"]["answer"] == value_for("answer", "str",
                                                    {"question": "hello world", "observations": seen})
    assert set(result["outputs"]) == {"reasoning", "answer"}


@pytest.mark.parametrize("adapter", ["json", "xml"])
@pytest.mark.slow
def test_react_works_through_the_other_adapters(worker: Any, adapter: str) -> None:
    steps = react(worker, ["text_stats", "shout"], adapter=adapter)["trajectory"]
    assert [(s["tool"], s["observation"]) for s in steps] == [
        ("text_stats", {"words": 2, "chars": 11}), ("shout", "HELLO WORLD."), ("finish", "Completed.")]


def test_a_tool_that_raises_becomes_the_agents_observation(worker: Any) -> None:
    result = react(worker, ["broken_lookup", "shout"])
    failed, shouted, _ = result["trajectory"]
    assert failed["tool"] == "broken_lookup"
    assert failed["observation"].startswith("Execution error in broken_lookup:")
    assert "service unavailable for 'hello world'" in failed["observation"]
    assert shouted["observation"] == "HELLO WORLD."  # the agent went on after the failure
    assert "service unavailable" in result["outputs"]["answer"]
    assert ok(worker.request("get_program_info", {"program_id": "agent"}))["error_count"] == 0


def test_react_without_tools_only_finishes(worker: Any) -> None:
    assert [s["tool"] for s in react(worker, [])["trajectory"]] == ["finish"]


@pytest.mark.parametrize("tools, text", [
    (["shoot"], "did you mean 'shout'"), (["shout", "nope"], "Unknown tool 'nope'"),
    ("shout", "'tools' must be array"), ([1], "must be a list of tool names")])
def test_unknown_or_malformed_tools_are_refused(refusing_worker: Any, tools: Any, text: str) -> None:
    reply = refusing_worker.request("create_program", {"id": "agent", "signature": "question -> answer",
                                                       "program_type": "react", "tools": tools}, timeout=30)
    assert reply["success"] is False and reply["error_type"] == "invalid_arguments" and text in reply["error"], reply


@pytest.mark.slow
def test_program_data_of_a_react_program_rebuilds_its_tools_elsewhere(worker: Any, spawn_worker: Any,
                                                                      lm_args: dict[str, str]) -> None:
    data = ok(worker.request("create_program", {"id": "agent", "signature": "question -> answer",
                                                "program_type": "react", "tools": ["text_stats"]}, timeout=60))
    assert data["tools"] == ["text_stats"] and data["options"] == {"max_iters": 20}
    other = spawn_worker("--plugin", "sample_tools", env=worker_env(PLUGINS))
    ok(other.request("configure_lm", lm_args, timeout=60))
    result = ok(other.request("execute_program", {"program_id": "agent", "inputs": {"question": "a b c"},
                                                  "program_data": data}, timeout=60))
    assert [(s["tool"], s["observation"]) for s in result["trajectory"]] == [
        ("text_stats", {"words": 3, "chars": 5}), ("finish", "Completed.")]


def test_dspex_commands_lists_the_tools() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--plugin", "sample_tools"],
                          env=worker_env(PLUGINS, COLUMNS="200"), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    tools_part = proc.stdout.split("tools (for react", 1)[1]
    assert "shout" in tools_part and "text*:string" in tools_part and "Counts the words" in tools_part


def test_tool_schema_comes_from_hints_docstring_and_defaults() -> None:
    registry = ToolRegistry()

    @tool(registry=registry)
    def search(query: str, tags: list[str], mode: Literal["fast", "full"] = "fast",
               limit: Optional[int] = None, **rest: Any) -> list[str]:
        """Searches the index.

        Longer text that still belongs to the description.

        Args:
            query: words to look for,
                over two lines
            tags (list[str]): only these
        Returns:
            matches
        """
        return []

    spec = registry.find("search")
    assert spec is not None and spec.func is search
    assert spec.description == "Searches the index. Longer text that still belongs to the description."
    assert spec.parameters == {"type": "object", "required": ["query", "tags"], "properties": {
        "query": {"type": "string", "description": "words to look for, over two lines"},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "only these"},
        "mode": {"enum": ["fast", "full"], "default": "fast"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}}}


def test_tool_names_must_be_identifiers_and_unique() -> None:
    registry = ToolRegistry()

    def one() -> str:
        return "1"

    def two() -> str:
        return "2"

    tool(one, name="same", registry=registry)
    tool(one, name="same", registry=registry)  # the same function again (a re-import) is fine
    with pytest.raises(ValueError, match="already registered"):
        tool(two, name="same", registry=registry)
    for bad in ("finish", "has space", "9lives"):
        with pytest.raises(ValueError, match="identifier"):
            tool(two, name=bad, registry=registry)


def test_plugins_md_tools_example(spawn_worker: Any, tmp_path: Path, lm_args: dict[str, str]) -> None:
    (tmp_path / "city_tools.py").write_text(doc_test("plugins.md", "python tools-plugin").body)
    worker = spawn_worker("--plugin", "city_tools", env=worker_env(tmp_path))
    ok(worker.request("configure_lm", lm_args, timeout=60))
    names = [t["name"] for t in ok(worker.request("list_tools"))["tools"]]
    assert names == ["lookup_city", "population"]
    result = react(worker, ["lookup_city", "population"], question="Paris")
    assert [(s["tool"], s["args"], s["observation"]) for s in result["trajectory"]] == [
        ("lookup_city", {"name": "Paris"}, {"city": "Paris", "country": "France"}),
        ("population", {"city": "Paris"}, 2102650), ("finish", {}, "Completed.")]
    ok(worker.request("delete_program", {"program_id": "agent"}))
    failed = react(worker, ["lookup_city"], question="Atlantis")["trajectory"][0]
    assert "no city called 'Atlantis'" in failed["observation"]
