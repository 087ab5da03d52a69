"""Scoring a program on a dev set (`evaluate_program`) and running it on many inputs
(`batch_execute`), both as jobs, plus `list_metrics`.

The scoring itself is DSPy's own `dspy.Evaluate`: its threads, its error count and
`max_errors`, its 0-100 score. What dspex adds around it is what DSPy keeps to itself:
each example's outputs and error (DSPy only logs them), progress per example, and a
stop within the job's cancel (the job's LM refuses new calls and the examples not yet
started are skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...context import Context
from ...errors import BridgeError, InvalidArguments, LimitExceeded
from ...jobs import Job, JobCancelled, run_as_job
from ...redact import scrub_text
from ...registry import STREAMS, Arg, command
from .commands import COMMANDS, _execution_error, _find_program, _program_lm
from .errors import InvalidInputs, TooManyErrors
from .lm_calls import cancellable_lm, make_observer, observed_context
from .loader import load_dspy
from .metrics import METRICS, ResolvedMetric, resolve_metric
from .json_values import to_json_safe
from .signatures import SignatureError, SignatureSpec, coerce_inputs
from .state import LMHandle, ProgramRecord

# A devset or a batch is held in memory with every example's outputs: bounded.
MAX_EXAMPLES = 10_000
# Each thread holds LM calls in flight; DSPy's own default is 8.
MAX_THREADS = 64
# A failed job's error lists this many failed examples; the rest are counted.
ERRORS_SHOWN = 10


class _Stopped(BaseException):
    """Ends DSPy's executor at once when the job is cancelled. A BaseException, because
    DSPy counts every Exception as one more failed example and carries on."""


_PROGRAM_ARGS = (
    Arg("program_id", "string", required=True),
    Arg("program_data", "object", help="what create_program returned; rebuilds the program here"),
)
_JOB_ARGS = (
    Arg("num_threads", "integer", help=f"examples run at once, 1 (default) to {MAX_THREADS}"),
    Arg("wait", "boolean", help="true (default): reply with the result; false: reply {job_id} at once"),
    Arg("session_id", "string"),
)


@command("list_metrics", registry=COMMANDS, read_only=True, scheduling="read")
def list_metrics(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The metrics evaluate_program (and compile_program) accept: built-ins and plugins' @metric."""
    metrics = [spec.describe() for spec in METRICS.specs()]
    return {"metrics": metrics, "total_count": len(metrics)}


# -- what a request asks for ------------------------------------------------------------

def _int_arg(args: dict[str, Any], name: str, default: int | None, low: int, high: int | None) -> int | None:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise InvalidArguments(f"'{name}' must be an integer {bound}")
    return value


def _list_arg(args: dict[str, Any], name: str, what: str) -> list[Any]:
    value = args.get(name)
    if not isinstance(value, list) or not value:
        raise InvalidArguments(f"'{name}' must be a non-empty list of {what}")
    if len(value) > MAX_EXAMPLES:
        raise LimitExceeded(f"'{name}' has {len(value)} items; at most {MAX_EXAMPLES} per request")
    return value


