"""Watching and answering LM calls.

Every LM call made while serving a request is observed through a DSPy callback: its
normalised request (model, messages, generation parameters; never keys or addresses)
and its answer become a record that the engine keeps for inspect, counts for usage and
hands to the recorder as a cassette entry. Replay answers calls from a cassette by
swapping the session's LM for a `ReplayLM` that asks `engine.lm_responder`.
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar


from ...redact import redact
from .loader import load_dspy

if TYPE_CHECKING:
    from ...engine import Context
    from .state import ProgramRecord, UsageTotals

T = TypeVar("T")

# Parameters that change what a model answers; everything else (client settings,
# retries, cache flags) is left out of the key so a recording replays anywhere.
KEY_PARAMS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "stop",
              "response_format", "tools", "tool_choice", "seed", "logprobs")


def normalise_request(model: str, messages: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The parts of an LM request that determine its answer, JSON-safe."""
    kept = {k: params[k] for k in KEY_PARAMS if params.get(k) is not None}
    return {"model": model, "messages": _jsonable(messages), "params": _jsonable(kept)}


def _cassette_key(request: dict[str, Any]) -> str:
    from ...record.transcript import request_key  # on the first LM call, not at start-up

    return request_key(request)


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def make_observer(ctx: Context, on_call: Callable[[dict[str, Any]], None] | None = None,
                  program: ProgramRecord | None = None) -> Any:
    """A DSPy callback that reports each LM call of this request to the engine, and to
    `on_call` (a job counting its own calls, tokens and cost) with the call's record.
    Each call also counts toward the session's usage and, given one, the program's."""
    return _observer_class()(ctx, on_call, program)


@functools.cache
def _observer_class() -> type:
    """The callback class, made once: DSPy (its base class) is only there once loaded."""
    dspy = load_dspy()

    class LMCallObserver(dspy.utils.callback.BaseCallback):  # type: ignore[name-defined,misc]
        def __init__(self, ctx: Context, on_call: Callable[[dict[str, Any]], None] | None,
                     program: ProgramRecord | None) -> None:
            self.ctx = ctx
            self.on_call = on_call
            self.program = program
            self.pending: dict[str, tuple[float, dict[str, Any], Any]] = {}
            self.attempts = 0
            self.tools = 0

        def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.tools += 1
            self.ctx.note_thread()
            self.ctx.note(phase="tool", tool=str(getattr(instance, "name", "?")), tool_calls=self.tools)

        def on_tool_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
            self.ctx.note(phase="running")

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            params = {**getattr(instance, "kwargs", {}), **(inputs.get("kwargs") or {})}
            messages = inputs.get("messages")
            if messages is None and inputs.get("prompt") is not None:
                messages = [{"role": "user", "content": inputs["prompt"]}]
            request = normalise_request(str(getattr(instance, "model", "?")), messages, params)
            self.pending[call_id] = (time.monotonic(), request, instance)
            self.attempts += 1
            # The thread that makes the call may be a deadline helper, not the request's own.
            self.ctx.note_thread()
            self.ctx.note(phase="lm_call", attempt=self.attempts, lm_call_started=time.time())

        def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
            ctx = self.ctx
            started, request, instance = self.pending.pop(call_id, (time.monotonic(), {}, None))
            ctx.note(phase="lm_call" if self.pending else "running")
            usage = _last_usage(dspy, request.get("model"))
            cost = None if exception else call_cost(instance, outputs, usage)
            record = {
                "call_id": call_id, "request_id": ctx.request_id, "session_id": ctx.session_id,
                "command": ctx.command, "key": _cassette_key(request) if request else None,
                "program_id": getattr(self.program, "program_id", None),
                "model": request.get("model"), "request": request,
                "response": None if exception else {"outputs": _jsonable(outputs), "usage": usage},
                "error": None if exception is None else f"{type(exception).__name__}: {exception}",
                "latency_ms": round((time.monotonic() - started) * 1000, 3),
                "usage": usage, "cost": cost, "timestamp": time.time(),
            }
            record = redact(record)
            ctx.engine.record_lm_call(record)
            for totals in (session_usage(ctx), getattr(self.program, "usage", None)):
                if totals is not None:
                    totals.add(usage, cost)
            if self.on_call is not None:
                self.on_call(record)

    return LMCallObserver


# How far back in an LM's history the entry of the call that just ended may sit: the
# entries of calls that ended at the same time on other threads come after it.
_HISTORY_LOOKBACK = 256


def call_cost(instance: Any, outputs: Any, usage: dict[str, Any]) -> float | None:
    """The cost in USD of the LM call that returned `outputs`, or None where unknown.

    A provider that reports its own charge (OpenRouter's `usage.cost`) is believed first.
    Otherwise DSPy has already priced the call from the price map it ships (the LiteLLM
    map, read locally because the loader sets LITELLM_LOCAL_MODEL_COST_MAP) and written
    the price into the LM's history entry, which holds the very `outputs` object returned.
    """
    reported = usage.get("cost")
    if isinstance(reported, (int, float)) and not isinstance(reported, bool) and math.isfinite(reported):
        return float(reported)
    history = getattr(instance, "history", None)
    if not isinstance(history, list) or outputs is None:
        return None
    for entry in reversed(history[-_HISTORY_LOOKBACK:]):
        if isinstance(entry, dict) and entry.get("outputs") is outputs:
            cost = entry.get("cost")
            if isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost):
                return float(cost)
            return None
    return None


def session_usage(ctx: Context) -> UsageTotals | None:
    """The usage totals of the request's session, if it still exists (never made here:
    a job's late call must not bring back a session that cleanup_session removed)."""
    session = ctx.engine.sessions.peek(ctx.session_id)
    state = session.state.get("dspy") if session is not None else None
    return getattr(state, "usage", None)


