"""`compile_program`: a DSPy optimizer run as a job on a copy of a program.

The original program stays as it was; the compiled one becomes a new program of the
session whose `program_data` carries its state (see portable.py), so any worker serves
it. The job counts metric calls for its progress, reports the scores the optimizer saw,
and stops on `cancel_job`: its LMs refuse every call from then on.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from typing import Any

from ...context import Context
from ...errors import BridgeError, InvalidArguments
from ...jobs import Job, JobCancelled, run_as_job
from ...redact import scrub_text
from ...registry import Arg, BUILDS_STATE, STREAMS, command
from . import adapter_of
from .commands import COMMANDS, _check_program_room, _find_program, _program_lm, _programs, configure_session_lm
from .errors import CompileFailed, ProgramExists
from .lm_calls import cancellable_lm, make_observer, observed_context
from .loader import load_dspy
from .metrics import ResolvedMetric, resolve_metric
from .optimizer_table import OPTIMIZERS, OptimizerSpec, find_optimizer
from .portable import record_with_state, rebuild_args
from .json_values import to_json_safe
from .signatures import SignatureSpec
from .state import LMHandle, ProgramRecord

MAX_EXAMPLES = 10_000


def parse_examples(value: Any, spec: SignatureSpec, name: str, *, required: bool) -> list[dict[str, Any]]:
    """A trainset or valset: objects holding every input and output field of the signature."""
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise InvalidArguments(f"'{name}' must be a non-empty list of examples (objects with the "
                               f"fields {', '.join(spec.input_names + spec.output_names)})")
    if len(value) > MAX_EXAMPLES:
        raise InvalidArguments(f"'{name}' holds {len(value)} examples; at most {MAX_EXAMPLES} are accepted")
    fields = set(spec.input_names) | set(spec.output_names)
    for index, example in enumerate(value):
        if not isinstance(example, dict):
            raise InvalidArguments(f"{name}[{index}] must be an object")
        missing = [f for f in (*spec.input_names, *spec.output_names) if f not in example]
        unknown = sorted(str(key) for key in example if key not in fields)
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                       ([f"unknown {', '.join(unknown[:10])}"] if unknown else [])
            raise InvalidArguments(f"{name}[{index}] does not match the signature ({'; '.join(problems)}; "
                                   f"fields: {', '.join(spec.input_names + spec.output_names)})")
    return value


class CountingMetric:
    """The request's metric, counting calls for the job's progress and its scores."""

    def __init__(self, metric: ResolvedMetric, job: Job, window: int) -> None:
        self.metric = metric
        self.job = job
        self.calls = 0
        self.recent: deque[float] = deque(maxlen=max(window, 1))
        # DSPy's optimizers read a metric's name for their logs.
        self.__name__ = metric.name

    def __call__(self, *args: Any, **kwargs: Any) -> float:
        self.job.check_cancelled()
        value = self.metric(*args, **kwargs)
        self.calls += 1
        self.recent.append(value)
        total = self.job.total
        self.job.progress(done=self.calls, total=max(total, self.calls) if total is not None else None,
                          score=round(100.0 * sum(self.recent) / len(self.recent), 3))
        return value


def _init_and_compile_kwargs(spec: OptimizerSpec, options: dict[str, Any], seed: int | None,
                             lm: Any, reflection_lm: Any, metric: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    known = spec.options
    init: dict[str, Any] = {}
    compile_kwargs: dict[str, Any] = {}
    for name, value in {**spec.defaults, **options}.items():
        if name in known:
            (init if known[name].stage == "init" else compile_kwargs)[name] = value
    for name, value in (("prompt_model", lm), ("task_model", lm), ("reflection_lm", reflection_lm),
                        ("metric", metric), ("requires_permission_to_run", False), ("seed", seed)):
        if value is None and name == "seed":
            continue
        where = spec.takes(name)
        if "init" in where:
            init[name] = value
        elif "compile" in where:
            compile_kwargs[name] = value
    if spec.name == "mipro_v2" and "seed" in compile_kwargs:
        init["seed"] = compile_kwargs["seed"]
    return init, compile_kwargs


def _optimizer_scores(compiled: Any) -> dict[str, Any]:
    """The scores DSPy's optimizers leave on what they return (each in its own scale)."""
    scores: dict[str, Any] = {}
    candidates = getattr(compiled, "candidate_programs", None)
    if isinstance(candidates, list):
        found = [c.get("score") for c in candidates if isinstance(c, dict)]
        scores["candidates"] = [float(s) for s in found if isinstance(s, (int, float))]
    best = getattr(compiled, "score", None)
    if isinstance(best, (int, float)) and not isinstance(best, bool):
        scores["best"] = float(best)
    detailed = getattr(compiled, "detailed_results", None)
    aggregate = getattr(detailed, "val_aggregate_scores", None)
    if isinstance(aggregate, list):
        scores["candidates"] = [float(s) for s in aggregate]
        scores.setdefault("best", max(scores["candidates"], default=None))
    if "best" not in scores and scores.get("candidates"):
        scores["best"] = max(scores["candidates"])
    return to_json_safe(scores)


