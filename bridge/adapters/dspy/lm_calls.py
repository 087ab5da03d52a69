"""Watching and answering LM calls.

Every LM call made while serving a request is observed by the LM itself (the subclass
`cancellable_lm` makes of each LM a request uses): its
normalised request (model, messages, generation parameters; never keys or addresses)
and its answer become a record that the engine keeps for inspect, counts for usage and
hands to the recorder as a cassette entry. Replay answers calls from a cassette by
swapping the session's LM for a `ReplayLM` that asks `engine.lm_responder`.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar


from .loader import HISTORY_KEPT, load_dspy

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
                  program: ProgramRecord | None = None) -> LMCallObserver:
    """An observer that reports each LM call of this request to the engine, and to
    `on_call` (a job counting its own calls, tokens and cost) with the call's record.
    Each call also counts toward the session's usage and, given one, the program's.
    It sees the calls of the LMs it is given to (`cancellable_lm(..., observer)`)."""
    return LMCallObserver(ctx, on_call, program)


# LM call ids, unique within the worker (uuid4 per call would cost more than the rest).
_CALL_IDS = itertools.count(1)


class LMCallObserver:
    """Watches LM calls from inside the LM (the subclass `cancellable_lm` makes), not as a
    DSPy callback: with any callback in `dspy.context`, DSPy inspects the arguments of every
    module, adapter and LM call (`inspect.getcallargs`, Protocol checks), which cost an
    evaluate through the worker a tenth of its CPU that DSPy run natively does not pay."""

    def __init__(self, ctx: Context, on_call: Callable[[dict[str, Any]], None] | None,
                 program: ProgramRecord | None) -> None:
        self.ctx = ctx
        self.on_call = on_call
        self.program = program
        self.attempts = 0
        self.tools = 0
        self._open = 0  # calls started and not yet ended (threads of one evaluate overlap)

    def tool_started(self, name: str) -> None:
        self.tools += 1
        self.ctx.note_thread()
        self.ctx.note(phase="tool", tool=name, tool_calls=self.tools)

    def tool_ended(self) -> None:
        self.ctx.note(phase="lm_call" if self._open else "running")

    def lm_started(self, instance: Any, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> tuple[str, float, dict[str, Any]]:
        """What lm_ended needs of this call: its id, start time and normalised request."""
        params = {**getattr(instance, "kwargs", {}), **kwargs}
        if messages is None and prompt is not None:
            messages = [{"role": "user", "content": prompt}]
        request = normalise_request(str(getattr(instance, "model", "?")), messages, params)
        self.attempts += 1
        self._open += 1
        # The thread that makes the call may be a deadline helper, not the request's own.
        self.ctx.note_thread()
        self.ctx.note(phase="lm_call", attempt=self.attempts, lm_call_started=time.time())
        return f"lm-{next(_CALL_IDS)}", time.monotonic(), request

    def lm_ended(self, call: tuple[str, float, dict[str, Any]], instance: Any, outputs: Any,
                 exception: BaseException | None) -> None:
        ctx = self.ctx
        call_id, started, request = call
        self._open -= 1
        ctx.note(phase="lm_call" if self._open else "running")
        entry = None if exception is not None else history_entry(instance, outputs)
        usage = entry_usage(entry)
        cost = None if entry is None else call_cost(entry, usage)
        record = {
            "call_id": call_id, "request_id": ctx.request_id, "session_id": ctx.session_id,
            "command": ctx.command, "key": _cassette_key(request),
            "program_id": getattr(self.program, "program_id", None),
            "model": request.get("model"), "request": request,
            "response": None if exception else {"outputs": _jsonable(outputs), "usage": usage},
            "error": None if exception is None else f"{type(exception).__name__}: {exception}",
            "latency_ms": round((time.monotonic() - started) * 1000, 3),
            "usage": usage, "cost": cost, "timestamp": time.time(),
        }
        ctx.engine.record_lm_call(record)  # the engine masks secrets where a record leaves it
        for totals in (session_usage(ctx), getattr(self.program, "usage", None)):
            if totals is not None:
                totals.add(usage, cost)
        if self.on_call is not None:
            self.on_call(record)


def observed_context(dspy: Any, lm: Any, observer: LMCallObserver, **settings: Any) -> Any:
    """The `dspy.context` every runner of programs uses: `lm` (a `cancellable_lm` reporting to
    `observer`), the observer itself for tools and client metrics (current_observer), and a
    bounded LM history (loader.HISTORY_KEPT says why)."""
    return dspy.context(lm=lm, dspex_observer=observer, max_history_size=HISTORY_KEPT, **settings)


def current_observer() -> LMCallObserver | None:
    """The observer of the request whose DSPy call runs here (every runner of programs puts
    it into `dspy.context` as `dspex_observer`; DSPy carries that into its worker threads)."""
    return load_dspy().settings.get("dspex_observer")


# How far back in an LM's history the entry of the call that just ended may sit: the
# entries of calls that ended at the same time on other threads come after it.
_HISTORY_LOOKBACK = HISTORY_KEPT


def history_entry(instance: Any, outputs: Any) -> dict[str, Any] | None:
    """The LM history entry DSPy wrote for the call that returned `outputs` (the very
    object), or None (history disabled, or no answer)."""
    history = getattr(instance, "history", None)
    if not isinstance(history, list) or outputs is None:
        return None
    for entry in reversed(history[-_HISTORY_LOOKBACK:]):
        if isinstance(entry, dict) and entry.get("outputs") is outputs:
            return entry
    return None


def entry_usage(entry: dict[str, Any] | None) -> dict[str, Any]:
    """Token counts of one call; none for a cache hit, which bills nothing (as DSPy's own
    usage tracker counts them)."""
    if entry is None or getattr(entry.get("response"), "cache_hit", False):
        return {}
    usage = entry.get("usage")
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def call_cost(entry: dict[str, Any], usage: dict[str, Any]) -> float | None:
    """The cost in USD of one LM call, or None where unknown.

    A provider that reports its own charge (OpenRouter's `usage.cost`) is believed first.
    Otherwise DSPy has already priced the call from the price map it ships (the LiteLLM
    map, read locally because the loader sets LITELLM_LOCAL_MODEL_COST_MAP) and written
    the price into the LM's history entry.
    """
    reported = usage.get("cost")
    if isinstance(reported, (int, float)) and not isinstance(reported, bool) and math.isfinite(reported):
        return float(reported)
    cost = entry.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost):
        return float(cost)
    return None


def session_usage(ctx: Context) -> UsageTotals | None:
    """The usage totals of the request's session, if it still exists (never made here:
    a job's late call must not bring back a session that cleanup_session removed)."""
    session = ctx.engine.sessions.peek(ctx.session_id)
    state = session.state.get("dspy") if session is not None else None
    return getattr(state, "usage", None)


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


def cancellable_lm(lm: Any, cancel: threading.Event, observer: LMCallObserver | None = None) -> Any:
    """A copy of `lm` that refuses every call once `cancel` is set and reports each call
    to `observer`.

    DSPy swallows exceptions raised in callbacks, so a callback cannot stop a call; the
    copy's class is a subclass of the LM's own, so DSPy's `isinstance(lm, BaseLM)` checks
    hold, and the copies optimizers make of it (`lm.copy(...)`, shallow) keep refusing and
    reporting.
    """
    clone = lm.copy()
    clone.__class__ = _cancellable_class(type(lm))
    clone._dspex_cancel = cancel
    clone._dspex_observer = observer
    return clone


def _split_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(prompt, messages, generation kwargs) of a call `lm(prompt=None, *, messages=None, **kwargs)`."""
    params = dict(kwargs)
    prompt = args[0] if args else params.pop("prompt", None)
    return prompt, params.pop("messages", None), params


@functools.cache
def _cancellable_class(base: type) -> type:
    def refuse_if_cancelled(self: Any) -> None:
        if self._dspex_cancel.is_set():
            raise LMCallRefused("cancelled: no further LM calls start")

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_if_cancelled(self)
        observer = self._dspex_observer
        if observer is None:
            return base.__call__(self, *args, **kwargs)
        call = observer.lm_started(self, *_split_call(args, kwargs))
        try:
            outputs = base.__call__(self, *args, **kwargs)
        except BaseException as exc:
            observer.lm_ended(call, self, None, exc)
            raise
        observer.lm_ended(call, self, outputs, None)
        return outputs

    async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_if_cancelled(self)
        observer = self._dspex_observer
        if observer is None:
            return await base.acall(self, *args, **kwargs)
        call = observer.lm_started(self, *_split_call(args, kwargs))
        try:
            outputs = await base.acall(self, *args, **kwargs)
        except BaseException as exc:
            observer.lm_ended(call, self, None, exc)
            raise
        observer.lm_ended(call, self, outputs, None)
        return outputs

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
