"""One execute_program run on the async lane: its DSPy context, its one budget, its
streamed or plain call, and the reply built from the prediction."""

from __future__ import annotations

import time
from typing import Any

from ...errors import BridgeError, Cancelled
from ...errors import DeadlineExceeded as RequestDeadlineExceeded
from ...redact import scrub_text
from ...twoway import RequestContext, asks_for_callbacks
from .async_lane import LANE
from .errors import ExecutionFailed, LMCallFailed, LMNotConfigured
from .lm_calls import LMCallRefused, cancellable_lm, make_observer, observed_context
from .loader import load_dspy
from .modules import make_adapter, output_names, parse_program_type, recording_rewards, run_details
from .json_values import to_json_safe
from .signatures import SignatureSpec
from .state import LMHandle, ProgramRecord
from .streaming import run_streamed, status_callback, streamed_fields


class ProgramRun:
    """One execute_program on the async lane: the program's LM calls share the request's
    budget (`deadline_ms`, else the LM's own timeout), and none starts once it is cancelled."""

    def __init__(self, record: ProgramRecord, handle: LMHandle, spec: SignatureSpec,
                 call_kwargs: dict[str, Any], ctx: RequestContext, args: dict[str, Any]) -> None:
        self.record, self.handle, self.spec, self.call_kwargs, self.ctx = record, handle, spec, call_kwargs, ctx
        self.row = parse_program_type(record.program_type)
        self.program_options = record.description.get("options") or {}
        # Chunks only when the request asked to stream: a client tool alone asks for callbacks.
        self.streamed = ctx.wants_events and (args.get("stream") is True or not asks_for_callbacks(args))

    async def execute(self) -> dict[str, Any]:
        import asyncio  # on the lane's thread, where asyncio is loaded (async_lane says why)

        dspy = load_dspy()
        record, handle, ctx = self.record, self.handle, self.ctx
        settings = {"adapter": adapter} if (adapter := program_adapter(record, handle)) is not None else {}
        observer = make_observer(ctx, program=record)
        streamed = self.streamed
        # DSPy callbacks only for the status events of a streamed run: the observer sits in
        # the LM itself (lm_calls.LMCallObserver says why).
        callbacks = {"callbacks": [status_callback(ctx)]} if streamed else {}
        lm_timeout = handle.public.get("timeout")
        budget = ctx.remaining(lm_timeout)
        from_deadline = ctx.deadline is not None and (lm_timeout is None or (budget or 0) < lm_timeout)
        names = output_names(self.row, self.spec, self.program_options)
        started = time.perf_counter()
        ok = False
        try:
            with recording_rewards() as rewards, \
                    observed_context(dspy, cancellable_lm(handle.lm, ctx.cancel, observer), observer,
                                     track_usage=True, **callbacks, **settings):
                async with asyncio.timeout(budget):
                    prediction = await self._run(dspy, streamed, names)
            ok = True
        except BridgeError:
            raise
        except TimeoutError:
            if from_deadline:
                raise RequestDeadlineExceeded(f"Request exceeded its deadline; the LM call to {handle.model} "
                                              "was abandoned") from None
            raise LMCallFailed(f"LM call to {handle.model} timed out after {budget:g} s (the LM timeout "
                               "bounds the whole call, retries included)") from None
        except LMCallRefused:
            raise Cancelled("Request cancelled: no further LM call started") from None
        except Exception as exc:
            raise execution_error(exc, handle) from None
        finally:
            elapsed = time.perf_counter() - started
            record.record_execution(elapsed * 1000, ok)
        if prediction is None:  # best_of_n/refine when every attempt failed
            raise ExecutionFailed(f"Every attempt of {record.program_type} failed")
        outputs = {name: to_json_safe(prediction.get(name)) for name in names}
        return {"program_id": record.program_id, "outputs": outputs, "execution_time": elapsed,
                "duration_ms": round(elapsed * 1000, 3), "usage": prediction_usage(prediction), "model": handle.model,
                "session_id": ctx.session_id, **run_details(self.row, prediction, self.program_options, rewards)}

    async def _run(self, dspy: Any, streamed: bool, names: list[str]) -> Any:
        program = self.record.program
        native_async = has_async_path(program)
        if streamed:
            json_strings = type(dspy.settings.adapter).__name__ == "JSONAdapter"
            return await run_streamed(program, self.call_kwargs, streamed_fields(self.spec, names), self.ctx,
                                      native_async, json_strings)
        if native_async:
            return await program.acall(**self.call_kwargs)
        return await LANE.run_sync(lambda: program(**self.call_kwargs))


def has_async_path(program: Any) -> bool:
    """Whether a module runs natively async (Predict, ChainOfThought, ReAct define aforward);
    best_of_n, refine and multi_chain do not and run on the lane's few fallback threads."""
    return callable(getattr(type(program), "aforward", None))


def program_adapter(record: ProgramRecord, handle: LMHandle) -> Any:
    """The DSPy adapter a program runs with: its own, else its LM's, else None (DSPy's
    default). Other runners of programs (evaluate, batches, compile) pass it to dspy.context."""
    return make_adapter(record.description.get("adapter") or handle.public.get("adapter"))


def prediction_usage(prediction: Any) -> dict[str, Any]:
    try:
        per_model = prediction.get_lm_usage() or {}
    except Exception:
        return {}
    totals: dict[str, int] = {}
    for usage in per_model.values():
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = (usage or {}).get(key)
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return totals


def execution_error(exc: Exception, handle: LMHandle) -> BridgeError:
    name = type(exc).__name__
    text = scrub_text(str(exc))
    if "AdapterParseError" in name or "parse" in name.lower():
        return ExecutionFailed(f"The LM's answer did not match the signature: {text}")
    if "No LM is loaded" in text:
        return LMNotConfigured()
    module = type(exc).__module__ or ""
    if "lm15" in module or "clients" in module or "LM" in name or "litellm" in module:
        return LMCallFailed(f"LM call to {handle.model} failed: {name}: {text}")
    return ExecutionFailed(f"{name}: {text}")
