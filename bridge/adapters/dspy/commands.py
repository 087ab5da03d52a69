"""The DSPy commands of the contract: configure an LM, create and run programs.

Every call runs inside its own `dspy.context` (the LM of its session, an observer of
LM calls, usage tracking); `dspy.configure` is never called, so requests on many
threads never share or fight over global settings.
"""

from __future__ import annotations

import uuid
from typing import Any

from ...engine import Context
from ...errors import BridgeError, Cancelled, InvalidArguments, LimitExceeded
from ...redact import remember_config_secrets, remember_secret, scrub_text
from ...registry import (BUILDS_STATE, CONFIGURES_LM, CREATES_PROGRAM, DELETES_PROGRAM, DESCRIBES_PROGRAM,
                         LISTS_PROGRAMS, RUNS_PROGRAM, STREAMS, VARIANT, Arg, Registry, command)
from ...twoway import Deferred
from . import adapter_of
from .errors import (InvalidInputs, InvalidSignature, LMCallFailed, LMNotConfigured, ProgramExists,
                     ProgramNotFound)
from .async_lane import LANE
from .program_run import ProgramRun
# Other runners of programs import these from here (evaluation: errors; compile: the adapter).
from .program_run import execution_error as _execution_error  # noqa: F401
from .program_run import program_adapter  # noqa: F401
from .lm_calls import (DeadlineExceeded, call_with_deadline, cancellable_lm, make_observer, make_replay_lm,
                       observed_context, widen_connection_pools)
from .loader import load_dspy
from .options import GENERATION_OPTIONS, parse_options
from .state import MAX_PROGRAMS, LMHandle, ProgramRecord
from .modules import (PROGRAM_TYPES, apply_demos, build_module, parse_adapter, parse_program_options,
                      parse_program_type)
from .signatures import (SignatureError, SignatureSpec, coerce_inputs, field_mapping, parse_signature,
                         signature_def)
from .tools import TOOLS, resolve_tools, tool_declarations

COMMANDS = Registry()


def _programs(ctx: Context) -> dict[str, ProgramRecord]:
    """The programs of the request's session (the session is made on first use)."""
    return adapter_of(ctx).state(ctx).programs


def _check_program_room(ctx: Context) -> None:
    """Refuses a new program once the worker holds MAX_PROGRAMS (each holds a DSPy module)."""
    adapter = adapter_of(ctx)
    total = sum(len(s.state[adapter.name].programs) for s in ctx.engine.sessions.all() if adapter.name in s.state)
    if total >= MAX_PROGRAMS:
        raise LimitExceeded(f"This worker already holds {MAX_PROGRAMS} programs; delete some first")


_LM_ARGS = (
    Arg("model", "string", help="e.g. openai/gpt-4o-mini, gemini/gemini-2.0-flash, mock"),
    Arg("provider", "string", help="legacy: google, openai, anthropic, mock"),
    Arg("api_key", "string", help="else taken from the environment"),
    Arg("api_base", "string", help="base URL of an OpenAI-compatible server"),
    Arg("temperature", "number"), Arg("max_tokens", "integer"), Arg("cache", "boolean"),
    Arg("num_retries", "integer"), Arg("timeout", "number"),
    Arg("session_id", "string", help="configure this session's LM instead of the default"),
    Arg("test_call", "boolean", help="make one tiny call to check the LM answers"),
    Arg("adapter", "string", help="chat (default), json or xml: how this LM's programs format prompts"),
)


def configure_session_lm(args: dict[str, Any], ctx: Context) -> LMHandle:
    """Builds an LM from configure_lm-style args (no network call)."""
    from .lm_config import LMConfigError, build_lm, parse_lm_args

    remember_config_secrets(args)
    adapter = parse_adapter(args.get("adapter"))
    try:
        config = parse_lm_args(args)
    except LMConfigError as exc:
        raise InvalidArguments(scrub_text(str(exc))) from None
    remember_secret(config.api_key)
    public = config.public_dict()
    if adapter is not None:  # only when given, so recorded replies without one replay unchanged
        public["adapter"] = adapter
    if ctx.engine.lm_responder is not None:
        return LMHandle(make_replay_lm(public, ctx), public)
    try:
        lm = build_lm(config)
    except BridgeError:
        raise
    except Exception as exc:
        raise InvalidArguments(f"Cannot configure LM {public.get('model')}: "
                               f"{scrub_text(str(exc))}") from None
    return LMHandle(lm, public)