def _evaluate(program: Any, examples: list[Any], metric: ResolvedMetric, job: Job) -> float:
    """The compiled program's score on the valset, 0-100 as DSPy's Evaluate reports it."""
    total = 0.0
    for example in examples:
        job.check_cancelled()
        try:
            prediction = program(**example.inputs())
            total += metric(example, prediction)
        except JobCancelled:
            raise
        except Exception:  # a failed example scores 0, as in Evaluate
            if job.cancel.is_set():
                raise JobCancelled(f"Job {job.job_id} was cancelled") from None
    return round(100.0 * total / len(examples), 3)


def _predictor_choices(state: dict[str, Any], single: bool) -> dict[str, Any]:
    per_predictor = {"self": state} if single else state
    return {name: {"instructions": (value.get("signature") or {}).get("instructions"), "demos": value.get("demos", [])}
            for name, value in per_predictor.items() if isinstance(value, dict)}


def _reflection_handle(spec: OptimizerSpec, args: dict[str, Any], ctx: Context) -> LMHandle | None:
    value = args.get("reflection_lm")
    if value is None:
        return None
    if not spec.takes("reflection_lm"):
        raise InvalidArguments(f"'reflection_lm' is an argument of gepa, not of {spec.name}")
    if isinstance(value, str):
        value = {"model": value}
    if not isinstance(value, dict):
        raise InvalidArguments("'reflection_lm' must be configure_lm arguments ({model, api_key, ...}) or a model name")
    return configure_session_lm(value, ctx)  # its key is remembered as a secret there


_COMPILE_ARGS = (
    Arg("program_id", "string", required=True, help="the program to compile (it stays unchanged)"),
    Arg("optimizer", "string", required=True, help=", ".join(OPTIMIZERS), choices=tuple(OPTIMIZERS)),
    Arg("trainset", "array", required=True, help="examples: objects with input and output fields"),
    Arg("valset", "array", help="examples the optimizer validates on (and the result's valset score)"),
    Arg("metric", "string|object", help='a metric name or {"metric": NAME, "field": FIELD, ...}'),
    Arg("options", "object", help="the optimizer's own parameters (list_optimizers shows them)"),
    Arg("seed", "integer", help="seeds the optimizer (where it takes one) and Python's random"),
    Arg("reflection_lm", "string|object", help="gepa: configure_lm arguments of the reflection LM"),
    Arg("new_program_id", "string", help="id of the compiled program (generated when absent)"),
    Arg("wait", "boolean", help="reply when the job ends (default false: reply with the job id)"),
    Arg("program_data", "object", help="what create_program returned; rebuilds the program here"),
    Arg("session_id", "string"),
)


