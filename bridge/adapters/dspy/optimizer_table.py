"""The one table of optimizers `compile_program` accepts, and each one's options.

An optimizer's options are read from its DSPy class (`__init__` and `compile` parameters
with their annotations and defaults), so the accepted set is exactly what the installed
DSPy takes; the bridge keeps for itself what it fills in (metric, LMs, datasets, seed)
and what a request must never choose (log folders, wandb keys, callables).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidArguments
from .errors import UnknownOptimizer

# Parameters the bridge fills itself or that would let a request write files, send keys
# elsewhere or run code: never options.
RESERVED = frozenset({
    "self", "student", "trainset", "valset", "teacher", "metric", "prompt_model", "task_model",
    "reflection_lm", "instruction_proposer", "code_proposer", "teacher_settings", "log_dir",
    "use_wandb", "wandb_api_key", "wandb_init_kwargs", "use_mlflow", "gepa_kwargs", "eval_kwargs",
    "requires_permission_to_run", "seed", "restrict",
})
# Unannotated parameters whose default (None) says nothing of their type.
_UNTYPED = {"max_errors": "integer", "num_threads": "integer", "stop_at_score": "number",
            "metric_threshold": "number"}
# Threads are a worker resource: an optimizer gets at most this many.
MAX_THREADS = 32
_KINDS = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_OPTIONAL = re.compile(r"^(?:typing\.)?Optional\[(.*)\]$")
_LITERAL = re.compile(r"^(?:typing\.)?Literal\[(.*)\]$")

Estimate = Callable[[dict[str, Any], int, int], "int | None"]


@dataclass(frozen=True)
class OptionSpec:
    name: str
    kind: str                    # integer, number, boolean, string
    default: Any
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    stage: str = "init"          # passed to the class ("init") or to compile ("compile")

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": self.kind, "default": self.default}
        if self.choices is not None:
            described["choices"] = list(self.choices)
        return described

    def check(self, optimizer: str, value: Any) -> str | None:
        """Why `value` is refused, or None."""
        if value is None:
            return None if self.nullable else "must not be null"
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}"
        if self.kind == "boolean":
            ok = isinstance(value, bool)
        elif self.kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            return f"must be {'an' if self.kind == 'integer' else 'a'} {self.kind}, got {_json_type(value)}"
        if self.name == "num_threads" and not 1 <= value <= MAX_THREADS:
            return f"must be between 1 and {MAX_THREADS}"
        if self.kind in ("integer", "number") and value < 0:
            return "must not be negative"
        return None


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _option_of(param: inspect.Parameter, stage: str) -> OptionSpec | None:
    """The option a parameter offers, or None for what a JSON value cannot be (callables, LMs)."""
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name in RESERVED:
        return None
    default = None if param.default is inspect.Parameter.empty else param.default
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        for python_type, kind in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
            if isinstance(default, python_type):
                return OptionSpec(param.name, kind, default, stage=stage)
        kind = _UNTYPED.get(param.name)
        return OptionSpec(param.name, kind, default, nullable=True, stage=stage) if kind else None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    nullable = default is None
    optional = _OPTIONAL.match(text)
    if optional:
        text, nullable = optional.group(1), True
    parts = [part.strip() for part in text.split("|")]
    if "None" in parts:
        parts.remove("None")
        nullable = True
    if len(parts) == 1 and (literal := _LITERAL.match(parts[0])):
        try:
            choices = ast.literal_eval(f"({literal.group(1)},)")
        except (ValueError, SyntaxError):
            return None
        return OptionSpec(param.name, "string", default, nullable, tuple(choices), stage)
    kinds = {_KINDS.get(part) for part in parts}
    if kinds == {"integer", "number"}:
        kinds = {"number"}
    if len(kinds) == 1 and None not in kinds:
        return OptionSpec(param.name, kinds.pop(), default, nullable, stage=stage)  # type: ignore[arg-type]
    if "string" in kinds:  # e.g. "ReflectionComponentSelector | str": the string spelling
        return OptionSpec(param.name, "string", default, nullable, stage=stage)
    return None


def _estimate_bootstrap(options: dict[str, Any], train: int, val: int) -> int:
    return train * int(options.get("max_rounds") or 1)


def _estimate_random_search(options: dict[str, Any], train: int, val: int) -> int:
    candidates = int(options.get("num_candidate_programs") or 16) + 3
    return candidates * (train + (val or train))


def _estimate_copro(options: dict[str, Any], train: int, val: int) -> int:
    return int(options.get("breadth") or 10) * int(options.get("depth") or 3) * train


def _estimate_simba(options: dict[str, Any], train: int, val: int) -> int:
    batch = min(int(options.get("bsize") or 32), train)
    return int(options.get("max_steps") or 8) * batch * (int(options.get("num_candidates") or 6) + 1)


def _estimate_gepa(options: dict[str, Any], train: int, val: int) -> int | None:
    if options.get("max_metric_calls"):
        return int(options["max_metric_calls"])
    if options.get("max_full_evals"):
        return int(options["max_full_evals"]) * (train + (val or train))
    return None


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: the DSPy class behind a name, and what the bridge fills in."""

    name: str
    class_name: str
    summary: str
    needs_metric: bool = True
    # Filled in by the bridge unless the request sets them (a worker never asks on a terminal).
    defaults: dict[str, Any] = field(default_factory=dict)
    # Metric calls the whole compile makes, roughly, for progress {done, total}.
    estimate: Estimate | None = None

    def dspy_class(self) -> type:
        from .loader import load_dspy

        return getattr(load_dspy(), self.class_name)

    def takes(self, parameter: str) -> set[str]:
        """Where (init, compile) the DSPy class takes `parameter`."""
        cls = self.dspy_class()
        return {stage for stage, fn in (("init", cls.__init__), ("compile", cls.compile))
                if parameter in inspect.signature(fn).parameters}

    @functools.cached_property
    def options(self) -> dict[str, OptionSpec]:
        """Name -> option; a name both stages take goes to the class (compile falls back to it)."""
        cls = self.dspy_class()
        found: dict[str, OptionSpec] = {}
        for stage, fn in (("init", cls.__init__), ("compile", cls.compile)):
            for param in inspect.signature(fn).parameters.values():
                option = _option_of(param, stage)
                if option is not None and option.name not in found:
                    found[option.name] = option
        return found

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dspy_class": self.class_name, "summary": self.summary,
                "needs_metric": self.needs_metric,
                "options": {name: option.describe() for name, option in sorted(self.options.items())}}

    def parse_options(self, value: Any) -> dict[str, Any]:
        """The request's `options`, checked against the DSPy class's own parameters."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidArguments("'options' must be an object of optimizer parameters")
        known = self.options
        for name, option_value in value.items():
            option = known.get(name)
            if option is None:
                shown = str(name)[:60]
                import difflib  # only for a misspelt option: kept off the worker's start-up

                close = difflib.get_close_matches(shown, list(known), n=1) if len(shown) <= 60 else []
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidArguments(f"{self.name} has no option {shown!r}{hint} (options: "
                                       f"{', '.join(sorted(known))})",
                                       details={"suggestion": close[0]} if close else None)
            problem = option.check(self.name, option_value)
            if problem is not None:
                raise InvalidArguments(f"option {name!r} of {self.name} {problem}")
        return dict(value)


OPTIMIZERS: dict[str, OptimizerSpec] = {spec.name: spec for spec in (
    OptimizerSpec("labeled_few_shot", "LabeledFewShot",
                  "the trainset's own examples become the demos (k of them)", needs_metric=False),
    OptimizerSpec("bootstrap_few_shot", "BootstrapFewShot",
                  "runs the program on the trainset; traces the metric accepts become demos",
                  estimate=_estimate_bootstrap),
    OptimizerSpec("bootstrap_few_shot_with_random_search", "BootstrapFewShotWithRandomSearch",
                  "several bootstrapped demo sets, the best on the valset kept",
                  defaults={"num_threads": 1}, estimate=_estimate_random_search),
    OptimizerSpec("mipro_v2", "MIPROv2", "proposes instructions and demo sets, searched with Bayesian "
                  "optimisation (auto: light, medium, heavy)",
                  defaults={"auto": "light", "num_threads": 1}),
    OptimizerSpec("copro", "COPRO", "proposes and refines instructions (breadth x depth candidates)",
                  estimate=_estimate_copro),
    OptimizerSpec("simba", "SIMBA", "stochastic mini-batch ascent: rules and demos from hard examples",
                  defaults={"num_threads": 1}, estimate=_estimate_simba),
    OptimizerSpec("gepa", "GEPA", "reflective prompt evolution: a reflection LM rewrites instructions "
                  "from the metric's results", defaults={"num_threads": 1, "track_stats": True},
                  estimate=_estimate_gepa),
)}


def find_optimizer(name: Any) -> OptimizerSpec:
    if not isinstance(name, str) or not name:
        raise InvalidArguments(f"'optimizer' is required: one of {', '.join(OPTIMIZERS)}")
    spec = OPTIMIZERS.get(name)
    if spec is not None:
        return spec
    import difflib  # only for a misspelt name

    close = difflib.get_close_matches(name, list(OPTIMIZERS), n=1) if len(name) <= 64 else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownOptimizer(f"Unknown optimizer {name[:100]!r}{hint} (optimizers: {', '.join(OPTIMIZERS)})",
                           details={"suggestion": close[0]} if close else None)
