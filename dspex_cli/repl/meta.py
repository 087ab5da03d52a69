"""The console's meta-commands (`:help`, `:session`, ...): their handlers.

Each is registered with `@meta(...)` in META, the console's Registry (see
meta_registry.py), and gets a MetaContext and the text after its name. Commands are
chosen by their effect tags (bridge.registry.LISTS_PROGRAMS ...), not by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.registry import LISTS_PROGRAMS, LISTS_SESSIONS, REPORTS_STATS

from .meta_registry import META, MetaContext, find_meta, meta, meta_names
from .parsing import ParseError, closest, command_for, parse_assignments, registry, split_words


def run_meta(ctx: MetaContext, name: str, argument: str) -> None:
    META.run(ctx, name, argument)


def _on_off(argument: str, current: bool, what: str) -> bool:
    word = argument.strip().lower()
    if word in ("", "toggle"):
        return not current
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    raise ParseError(f"{what}: expected on or off, got {argument!r}", f"write :{what} on or :{what} off")


# -- help and settings -------------------------------------------------------------------

@meta("help", "[command]", complete="command", aliases=("h", "?"))
def help_(ctx: MetaContext, argument: str) -> None:
    """Lists commands, or shows one command's arguments."""
    name = argument.strip().lstrip(":")
    if not name:
        ctx.out.data("help", {
            "commands": [{"name": s.name, "summary": s.summary,
                          "args": [a.name for a in s.args]} for s in registry().specs()],
            "meta": [{"name": f":{m.name}", "usage": m.usage, "summary": m.summary}
                     for m in map(find_meta, META.names())],
        })
        return
    if name in registry():
        spec = registry().get(name)
        ctx.out.data("help_command", {
            "name": spec.name, "summary": spec.summary, "scheduling": spec.scheduling,
            "aliases": list(spec.aliases),
            "args": [{"name": a.name, "type": a.type, "required": a.required, "help": a.help} for a in spec.args],
        })
        return
    if name in META:
        command = find_meta(name)
        ctx.out.data("help_meta", {"name": f":{command.name}", "usage": command.usage,
                                   "summary": command.summary,
                                   "aliases": [f":{a}" for a in command.aliases]})
        return
    suggestion = registry().suggest(name) or closest(name, meta_names(include_aliases=True))
    raise ParseError(f"No command or meta-command named {name!r}",
                     f"did you mean '{suggestion}'?" if suggestion else "type :help for the list")


@meta("json", "on|off", complete="onoff")
def json_(ctx: MetaContext, argument: str) -> None:
    """Shows requests and replies as raw JSON (on) or rendered (off)."""
    ctx.show_json = _on_off(argument, ctx.show_json, "json")
    ctx.out.info(f"json {'on' if ctx.show_json else 'off'}", {"json": ctx.show_json})


@meta("timing", "on|off", complete="onoff")
def timing(ctx: MetaContext, argument: str) -> None:
    """Shows (on) or hides (off) how long each call took."""
    ctx.timing = _on_off(argument, ctx.timing, "timing")
    ctx.out.info(f"timing {'on' if ctx.timing else 'off'}", {"timing": ctx.timing})


@meta("stream", "on|off", complete="onoff")
def stream(ctx: MetaContext, argument: str) -> None:
    """Sends commands that can stream with "stream": true (on) and shows their chunks and
    progress as they arrive, or not (off)."""
    ctx.stream = _on_off(argument, ctx.stream, "stream")
    ctx.out.info(f"stream {'on' if ctx.stream else 'off'}", {"stream": ctx.stream})


@meta("quit", aliases=("q", "exit"))
def quit_(ctx: MetaContext, argument: str) -> None:
    """Leaves the console (Ctrl-D does too)."""
    ctx.quit()


# -- sessions, LMs and programs -------------------------------------------------------

@meta("session", "[id]", complete="session")
def session(ctx: MetaContext, argument: str) -> None:
    """Lists sessions, or switches the session commands run in."""
    target = argument.strip()
    if not target:
        reply = ctx.send(command_for(LISTS_SESSIONS), {}, show_reply=False)
        if reply and reply.get("success"):
            result = reply["result"]
            ctx.out.data("sessions", {"current": ctx.session, "sessions": result.get("sessions") or []})
        return
    if any(c.isspace() for c in target):
        raise ParseError("A session id is one word", ":session my_session")
    ctx.switch_session(target)
    ctx.out.info(f"session is now {ctx.session}", {"session": ctx.session})


@meta("lm", "MODEL [key=value ...]", complete="model")
def lm(ctx: MetaContext, argument: str) -> None:
    """Configures the LM (of the current session, or the default): `:lm mock`, `:lm openai/x api_base=...`."""
    ctx.configure_lm(argument)