@command("configure_lm", registry=COMMANDS, args=_LM_ARGS, tags={CONFIGURES_LM, BUILDS_STATE})
def configure_lm(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sets the LM of a session (with session_id) or the worker's default LM."""
    handle = configure_session_lm(args, ctx)
    if args.get("test_call"):
        _test_call(handle, ctx)
    if args.get("session_id"):
        adapter_of(ctx).state(ctx).lm = handle
        scope = "session"
    else:
        adapter_of(ctx).default_lm = handle
        scope = "default"
    public = handle.public
    return {"status": "configured", "model": public.get("model"), "provider": public.get("provider"),
            "temperature": public.get("temperature"), "scope": scope, "session_id": ctx.session_id,
            "lm": public}


def _test_call(handle: LMHandle, ctx: Context) -> None:
    dspy = load_dspy()
    try:
        observer = make_observer(ctx)
        lm = cancellable_lm(handle.lm, ctx.cancel, observer)
        with observed_context(dspy, lm, observer):
            call_with_deadline(lambda: lm("Reply with the word ok."), handle.public.get("timeout"))
    except DeadlineExceeded as exc:
        raise LMCallFailed(f"Test call to {handle.model} {exc}") from None
    except Exception as exc:
        raise LMCallFailed(f"Test call to {handle.model} failed: {scrub_text(str(exc))}") from None


def _parse_demos(value: Any, spec: SignatureSpec) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise InvalidArguments("'demos' must be a list of objects (input and output fields)")
    known = set(spec.input_names) | set(spec.output_names)
    for index, demo in enumerate(value):
        unknown = sorted(set(demo) - known - {"reasoning"})
        if unknown:
            raise InvalidArguments(f"demo {index} has unknown fields: {', '.join(unknown)}")
    return value


def build_record(program_id: str, args: dict[str, Any]) -> ProgramRecord:
    """Builds a program and its description from create_program args (or program_data)."""
    raw_signature = args.get("signature")
    if raw_signature is None:
        raise InvalidArguments("create_program: 'signature' is required (a map or \"inputs -> outputs\")")
    try:
        spec = parse_signature(raw_signature)
    except SignatureError as exc:
        raise InvalidSignature(str(exc)) from None
    row = parse_program_type(args.get("program_type"))
    options = parse_program_options(row, args.get("options"))
    tools = resolve_tools(args.get("tools"))
    adapter = parse_adapter(args.get("adapter"))
    demos = _parse_demos(args.get("demos"), spec)
    try:
        module, class_name = build_module(spec, row, options, tools)
        apply_demos(module, spec, demos)
    except SignatureError as exc:
        raise InvalidSignature(str(exc)) from None
    # Everything build_record needs to rebuild the same module elsewhere (program_data).
    description = {
        "program_id": program_id, "status": "created", "signature": spec.to_dict(),
        "program_type": row.name, "signature_class": class_name,
        "field_mapping": field_mapping(spec), "fallback_used": False,
        "signature_def": signature_def(spec), "demos": demos,
    }
    # Only what differs from a plain program, so replies recorded before these existed replay unchanged.
    extra = {"options": options, "tools": tool_declarations(tools), "adapter": adapter}
    description.update({key: value for key, value in extra.items() if value})
    if args.get("model"):
        description["model"] = args["model"]
    if args.get("state") is not None:
        # A compiled or imported program: its program_data rebuilds the compiled state.
        from .portable import apply_program_state, dump_program_state

        apply_program_state(module, args["state"])
        description["state"] = dump_program_state(module)
    return ProgramRecord(program_id=program_id, program=module, program_type=row.name,
                         signature=spec.to_dict(), description=description)


_PROGRAM_ARGS = (
    Arg("id", "string", help="program id (generated when absent)"),
    Arg("signature", "string|object", required=True,
        help='DSPex map {name, inputs:[{name,type}], outputs:[...]} or "question -> answer: int"'),
    Arg("program_type", "string", help=", ".join(row.name for row in PROGRAM_TYPES) + " (default predict)",
        choices=tuple(row.name for row in PROGRAM_TYPES)),
    Arg("options", "object", help="the program type's own options, e.g. {\"max_iters\": 5} for react"),
    Arg("tools", "array", help="for react: names of registered tools (see list_tools) and client tools "
        "{name, description, parameters: JSON schema, handler: \"client\"} answered through callback events"),
    Arg("adapter", "string", help="chat, json or xml (default: the LM's, else chat)"),
    Arg("demos", "array", help="few-shot examples: objects with input and output fields"),
    Arg("session_id", "string"),
)


@command("create_program", registry=COMMANDS, args=_PROGRAM_ARGS, tags={CREATES_PROGRAM, BUILDS_STATE})
def create_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Creates a program from a signature in the request's session."""
    program_id = args.get("id") or args.get("program_id") or f"program_{uuid.uuid4().hex[:12]}"
    if not isinstance(program_id, str):
        program_id = str(program_id)
    programs = _programs(ctx)
    if program_id in programs:
        raise ProgramExists(program_id)
    record = build_record(program_id, args)
    _check_program_room(ctx)
    programs[program_id] = record
    ctx.engine.publish("program_created", {"session_id": ctx.session_id, "program_id": program_id})
    return dict(record.description)


@command("create_gemini_program", registry=COMMANDS, args=(*_PROGRAM_ARGS, Arg("model", "string")),
         tags={CREATES_PROGRAM, BUILDS_STATE, VARIANT})
def create_gemini_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Legacy alias of create_program; a `model` becomes the program's own Gemini LM."""
    return create_program(args, ctx)


def _find_program(args: dict[str, Any], ctx: Context) -> ProgramRecord:
    program_id = args.get("program_id")
    if not program_id:
        raise InvalidArguments("'program_id' is required")
    programs = _programs(ctx)
    record = programs.get(program_id)
    if record is not None:
        return record
    program_data = args.get("program_data")
    if isinstance(program_data, dict) and program_data:
        # Another worker created it: rebuild from its description, keep it for next time.
        record = build_record(program_id, program_data)
        return programs.setdefault(program_id, record)
    raise ProgramNotFound(program_id)


def _program_lm(record: ProgramRecord, ctx: Context) -> LMHandle:
    model = record.description.get("model")
    if model:
        if record.own_lm is None:
            record.own_lm = configure_session_lm({"provider": "google", "model": model}, ctx)
        return record.own_lm
    handle = adapter_of(ctx).lm_for(ctx)
    if handle is None:
        raise LMNotConfigured()
    return handle


_EXECUTE_ARGS = (
    Arg("program_id", "string", required=True), Arg("inputs", "object", help="input field values"),
    Arg("options", "array|object",
        help="generation settings for this call, only: " + ", ".join(GENERATION_OPTIONS)),
    Arg("program_data", "object", help="what create_program returned; rebuilds the program here"),
    Arg("session_id", "string"),
)


@command("execute_program", registry=COMMANDS, read_only=True, args=_EXECUTE_ARGS, scheduling="read",
         tags={RUNS_PROGRAM, STREAMS})
def execute_program(args: dict[str, Any], ctx: Context) -> Deferred:
    """Runs a program on inputs; outputs come back typed as the signature declares.

    With `stream: true`, `chunk` and `status` events come first (docs/protocol.md)."""
    record = _find_program(args, ctx)
    handle = _program_lm(record, ctx)
    # What an inspector shows for this request (the endpoint is the secret-free api_base).
    ctx.note(program_id=record.program_id, model=handle.model, endpoint=handle.public.get("api_base"),
             retries=handle.public.get("num_retries"))
    spec = SignatureSpec.from_dict(record.signature)
    inputs = args.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise InvalidArguments("'inputs' must be an object of input field values")
    try:
        inputs = coerce_inputs(spec, inputs)
    except SignatureError as exc:
        raise InvalidInputs(str(exc)) from None
    options = parse_options(args.get("options"))
    if ctx.cancel.is_set():
        raise Cancelled("Request cancelled before it started")
    load_dspy()
    widen_connection_pools(LANE.limit)
    call_kwargs = dict(inputs)
    if options:
        call_kwargs["config"] = options
    run = ProgramRun(record, handle, spec, call_kwargs, ctx, args)  # type: ignore[arg-type]
    # The pool thread is free once this returns; the lane's task sends the reply.
    return Deferred(LANE.submit(run.execute, ctx.cancel, on_start=ctx.note_task))


@command("execute_gemini_program", registry=COMMANDS, read_only=True, args=_EXECUTE_ARGS, scheduling="read",
         tags={RUNS_PROGRAM, STREAMS, VARIANT})
def execute_gemini_program(args: dict[str, Any], ctx: Context) -> Deferred:
    """Legacy alias of execute_program."""
    return execute_program(args, ctx)


def _summary(record: ProgramRecord) -> dict[str, Any]:
    return {"id": record.program_id, "program_id": record.program_id, "created_at": record.created_at,
            "execution_count": record.execution_count, "last_executed": record.last_executed,
            "signature": record.signature, "program_type": record.program_type,
            "signature_def": record.description.get("signature_def"),
            "mean_latency_ms": record.mean_latency_ms, "error_count": record.error_count}


@command("list_programs", registry=COMMANDS, read_only=True, args=(Arg("session_id", "string"),),
         tags={LISTS_PROGRAMS})
def list_programs(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The programs of the request's session."""
    programs = [_summary(r) for r in _programs(ctx).values()]
    return {"programs": programs, "total_count": len(programs), "session_id": ctx.session_id}


@command("get_program_info", registry=COMMANDS, read_only=True, tags={DESCRIBES_PROGRAM}, args=(Arg("program_id", "string", required=True), Arg("session_id", "string")))
def get_program_info(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Details and counters of one program."""
    record = _programs(ctx).get(args["program_id"])
    if record is None:
        raise ProgramNotFound(args["program_id"])
    info = _summary(record)
    info["program_data"] = record.description
    return info


@command("delete_program", registry=COMMANDS, destructive=True, tags={DELETES_PROGRAM}, args=(Arg("program_id", "string", required=True), Arg("session_id", "string")))
def delete_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Removes one program from the request's session."""
    if _programs(ctx).pop(args["program_id"], None) is None:
        raise ProgramNotFound(args["program_id"])
    return {"program_id": args["program_id"], "status": "deleted"}


@command("list_tools", registry=COMMANDS, read_only=True, scheduling="inline")
def list_tools(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The tools plugins registered with @tool, for react programs' `tools`."""
    tools = [spec.describe() for spec in TOOLS.specs()]
    return {"tools": tools, "total_count": len(tools)}