def parse_devset(value: Any, spec: SignatureSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Splits each devset object into (inputs, expected outputs) by the signature."""
    rows = _list_arg({"devset": value}, "devset", "objects (input and expected output fields)")
    inputs, outputs = spec.input_names, spec.output_names
    parsed = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidArguments(f"devset[{index}] must be an object, not {type(row).__name__}")
        unknown = sorted(str(key) for key in row if key not in inputs and key not in outputs)
        if unknown:
            raise InvalidArguments(
                f"devset[{index}] has keys that are neither inputs nor outputs of the signature: "
                f"{', '.join(unknown[:20])} (inputs: {', '.join(inputs)}; outputs: {', '.join(outputs)})")
        missing = [name for name in inputs if name not in row]
        if missing:
            raise InvalidArguments(f"devset[{index}] lacks the input(s) {', '.join(missing)}")
        parsed.append(({name: row[name] for name in inputs}, {name: row[name] for name in outputs if name in row}))
    return parsed


@dataclass
class _Plan:
    """Everything a job needs, checked before it starts (bad input never becomes a job)."""

    record: ProgramRecord
    program: Any  # a deep copy: the session's other requests keep the original
    handle: LMHandle
    spec: SignatureSpec
    num_threads: int


def _plan(args: dict[str, Any], ctx: Context) -> _Plan:
    record = _find_program(args, ctx)
    handle = _program_lm(record, ctx)
    num_threads = _int_arg(args, "num_threads", 1, 1, MAX_THREADS)
    assert num_threads is not None
    return _Plan(record, record.program.deepcopy(), handle, SignatureSpec.from_dict(record.signature), num_threads)


# -- running under the job --------------------------------------------------------------

def _observed(job: Job, ctx: Context, plan: _Plan) -> tuple[Any, Any]:
    """The job's LM (refusing calls once cancelled) and an observer feeding its counters."""
    def count(record: dict[str, Any]) -> None:
        job.add_lm_call(record.get("usage") or {}, record.get("cost"))

    observer = make_observer(ctx, on_call=count, program=plan.record)
    return cancellable_lm(plan.handle.lm, job.cancel, observer), observer


def _usage(job: Job) -> dict[str, Any]:
    view = job.view(with_result=False)
    return {"tokens": view["tokens"], "cost": view["cost"], "lm_calls": view["lm_calls"]}


def _outputs(prediction: Any, spec: SignatureSpec) -> dict[str, Any]:
    """The prediction's fields typed and JSON-safe, as execute_program answers them
    (a module's extra outputs such as ChainOfThought's `reasoning` come first)."""
    names = list(spec.output_names)
    extra = [k for k in getattr(prediction, "keys", lambda: [])() if k not in names]
    return {name: to_json_safe(prediction.get(name)) for name in [*extra, *names]}


def _described(exc: BaseException, handle: LMHandle, metric: bool = False) -> tuple[str, str]:
    """(error text, error_type) of one example's failure, secrets scrubbed."""
    if metric:
        return scrub_text(f"metric failed: {type(exc).__name__}: {exc}"), "metric_error"
    error = exc if isinstance(exc, BridgeError) else _execution_error(exc, handle)  # type: ignore[arg-type]
    return error.message, error.error_type


# Set by an example's `inputs()` on the thread that runs it, read by the program wrapper
# right after on that same thread: how DSPy's `program(**example.inputs())` tells us
# which example a call belongs to.
_running = threading.local()


def _example_class() -> type:
    dspy = load_dspy()
    cached = getattr(_example_class, "cached", None)
    if cached is None:
        class IndexedExample(dspy.Example):  # type: ignore[misc,name-defined]
            def inputs(self) -> Any:
                _running.index = getattr(self, "_dspex_index", None)
                return super().inputs()

        cached = _example_class.cached = IndexedExample  # type: ignore[attr-defined]
    return cached


@dataclass
class _Tally:
    """Per-example outcomes as the examples finish, on any thread, in any order."""

    job: Job
    handle: LMHandle
    outputs: dict[int, dict[str, Any]] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finished(self, index: int, score: float | None = None, error: tuple[str, str] | None = None) -> None:
        with self.lock:
            if index in self.scores or index in self.errors:
                return  # DSPy may re-run a straggler: count each example once
            if error is not None:
                self.errors[index] = error
            else:
                self.scores[index] = float(score or 0.0)
            done = len(self.scores) + len(self.errors)
            running = 100 * sum(self.scores.values()) / done
        self.job.progress(step=1, score=round(running, 2))

    def program(self, program: Any, spec: SignatureSpec) -> Callable[..., Any]:
        def run(**inputs: Any) -> Any:
            index = getattr(_running, "index", None)
            if self.job.cancel.is_set():
                raise _Stopped()
            try:
                prediction = program(**inputs)
            except Exception as exc:
                if index is not None and not self.job.cancel.is_set():
                    self.finished(index, error=_described(exc, self.handle))
                raise
            if index is not None:
                self.outputs[index] = _outputs(prediction, spec)
            return prediction
        return run

    def metric(self, metric: ResolvedMetric) -> Callable[..., float]:
        def score(example: Any, prediction: Any, trace: Any = None) -> float:
            index = getattr(example, "_dspex_index", None)
            try:
                value = metric(example, prediction, trace)
            except Exception as exc:
                if index is not None:
                    self.finished(index, error=_described(exc, self.handle, metric=True))
                raise
            if index is not None:
                self.finished(index, score=value)
            return value
        return score


def _too_many_errors(tally: _Tally, max_errors: int | None, total: int) -> TooManyErrors:
    failed = sorted(tally.errors.items())
    shown = "; ".join(f"#{index}: {text}" for index, (text, _) in failed[:ERRORS_SHOWN])
    limit = f"max_errors {max_errors}" if max_errors is not None else "DSPy's default max_errors"
    return TooManyErrors(
        f"Evaluation stopped: {len(failed)} of {total} examples failed ({limit}). {shown}"[:4000],
        details={"errors": [{"index": index, "error": text, "error_type": kind}
                            for index, (text, kind) in failed[:ERRORS_SHOWN]],
                 "error_count": len(failed)})


def _evaluate(job: Job, ctx: Context, plan: _Plan, rows: list[tuple[dict[str, Any], dict[str, Any]]],
              metric: ResolvedMetric, max_errors: int | None) -> dict[str, Any]:
    dspy = load_dspy()
    tally = _Tally(job, plan.handle)
    example_class = _example_class()
    examples = []
    for index, (inputs, expected) in enumerate(rows):
        example = example_class(**inputs, **expected).with_inputs(*plan.spec.input_names)
        example._dspex_index = index
        examples.append(example)
    evaluator = dspy.Evaluate(devset=examples, metric=tally.metric(metric), num_threads=plan.num_threads,
                              max_errors=max_errors, display_progress=False, display_table=False,
                              provide_traceback=False)
    lm, observer = _observed(job, ctx, plan)
    try:
        with observed_context(dspy, lm, observer):
            outcome = evaluator(tally.program(plan.program, plan.spec))
    except _Stopped:
        raise JobCancelled(f"Job {job.job_id} was cancelled") from None
    except Exception as exc:
        if job.cancel.is_set():
            raise JobCancelled(f"Job {job.job_id} was cancelled") from None
        if tally.errors:  # DSPy's executor gave up: max_errors examples failed
            raise _too_many_errors(tally, max_errors, len(rows)) from None
        raise _execution_error(exc, plan.handle) from None
    results = []
    for index, (inputs, expected) in enumerate(rows):
        error = tally.errors.get(index)
        results.append({
            "index": index, "inputs": to_json_safe(inputs), "outputs": tally.outputs.get(index),
            "expected": to_json_safe(expected), "score": tally.scores.get(index),
            "error": error[0] if error else None, **({"error_type": error[1]} if error else {}),
        })
    return {"program_id": plan.record.program_id, "score": float(outcome.score), "n": len(rows),
            "errors": len(tally.errors), "metric": metric.describe(), "results": results,
            "usage": _usage(job)}


@command("evaluate_program", registry=COMMANDS, scheduling="read", tags={STREAMS}, args=(
    *_PROGRAM_ARGS,
    Arg("devset", "array", required=True,
        help="objects holding the signature's inputs and the expected outputs"),
    Arg("metric", "string|object", required=True,
        help='a metric name (list_metrics) or {"metric": NAME, "field": OUTPUT, ...options}'),
    Arg("max_errors", "integer", help="stop once this many examples failed (default: DSPy's, 10)"),
    *_JOB_ARGS,
    Arg("stream", "boolean", help="reserved: progress events are not streamed yet"),
))
def evaluate_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Scores a program on a dev set with DSPy's Evaluate (0-100), per example outputs and errors; a job."""
    plan = _plan(args, ctx)
    rows = parse_devset(args.get("devset"), plan.spec)
    metric = resolve_metric(args.get("metric"), list(plan.spec.output_names))
    max_errors = _int_arg(args, "max_errors", None, 1, None)

    def work(job: Job, job_ctx: Context) -> dict[str, Any]:
        return _evaluate(job, job_ctx, plan, rows, metric, max_errors)

    return run_as_job("evaluate", args, ctx, work, wait_default=True, total=len(rows))


# -- batch_execute ------------------------------------------------------------------------

def _batch(job: Job, ctx: Context, plan: _Plan, items: list[Any]) -> dict[str, Any]:
    dspy = load_dspy()
    from dspy.utils.parallelizer import ParallelExecutor

    results: list[dict[str, Any] | None] = [None] * len(items)

    def run(indexed: tuple[int, Any]) -> None:
        index, raw = indexed
        if job.cancel.is_set():
            raise _Stopped()
        if results[index] is not None:
            return  # a straggler DSPy ran twice
        try:
            inputs = coerce_inputs(plan.spec, raw)
        except SignatureError as exc:
            results[index] = {"index": index, "error": str(exc), "error_type": InvalidInputs.error_type}
        else:
            try:
                results[index] = {"index": index, "outputs": _outputs(plan.program(**inputs), plan.spec)}
            except Exception as exc:
                if job.cancel.is_set():
                    raise _Stopped() from None
                text, kind = _described(exc, plan.handle)
                results[index] = {"index": index, "error": text, "error_type": kind}
        job.progress(step=1)

    # Every failure is caught in `run` and becomes the item's own error, so DSPy's
    # executor never reaches its max_errors: it only supplies threads that carry the
    # job's dspy.context (plain pool threads would not).
    executor = ParallelExecutor(num_threads=plan.num_threads, max_errors=len(items) + 1,
                                disable_progress_bar=True, provide_traceback=False)
    lm, observer = _observed(job, ctx, plan)
    try:
        with observed_context(dspy, lm, observer):
            executor.execute(run, list(enumerate(items)))
    except _Stopped:
        raise JobCancelled(f"Job {job.job_id} was cancelled") from None
    done = [result or {"index": index, "error": "not run", "error_type": "execution_error"}
            for index, result in enumerate(results)]
    return {"program_id": plan.record.program_id, "n": len(items),
            "errors": sum(1 for result in done if "error" in result), "results": done, "usage": _usage(job)}


@command("batch_execute", registry=COMMANDS, scheduling="read", tags={STREAMS}, args=(
    *_PROGRAM_ARGS,
    Arg("inputs", "array", required=True, help=f"input objects, one per run (at most {MAX_EXAMPLES})"),
    *_JOB_ARGS,
))
def batch_execute(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Runs a program on many inputs; each item gets its outputs or its own error; a job."""
    plan = _plan(args, ctx)
    items = _list_arg(args, "inputs", "input objects")

    def work(job: Job, job_ctx: Context) -> dict[str, Any]:
        return _batch(job, job_ctx, plan, items)

    return run_as_job("batch", args, ctx, work, wait_default=True, total=len(items))


__all__ = ["MAX_EXAMPLES", "MAX_THREADS", "TooManyErrors", "batch_execute", "evaluate_program",
           "list_metrics", "parse_devset"]