def _define(ctx: MetaContext, argument: str, program_type: str) -> None:
    name, _, signature = argument.strip().partition(" ")
    signature = signature.strip()
    if not name or "->" not in signature:
        raise ParseError("Expected a name and a signature",
                         "e.g. :def qa question -> answer: int  (or: qa = question -> answer: int)")
    ctx.define(name, signature, program_type)


@meta("def", "NAME inputs -> outputs")
def def_(ctx: MetaContext, argument: str) -> None:
    """Defines a Predict program from a DSPy string signature (replacing one of that name)."""
    _define(ctx, argument, "predict")


@meta("cot", "NAME inputs -> outputs")
def cot(ctx: MetaContext, argument: str) -> None:
    """Defines a ChainOfThought program from a DSPy string signature."""
    _define(ctx, argument, "chain_of_thought")


@meta("call", "PROGRAM field=value ...", complete="program")
def call(ctx: MetaContext, argument: str) -> None:
    """Runs a program with keyword inputs (same as PROGRAM(field=value))."""
    words = split_words(argument)
    if not words:
        raise ParseError("Which program?", ":call qa question='What is DSPy?'")
    ctx.call_program(words[0], parse_assignments(words[1:]))


@meta("programs")
def programs(ctx: MetaContext, argument: str) -> None:
    """Lists the programs of the current session."""
    reply = ctx.send(command_for(LISTS_PROGRAMS), {}, show_reply=False)
    if reply and reply.get("success"):
        ctx.out.data("programs", reply["result"])


# -- LM calls ---------------------------------------------------------------------------

def _preview(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarise_lm_call(record: dict[str, Any]) -> dict[str, Any]:
    """The columns of `:history`: what was asked, what came back, how fast, how many tokens."""
    if "prompt_preview" in record:  # already summarised by a control socket's `lm` view
        return {"model": record.get("model"), "latency_ms": record.get("latency_ms"),
                "tokens": (record.get("usage") or {}).get("total_tokens"),
                "prompt": _preview(record.get("prompt_preview") or ""),
                "answer": _preview(record.get("error") or record.get("answer_preview") or ""),
                "error": record.get("error"), "session_id": record.get("session_id")}
    request = record.get("request") or {}
    messages = request.get("messages") or []
    prompt = ""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            prompt = message.get("content") or ""
            break
    response = record.get("response") or {}
    outputs = response.get("outputs") if isinstance(response, dict) else None
    answer = outputs[0] if isinstance(outputs, list) and outputs else (record.get("error") or "")
    if isinstance(answer, dict):
        answer = answer.get("text") or answer
    usage = record.get("usage") or (response.get("usage") if isinstance(response, dict) else None) or {}
    return {"model": record.get("model") or request.get("model"),
            "latency_ms": record.get("latency_ms"),
            "tokens": usage.get("total_tokens") if isinstance(usage, dict) else None,
            "prompt": _preview(prompt), "answer": _preview(answer),
            "error": record.get("error"), "session_id": record.get("session_id")}


@meta("history", "[n]")
def history(ctx: MetaContext, argument: str) -> None:
    """The last n LM calls (default 10): prompt, answer, model, latency, tokens."""
    try:
        limit = int(argument.strip() or 10)
    except ValueError:
        raise ParseError(f":history takes a number, got {argument.strip()!r}", ":history 5") from None
    records = ctx.target.lm_calls(max(limit, 1))
    if records is None:
        raise ParseError("This target does not expose its LM calls",
                         "workers started with `dspex serve` show them through their control socket")
    ctx.out.data("history", [summarise_lm_call(r) for r in records])


@meta("usage")
def usage(ctx: MetaContext, argument: str) -> None:
    """Token usage and LM call counts of the worker, with a per-model breakdown."""
    reply = ctx.send(command_for(REPORTS_STATS), {}, show_reply=False)
    if not reply or not reply.get("success"):
        return
    result = reply["result"]
    per_model: dict[str, dict[str, float]] = {}
    for record in ctx.target.lm_calls(1000) or []:
        model = str(record.get("model") or "?")
        row = per_model.setdefault(model, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                           "total_tokens": 0, "latency_ms": 0.0})
        row["calls"] += 1
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = (record.get("usage") or {}).get(key)
            if isinstance(value, (int, float)):
                row[key] += value
        row["latency_ms"] += float(record.get("latency_ms") or 0)
    ctx.out.data("usage", {"lm_calls": result.get("lm_calls"), "usage": result.get("usage") or {},
                           "commands": result.get("command_count"), "errors": result.get("error_count"),
                           "by_model": per_model})


# -- files: record, replay, save, load --------------------------------------------------