def _last_usage(dspy: Any, model: Any) -> dict[str, Any]:
    """Token usage of the call that just ended, from the request's usage tracker."""
    tracker = getattr(dspy.settings, "usage_tracker", None)
    entries = getattr(tracker, "usage_data", {}).get(model) if tracker is not None else None
    if not entries:
        return {}
    last = entries[-1]
    return {k: v for k, v in dict(last).items() if isinstance(v, (int, float))}


class _AttrDict(dict):
    """A dict that also answers attribute access, as DSPy expects of provider responses."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _attrs(value: Any) -> Any:
    if isinstance(value, dict):
        return _AttrDict({k: _attrs(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_attrs(v) for v in value]
    return value


def make_replay_lm(public: dict[str, Any], ctx: Context) -> Any:
    """An LM that answers from `engine.lm_responder` (a cassette) and never uses the network."""
    dspy = load_dspy()
    engine = ctx.engine

    class ReplayLM(dspy.BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            if messages is None and prompt is not None:
                messages = [{"role": "user", "content": prompt}]
            request = normalise_request(self.model, messages, {**self.kwargs, **kwargs})
            responder = engine.lm_responder
            answer = responder(request) if responder is not None else None
            if answer is None:
                raise RuntimeError("no recorded LM response for this request")
            outputs = answer.get("outputs") or []
            choices = [{"index": i, "finish_reason": "stop",
                        "message": {"role": "assistant",
                                    "content": o if isinstance(o, str) else (o or {}).get("text")}}
                       for i, o in enumerate(outputs)]
            return _attrs({"id": f"replay-{uuid.uuid4().hex[:8]}", "model": self.model, "choices": choices,
                           "usage": answer.get("usage") or {}})

        async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            # The cassette answers at once: nothing to await (the async lane calls this).
            return self.forward(prompt, messages, **kwargs)

    kwargs = {k: public[k] for k in ("temperature", "max_tokens") if public.get(k) is not None}
    return ReplayLM(model=str(public.get("model")), cache=False, **kwargs)


class DeadlineExceeded(Exception):
    """An LM call (retries included) outlived its total deadline."""


def call_with_deadline(run: Callable[[], T], seconds: float | None) -> T:
    """Runs `run()` and returns its result, or raises DeadlineExceeded after `seconds`.

    LiteLLM hands `timeout` to httpx, where it bounds each socket read, not the call: a
    server that sends one byte every 300 ms never trips it, and retries multiply it. So
    the whole call runs on a helper thread (in a copy of this thread's context, so the
    request's `dspy.context` holds there) and the request stops waiting at the deadline.
    The abandoned call ends when its server stops or its own read timeout fires; its
    late result is discarded.
    """
    if seconds is None:
        return run()
    done: Future[T] = Future()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            done.set_result(context.run(run))
        except BaseException as exc:  # handed to the waiting request, never lost
            done.set_exception(exc)

    threading.Thread(target=target, name="dspex-lm-call", daemon=True).start()
    try:
        return done.result(timeout=seconds)
    except FutureTimeout:
        raise DeadlineExceeded(f"timed out after {seconds:g} s (the LM timeout bounds the whole call, "
                               "retries included)") from None


class LMCallRefused(Exception):
    """An LM call that a cancelled request or job must not start."""


def cancellable_lm(lm: Any, cancel: threading.Event) -> Any:
    """A copy of `lm` that refuses every call once `cancel` is set.

    DSPy swallows exceptions raised in callbacks, so a callback cannot stop a call; the
    copy's class is a subclass of the LM's own, so DSPy's `isinstance(lm, BaseLM)` checks
    hold, and the copies optimizers make of it (`lm.copy(...)`) keep refusing.
    """
    clone = lm.copy()
    clone.__class__ = _cancellable_class(type(lm))
    clone._dspex_cancel = cancel
    return clone


@functools.cache
def _cancellable_class(base: type) -> type:
    def refuse_if_cancelled(self: Any) -> None:
        if self._dspex_cancel.is_set():
            raise LMCallRefused("cancelled: no further LM calls start")

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_if_cancelled(self)
        return base.__call__(self, *args, **kwargs)

    async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_if_cancelled(self)
        return await base.acall(self, *args, **kwargs)

    return type(f"Cancellable{base.__name__}", (base,), {"__call__": __call__, "acall": acall})


@functools.cache
def widen_connection_pools(limit: int) -> None:
    """Lets each LM's native (lm15) connection pool hold `limit` connections instead of 100.

    DSPy builds one pool per LM and event loop from an lm15 `RouterConfig` without
    `max_connections`, so at most 100 calls of one LM are on the wire at once, whatever the
    lane allows: 2,048 requests of 200 ms would take 4 s instead of 0.2 s. lm15 documents the
    knob (`RouterConfig(max_connections=...)`); DSPy does not pass it, so the config class DSPy's
    executor uses is swapped, once, for one that adds it when no transport was given.
    """
    load_dspy()
    from dspy.clients import execution

    base = execution.RouterConfig
    if getattr(base, "_dspex_widened", None) is not None:
        return

    class WidePoolRouterConfig(base):  # type: ignore[misc, valid-type]
        _dspex_widened = limit

        def transport_kwargs(self) -> dict[str, Any]:
            kwargs = super().transport_kwargs()
            if self.transport is None and self.max_connections is None:
                kwargs["max_connections"] = max(limit, 100)
            return kwargs

    execution.RouterConfig = WidePoolRouterConfig
