"""Plain records (bridge/plain_record.py): the start-up path's value classes behave like the
dataclasses they replaced (equality, repr, hash, frozenness, fresh defaults)."""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from bridge.errors import BridgeError
from bridge.jobs import RUNNING, Job
from bridge.plain_record import FrozenRecord, PlainRecord
from bridge.registry import Arg, CommandSpec
from bridge.serve.config import ServeConfig
from dspex_cli.repl.meta_registry import MetaSpec


def _handler(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {}


class _Point(FrozenRecord):
    _fields = ("x", "y")

    def __init__(self, x: Any, y: Any = 0) -> None:
        self.__dict__.update(x=x, y=y)

    @functools.cached_property
    def total(self) -> Any:
        return self.x + self.y


# -- the constructors keep the dataclasses' signatures ----------------------------------------

# Each class's dataclass fields, in their order: positional calls depend on it.
DATACLASS_FIELDS = {
    Arg: ("name", "type", "required", "help", "choices"),
    CommandSpec: ("name", "handler", "summary", "args", "scheduling", "aliases", "read_only", "destructive",
                  "plugin", "extra", "tags"),
    Job: ("job_id", "kind", "session_id", "request_id", "total", "created_at", "started", "status", "done",
          "score", "best_score", "lm_calls", "tokens", "cost", "result", "error", "finished", "cancel", "_ended",
          "thread_alive", "_lock", "watchers", "_on_end"),
    ServeConfig: ("mode", "worker_id", "max_concurrency", "max_async", "max_frame_size", "plugins", "record",
                  "control", "drain_timeout", "warm", "metrics", "argv", "parent_pid", "log_level",
                  "replay_cassette", "adapter_options", "adapters", "record_ignore", "entry_point_adapters"),
}
# The console's MetaSpec extends CommandSpec, as its dataclass did: the base's fields first.
DATACLASS_FIELDS[MetaSpec] = (*DATACLASS_FIELDS[CommandSpec], "usage", "complete")


@pytest.mark.parametrize("cls", list(DATACLASS_FIELDS), ids=lambda cls: cls.__name__)
def test_constructor_fields_and_order_are_the_dataclass_ones(cls: type[PlainRecord]) -> None:
    assert tuple(inspect.signature(cls).parameters) == DATACLASS_FIELDS[cls]
    # Equality and repr cover exactly the constructor's fields.
    assert cls._fields == DATACLASS_FIELDS[cls]
    assert not hasattr(cls, "__dataclass_fields__")


def test_positional_construction_follows_the_field_order() -> None:
    arg = Arg("n", "integer", True, "how many", ("1", "2"))
    assert (arg.name, arg.type, arg.required, arg.help, arg.choices) == ("n", "integer", True, "how many", ("1", "2"))
    spec = CommandSpec("x", _handler, "does x", (arg,), "read", ("y",), True, False, "plug", {"k": 1},
                       frozenset({"t"}))
    assert (spec.args, spec.scheduling, spec.aliases, spec.read_only, spec.plugin, spec.extra, spec.tags) == \
        ((arg,), "read", ("y",), True, "plug", {"k": 1}, frozenset({"t"}))
    job = Job("job-1", "evaluate", "s", 7, 10)
    assert (job.job_id, job.kind, job.session_id, job.request_id, job.total) == ("job-1", "evaluate", "s", 7, 10)


def test_defaults_match_the_dataclasses() -> None:
    arg = Arg("a")
    assert (arg.type, arg.required, arg.help, arg.choices) == ("any", False, "", ())
    spec = CommandSpec(name="x", handler=_handler, summary="s")
    assert (spec.args, spec.scheduling, spec.aliases, spec.read_only, spec.destructive, spec.plugin, spec.extra,
            spec.tags) == ((), "write", (), False, False, None, {}, frozenset())
    job = Job(job_id="j", kind="k", session_id="s", request_id=1)
    assert (job.total, job.status, job.done, job.score, job.best_score, job.lm_calls, job.tokens, job.cost,
            job.result, job.error, job.finished, job.thread_alive, job.watchers, job._on_end) == \
        (None, RUNNING, 0, None, None, 0, {}, 0.0, None, None, None, True, [], [])
    assert isinstance(job.created_at, float) and isinstance(job.started, float)
    assert not job.cancel.is_set() and not job.ended
    config = ServeConfig()
    assert (config.mode, config.control, config.drain_timeout, config.warm, config.log_level, config.plugins,
            config.argv, config.adapter_options, config.adapters, config.record_ignore,
            config.entry_point_adapters) == ("standalone", "on", 30.0, True, "warning", [], [], {}, None, [], False)


def test_mutable_defaults_are_fresh_per_instance() -> None:
    one, two = (CommandSpec(name="x", handler=_handler, summary="s") for _ in range(2))
    assert one.extra is not two.extra
    first, second = (Job(job_id="j", kind="k", session_id="s", request_id=1) for _ in range(2))
    for name in ("tokens", "cancel", "_ended", "_lock", "watchers", "_on_end"):
        assert getattr(first, name) is not getattr(second, name), name
    first.tokens["total_tokens"] = 3
    first.cancel.set()
    assert second.tokens == {} and not second.cancel.is_set()
    a, b = ServeConfig(), ServeConfig()
    for name in ("plugins", "argv", "adapter_options", "record_ignore"):
        assert getattr(a, name) is not getattr(b, name), name
    a.plugins.append("p")
    assert b.plugins == []


def test_given_values_are_kept_as_given() -> None:
    tokens: dict[str, int] = {"total_tokens": 1}
    event = threading.Event()
    job = Job("j", "k", "s", 1, tokens=tokens, cancel=event, created_at=5.0, started=6.0)
    assert job.tokens is tokens and job.cancel is event and (job.created_at, job.started) == (5.0, 6.0)


def test_arg_still_checks_its_type() -> None:
    with pytest.raises(ValueError, match="unknown type 'str'"):
        Arg("name", "str")


# -- equality and repr --------------------------------------------------------------------------

def test_equality_is_over_every_field_and_the_exact_type() -> None:
    assert Arg("a", "string") == Arg("a", "string")
    assert Arg("a", "string") != Arg("a", "integer")
    assert Arg("a") != ("a", "any", False, "", ())
    assert Arg("a").__eq__(_Point("a")) is NotImplemented
    assert ServeConfig(plugins=["p"]) == ServeConfig(plugins=["p"])
    assert ServeConfig(plugins=["p"]) != ServeConfig()
    job = Job("j", "k", "s", 1, created_at=1.0, started=2.0)
    same = Job("j", "k", "s", 1, created_at=1.0, started=2.0, cancel=job.cancel, _ended=job._ended,
               _lock=job._lock)
    assert job == same
    assert job != Job("j", "k", "s", 1, created_at=1.0, started=2.0)  # its own lock and events


def test_a_field_that_is_the_same_object_compares_equal_like_a_dataclass() -> None:
    nan = float("nan")
    job = Job("j", "k", "s", 1, score=nan)
    assert job == job


def test_repr_lists_the_fields_and_leaves_the_hidden_ones_out() -> None:
    assert repr(Arg("a")) == "Arg(name='a', type='any', required=False, help='', choices=())"
    text = repr(Job("j", "k", "s", 1, error=BridgeError("boom")))
    assert text.startswith("Job(job_id='j', kind='k', session_id='s', request_id=1, total=None, created_at=")
    assert "thread_alive=True" in text
    for hidden in ("cancel=", "_ended=", "_lock=", "watchers=", "_on_end="):
        assert hidden not in text
    assert repr(ServeConfig()).startswith("ServeConfig(mode='standalone', worker_id=None, ")


# -- frozen records -------------------------------------------------------------------------------

def test_frozen_records_refuse_assignment_and_deletion() -> None:
    arg = Arg("a")
    spec = CommandSpec(name="x", handler=_handler, summary="s")
    for record, name in ((arg, "type"), (spec, "scheduling"), (spec, "new_attribute"), (_Point(1), "x")):
        with pytest.raises(AttributeError):
            setattr(record, name, "changed")
        with pytest.raises(AttributeError):
            delattr(record, name)
    assert arg.type == "any" and spec.scheduling == "write" and not hasattr(spec, "new_attribute")


def test_a_meta_spec_is_a_frozen_command_spec_with_its_own_fields() -> None:
    spec = MetaSpec(name=":x", handler=_handler, summary="s", aliases=(":y",), usage=":x FILE", complete="file")
    assert (spec.name, spec.aliases, spec.scheduling, spec.usage, spec.complete) == (":x", (":y",), "write",
                                                                                     ":x FILE", "file")
    assert MetaSpec(name=":x", handler=_handler, summary="s").usage == ""
    assert spec == MetaSpec(name=":x", handler=_handler, summary="s", aliases=(":y",), usage=":x FILE",
                            complete="file")
    assert spec != MetaSpec(name=":x", handler=_handler, summary="s", aliases=(":y",), usage=":x", complete="file")
    assert CommandSpec(name=":x", handler=_handler, summary="s") != MetaSpec(name=":x", handler=_handler, summary="s")
    assert "usage=':x FILE', complete='file')" in repr(spec)
    with pytest.raises(AttributeError):
        spec.usage = "changed"  # type: ignore[misc]
    assert spec.validated is False


def test_mutable_records_stay_mutable() -> None:
    config = ServeConfig()
    config.mode = "pool-worker"
    assert config.mode == "pool-worker"


def test_cached_property_works_on_a_frozen_record() -> None:
    point = _Point(2, 3)
    assert point.total == 5
    assert point.__dict__["total"] == 5  # cached, written past the frozen __setattr__
    plain = CommandSpec(name="p", handler=_handler, summary="s")
    checked = CommandSpec(name="c", handler=_handler, summary="s", args=(Arg("n", "integer"),))
    assert plain.validated is False and checked.validated is True
    assert "validated" in checked.__dict__


def test_frozen_records_hash_over_their_fields() -> None:
    assert hash(Arg("a", "string")) == hash(Arg("a", "string"))
    assert hash(Arg("a", "string", choices=("x",))) == hash(("a", "string", False, "", ("x",)))
    assert hash(_Point(1, 2)) == hash((1, 2))
    assert len({Arg("a"), Arg("a"), Arg("b")}) == 2
    # As a frozen dataclass: a field holding a dict (CommandSpec.extra) makes it unhashable.
    with pytest.raises(TypeError):
        hash(CommandSpec(name="x", handler=_handler, summary="s"))


def test_plain_records_are_unhashable_like_plain_dataclasses() -> None:
    for record in (ServeConfig(), Job("j", "k", "s", 1)):
        with pytest.raises(TypeError):
            hash(record)


# Logs which modules' code imports dataclasses while the worker's start-up modules load.
_WHO_IMPORTS_DATACLASSES = """
import builtins, json, sys
importers = []
original = builtins.__import__
def watching(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "dataclasses":
        importers.append((globals or {}).get("__name__", "?"))
    return original(name, globals, locals, fromlist, level)
builtins.__import__ = watching
import bridge.serve.server, bridge.jobs, bridge.serve.config, dspex_cli.serve_cmd
print(json.dumps(importers))
"""


def test_no_start_up_module_of_dspex_imports_dataclasses() -> None:
    # dataclasses costs ~7 ms to import (inspect, dis, ast) and ~1 ms per class on a worker's
    # way to its first reply. (orjson still imports it from C, as a module of no name here.)
    done = subprocess.run([sys.executable, "-c", _WHO_IMPORTS_DATACLASSES], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    importers = json.loads(done.stdout)
    assert not [name for name in importers if name.startswith(("bridge", "dspex_cli"))], importers