@command("compile_program", registry=COMMANDS, scheduling="read", args=_COMPILE_ARGS, tags={BUILDS_STATE, STREAMS})
def compile_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Compiles a copy of a program with a DSPy optimizer, as a job; the copy is a new program."""
    record = _find_program(args, ctx)
    spec = find_optimizer(args.get("optimizer"))
    options = spec.parse_options(args.get("options"))
    signature = SignatureSpec.from_dict(record.signature)
    trainset = parse_examples(args.get("trainset"), signature, "trainset", required=True)
    valset = parse_examples(args.get("valset"), signature, "valset", required=False)
    if args.get("metric") is None and spec.needs_metric:
        raise InvalidArguments(f"{spec.name} needs a 'metric' (list_metrics shows them)")
    metric = resolve_metric(args["metric"], list(signature.output_names)) if args.get("metric") is not None else None
    new_id = args.get("new_program_id") or f"program_{uuid.uuid4().hex[:12]}"
    if new_id in _programs(ctx):
        raise ProgramExists(new_id)
    handle = _program_lm(record, ctx)
    reflection = _reflection_handle(spec, args, ctx)
    if spec.name == "gepa" and reflection is None:
        reflection = handle  # GEPA needs a reflection LM; the program's own is the closest
    student = record.program.deepcopy()  # compiled on a copy: the original keeps serving
    estimate = spec.estimate(options, len(trainset), len(valset)) if spec.estimate else None
    total = estimate if metric is not None else 1
    seed = args.get("seed")

    def work(job: Job, job_ctx: Context) -> dict[str, Any]:
        return _run_compile(job, job_ctx, record, spec, options, signature, trainset, valset, metric,
                            seed, new_id, handle, reflection, student)

    return run_as_job("compile", args, ctx, work, wait_default=False, total=total)


def _run_compile(job: Job, ctx: Context, source: ProgramRecord, spec: OptimizerSpec, options: dict[str, Any],
                 signature: SignatureSpec, trainset: list[dict[str, Any]], valset: list[dict[str, Any]],
                 metric: ResolvedMetric | None, seed: int | None, new_id: str, handle: LMHandle,
                 reflection: LMHandle | None, student: Any) -> dict[str, Any]:
    dspy = load_dspy()
    if seed is not None:
        random.seed(seed)
    inputs = signature.input_names
    train = [dspy.Example(**example).with_inputs(*inputs) for example in trainset]
    val = [dspy.Example(**example).with_inputs(*inputs) for example in valset]
    counting = CountingMetric(metric, job, len(val) or len(train)) if metric is not None else None
    observer = make_observer(ctx, on_call=lambda call: job.add_lm_call(call.get("usage") or {}, call.get("cost")))
    lm = cancellable_lm(handle.lm, job.cancel, observer)
    reflection_lm = cancellable_lm(reflection.lm, job.cancel, observer) if reflection is not None else None
    init, compile_kwargs = _init_and_compile_kwargs(spec, options, seed, lm, reflection_lm, counting)
    compile_kwargs["trainset"] = train
    if val and "valset" in spec.takes("valset"):
        compile_kwargs["valset"] = val
    try:
        with observed_context(dspy, lm, observer):
            optimizer = spec.dspy_class()(**init)
            compiled = optimizer.compile(student, **compile_kwargs)
            job.check_cancelled()
            valset_score = _evaluate(compiled, val, metric, job) if val and metric else None
    except BridgeError:
        raise
    except Exception as exc:
        if job.cancel.is_set():
            raise JobCancelled(f"Job {job.job_id} was cancelled") from None
        raise CompileFailed(f"{spec.name} failed: {type(exc).__name__}: {scrub_text(str(exc))[:2000]}") from None
    job.check_cancelled()
    from .portable import _is_single_predictor, dump_program_state

    state = dump_program_state(compiled)
    args = {**rebuild_args(source.description), "signature": source.signature,
            "program_type": source.program_type}
    record = record_with_state(new_id, args, state)
    record.description.update(status="compiled", compiled_from=source.program_id, optimizer=spec.name)
    programs = adapter_of(ctx).state(ctx).programs
    _check_program_room(ctx)
    if programs.setdefault(new_id, record) is not record:
        raise ProgramExists(new_id)
    ctx.engine.publish("program_created", {"session_id": ctx.session_id, "program_id": new_id})
    scores = _optimizer_scores(compiled)
    if valset_score is not None:
        scores["valset"] = valset_score
    if counting is not None:
        scores["metric_calls"] = counting.calls
    job.progress(done=job.total if counting is None else None, score=valset_score)
    return {"program_id": new_id, "source_program_id": source.program_id, "optimizer": spec.name,
            "options": options, "seed": seed, "program_data": dict(record.description), "scores": scores,
            "predictors": _predictor_choices(record.description["state"], _is_single_predictor(compiled)),
            "usage": {"lm_calls": job.lm_calls, **job.tokens, "cost": round(job.cost, 8)},
            "session_id": ctx.session_id}


@command("list_optimizers", registry=COMMANDS, read_only=True, scheduling="read")
def list_optimizers(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The optimizers compile_program accepts, each with its options (types and defaults)."""
    return {"optimizers": [spec.describe() for spec in OPTIMIZERS.values()], "total_count": len(OPTIMIZERS)}