@meta("record", "FILE | off", complete="file")
def record(ctx: MetaContext, argument: str) -> None:
    """Writes what follows as a transcript for `dspex replay`; `:record off` finishes it."""
    target = argument.strip()
    if target in ("", "status"):
        state = f"recording to {ctx.recording_path}" if ctx.recording_path else "not recording"
        ctx.out.info(state, {"recording": ctx.recording_path})
        return
    finished = ctx.end_recording()
    if finished is not None:
        ctx.out.info(f"recording finished: {finished}", {"recorded": finished})
        if target == "off":
            return
    elif target == "off":
        ctx.out.info("not recording", {"recording": None})
        return
    path = Path(target).expanduser()
    if path.parent and not path.parent.exists():
        raise ParseError(f"No such directory: {path.parent}", "create it, or record to another path")
    setup_log = ctx.setup_log
    try:
        stop = ctx.target.start_recording(path, setup_log)
    except ImportError:
        raise ParseError("Recording is not available in this installation",
                         "it needs bridge.record (the record/replay feature)") from None
    except OSError as exc:
        raise ParseError(f"Cannot record to {path}: {exc.strerror or exc}") from None
    ctx.begin_recording(str(path), stop)
    prelude = f"; it starts with the {len(setup_log)} command(s) that built this state" if setup_log else ""
    ctx.out.info(f"recording to {path}{prelude} (:record off to finish)",
                 {"recording": str(path), "prelude": len(setup_log)})


@meta("replay", "FILE [--into-attached]", complete="file")
def replay(ctx: MetaContext, argument: str) -> None:
    """Replays a transcript in a scratch engine or worker and shows what differs."""
    ctx.replay(argument)


@meta("save", "PROGRAM [FILE]", complete="program_then_file")
def save(ctx: MetaContext, argument: str) -> None:
    """Saves a program, compiled state included, as a portable document (default PROGRAM.json)."""
    from .lifecycle import save_document

    words = split_words(argument)
    if not words or len(words) > 2:
        raise ParseError(":save needs a program id and optionally a file", ":save qa qa.json")
    program_id = words[0]
    save_document(ctx, program_id, Path(words[1] if len(words) > 1 else f"{program_id}.json").expanduser())


@meta("load", "FILE [PROGRAM]", complete="file")
def load(ctx: MetaContext, argument: str) -> None:
    """Rebuilds a program from a file written by :save or :export (optionally under another id)."""
    from .lifecycle import PROGRAM_DOCUMENT, load_document, read_json

    words = split_words(argument)
    if not words or len(words) > 2:
        raise ParseError(":load needs a file and optionally a program id", ":load qa.json qa2")
    path = Path(words[0]).expanduser()
    document = read_json(path)
    if isinstance(document, dict) and document.get("format") == PROGRAM_DOCUMENT:
        load_document(ctx, path, words[1] if len(words) > 1 else None, document)
        return
    # A file of :save from before portable documents: its program_data (no compiled state).
    data = document.get("program_data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or "signature" not in data:
        raise ParseError(f"{path} holds no program", "load files written by :save or :export")
    program_id = words[1] if len(words) > 1 else str(document.get("program_id") or data.get("program_id"))
    args: dict[str, Any] = {"id": program_id, "signature": data["signature"]}
    for key in ("program_type", "demos"):
        if data.get(key):
            args[key] = data[key]
    ctx.create_program(args)


@meta("attach", "WORKER | local", complete=None)
def attach(ctx: MetaContext, argument: str) -> None:
    """Switches the target: a live worker (pid, worker id, socket path) or `local` (in-process)."""
    from .targets import AttachTarget, InProcessTarget

    spec = argument.strip()
    if not spec:
        ctx.out.info(f"target: {ctx.target.label()}", {"target": ctx.target.label()})
        return
    new_target = InProcessTarget() if spec == "local" else AttachTarget(spec)
    new_target.start()
    if isinstance(new_target, AttachTarget) and new_target.label().endswith("(not connected)"):
        # Probe so a dead worker is reported now rather than on the next command.
        probe = new_target.submit({"id": 0, "command": "ping", "args": {}}).result(10)
        if not probe.get("success"):
            ctx.fail(probe.get("error", "cannot attach"), probe.get("suggestion"),
                     probe.get("error_type", "worker_unreachable"))
            return
    if ctx.recording_path is not None:
        record(ctx, "off")
    ctx.replace_target(new_target)
    ctx.out.info(f"target: {new_target.label()}", {"target": new_target.label()})


# The life-cycle meta-commands (:eval, :compile, :jobs, :export, :import, :tools, :metrics)
# register into the same META when this module is imported.
from . import lifecycle  # noqa: E402,F401
