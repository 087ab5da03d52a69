"""The program types `create_program` builds: one table, read by validation, building,
execution (which outputs a program has, its trajectory) and the docs.

Each row names the DSPy class, the spellings clients use, the options with their types
and defaults, whether it takes tools, and the outputs it adds to the signature's.
Nothing here imports DSPy at module level: `build_module` loads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArguments
from ...redact import scrub_values
from .errors import Unsupported
from .json_values import to_json_safe
from .signatures import SignatureSpec, build_dspy_signature
from .tools import ClientTool, ToolSpec, dspy_tools

# Bounds that keep one request from asking for thousands of LM calls.
MAX_ITERS = 50
MAX_ATTEMPTS = 20
MAX_SUGGESTED_NAME = 64


@dataclass(frozen=True)
class Option:
    """One option of a program type, as `create_program`'s `options` object gives it."""

    name: str
    type: str  # "integer", "number" or "string"
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    # Further valid values known only at run time (plugin metrics as rewards).
    more_choices: Callable[[], tuple[str, ...]] | None = None

    def parse(self, value: Any, program_type: str) -> Any:
        where = f"option '{self.name}' of {program_type}"
        if self.type == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise InvalidArguments(f"{where} must be {self.type}, got {_json_type(value)}")
        if self.choices:
            valid = self.choices + (self.more_choices() if self.more_choices is not None else ())
            if value not in valid:
                raise InvalidArguments(f"{where} must be one of: {', '.join(valid)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidArguments(f"{where} must be between {self.low:g} and {self.high:g}, got {value}")
        return float(value) if self.type == "number" else value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name, kinds in (("string", str), ("integer", int), ("number", float), ("object", dict), ("array", list)):
        if isinstance(value, kinds):
            return name
    return "null" if value is None else type(value).__name__


Builder = Callable[[Any, Any, dict[str, Any], list[Any]], Any]  # (dspy, signature, options, tools) -> module


@dataclass(frozen=True)
class ProgramType:
    name: str
    dspy_class: str
    spellings: tuple[str, ...]
    build: Builder
    summary: str
    options: tuple[Option, ...] = ()
    takes_tools: bool = False
    # Outputs the module adds before the signature's own (ChainOfThought's reasoning).
    extra_outputs: tuple[str, ...] = ()
    needs_deno: bool = False

    def option(self, name: str) -> Option | None:
        return next((option for option in self.options if option.name == name), None)


# -- rewards of best_of_n and refine -------------------------------------------------------

# The rewards of one execution, so its reply can say how many attempts were scored. A context
# variable, because one module serves concurrent executions.
_REWARDS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("dspex_rewards", default=None)


def _non_empty(outputs: tuple[str, ...]) -> Callable[[dict[str, Any], Any], float]:
    def non_empty(inputs: dict[str, Any], prediction: Any) -> float:
        """1.0 when every output field has a non-blank value."""
        return 1.0 if all(str(prediction.get(name) or "").strip() for name in outputs) else 0.0
    return non_empty


def _shortest(outputs: tuple[str, ...]) -> Callable[[dict[str, Any], Any], float]:
    def shortest(inputs: dict[str, Any], prediction: Any) -> float:
        """Higher for a shorter last output field; never reaches 1.0, so every attempt runs."""
        return 1.0 / (2.0 + len(str(prediction.get(outputs[-1]) or "")))
    return shortest


# Built-in rewards by name; plugin metrics (@metric) serve as rewards too. The built-in
# metrics compare with expected outputs, which a reward never has, so they are not offered.
REWARDS: dict[str, Callable[[tuple[str, ...]], Callable[[dict[str, Any], Any], float]]] = {
    "non_empty": _non_empty, "shortest": _shortest}


def _plugin_metric_names() -> tuple[str, ...]:
    from .metrics import METRICS

    return tuple(spec.name for spec in METRICS.specs() if spec.plugin is not None)


def _metric_reward(name: str, outputs: tuple[str, ...]) -> Callable[[dict[str, Any], Any], float]:
    from .loader import load_dspy
    from .metrics import resolve_metric

    metric = resolve_metric(name, list(outputs))
    example_of = load_dspy().Example

    def reward(inputs: dict[str, Any], prediction: Any) -> float:
        return metric(example_of(**inputs), prediction)  # the example holds the inputs only
    return reward


def _recorded(reward: Callable[[dict[str, Any], Any], float]) -> Callable[[dict[str, Any], Any], float]:
    @functools.wraps(reward)
    def scored(inputs: dict[str, Any], prediction: Any) -> float:
        value = float(reward(inputs, prediction))
        rewards = _REWARDS.get()
        if rewards is not None:
            rewards.append(value)
        return value
    return scored


@contextlib.contextmanager
def recording_rewards() -> Iterator[list[float]]:
    """Collects the rewards best_of_n/refine compute during one execution."""
    rewards: list[float] = []
    token = _REWARDS.set(rewards)
    try:
        yield rewards
    finally:
        _REWARDS.reset(token)


# -- builders ------------------------------------------------------------------------------

def _base(dspy: Any, signature: Any, options: dict[str, Any]) -> Any:
    return dspy.ChainOfThought(signature) if options.get("module") == "chain_of_thought" else dspy.Predict(signature)


def _reward(signature: Any, options: dict[str, Any]) -> Callable[[dict[str, Any], Any], float]:
    name, outputs = options["reward"], tuple(signature.output_fields)
    return _recorded(REWARDS[name](outputs) if name in REWARDS else _metric_reward(name, outputs))


def _build_best_of_n(dspy: Any, signature: Any, options: dict[str, Any], tools: list[Any]) -> Any:
    return dspy.BestOfN(module=_base(dspy, signature, options), N=options["N"],
                        reward_fn=_reward(signature, options), threshold=options["threshold"])


def _build_refine(dspy: Any, signature: Any, options: dict[str, Any], tools: list[Any]) -> Any:
    return dspy.Refine(module=_base(dspy, signature, options), N=options["N"],
                       reward_fn=_reward(signature, options), threshold=options["threshold"])


@functools.lru_cache(maxsize=1)
def _multi_chain_class() -> type:
    from .loader import load_dspy

    dspy = load_dspy()

    class MultiChain(dspy.Module):  # type: ignore[misc, name-defined]
        """M ChainOfThought attempts, then MultiChainComparison over them (DSPy's module
        takes the attempts as `completions`; a caller over the wire cannot give them)."""

        def __init__(self, signature: Any, M: int, temperature: float) -> None:  # noqa: N803
            super().__init__()
            self.M = M
            self.attempt = dspy.ChainOfThought(signature)
            self.compare = dspy.MultiChainComparison(signature, M=M, temperature=temperature)

        def forward(self, **inputs: Any) -> Any:
            config = inputs.pop("config", None) or {}
            # A distinct rollout per attempt, so a cached LM still gives M attempts.
            completions = [self.attempt(**inputs, config={**config, "rollout_id": index, "temperature": 1.0})
                           for index in range(self.M)]
            return self.compare(completions=completions, **inputs)

    return MultiChain


def _build_multi_chain(dspy: Any, signature: Any, options: dict[str, Any], tools: list[Any]) -> Any:
    return _multi_chain_class()(signature, M=options["M"], temperature=options["temperature"])


_ATTEMPT_OPTIONS = (
    Option("N", "integer", 3, "most attempts", 1, MAX_ATTEMPTS),
    Option("threshold", "number", 1.0, "stop at the first attempt whose reward reaches this"),
    Option("reward", "string", "non_empty", "reward by name: " + ", ".join(REWARDS) + " or a plugin @metric",
           choices=tuple(REWARDS), more_choices=_plugin_metric_names),
    Option("module", "string", "predict", "the module each attempt runs",
           choices=("predict", "chain_of_thought")),
)

PROGRAM_TYPES: tuple[ProgramType, ...] = (
    ProgramType("predict", "Predict", ("Predict",), lambda dspy, sig, o, t: dspy.Predict(sig),
                "one LM call from the signature"),
    ProgramType("chain_of_thought", "ChainOfThought", ("ChainOfThought", "cot", "chain-of-thought"),
                lambda dspy, sig, o, t: dspy.ChainOfThought(sig), "reasons step by step first",
                extra_outputs=("reasoning",)),
    ProgramType("react", "ReAct", ("ReAct", "re_act"),
                lambda dspy, sig, o, tools: dspy.ReAct(sig, tools=tools, max_iters=o["max_iters"]),
                "an agent calling registered tools", takes_tools=True, extra_outputs=("reasoning",),
                options=(Option("max_iters", "integer", 20, "most tool-calling steps", 1, MAX_ITERS),)),
    ProgramType("best_of_n", "BestOfN", ("BestOfN", "best-of-n"), _build_best_of_n,
                "up to N attempts, the best by the reward", options=_ATTEMPT_OPTIONS),
    ProgramType("refine", "Refine", ("Refine",), _build_refine,
                "up to N attempts, each with the LM's advice from the last", options=_ATTEMPT_OPTIONS),
    ProgramType("multi_chain_comparison", "MultiChainComparison", ("MultiChainComparison", "mcc"),
                _build_multi_chain, "M reasoning attempts compared into one answer",
                extra_outputs=("rationale",),
                options=(Option("M", "integer", 3, "attempts compared", 1, MAX_ATTEMPTS),
                         Option("temperature", "number", 0.7, "temperature of the comparison", 0.0, 2.0))),
    ProgramType("program_of_thought", "ProgramOfThought", ("ProgramOfThought", "pot"),
                lambda dspy, sig, o, t: dspy.ProgramOfThought(sig, max_iters=o["max_iters"]),
                "writes and runs Python (needs Deno)", extra_outputs=("reasoning",), needs_deno=True,
                options=(Option("max_iters", "integer", 3, "code generation retries", 1, 10),)),
)

_BY_SPELLING: dict[str, ProgramType] = {spelling: row for row in PROGRAM_TYPES
                                        for spelling in (row.name, *row.spellings)}

ADAPTERS: dict[str, str] = {"chat": "ChatAdapter", "json": "JSONAdapter", "xml": "XMLAdapter"}


def _suggest(name: str, known: list[str]) -> str | None:
    if len(name) > MAX_SUGGESTED_NAME:
        return None
    import difflib  # only for a mistyped name

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown(what: str, value: Any, known: list[str], canonical: list[str]) -> InvalidArguments:
    text = str(value)
    hint = _suggest(text, known) if isinstance(value, str) else None
    shown = text if len(text) <= 80 else f"{text[:80]}…"
    message = f"Unknown {what} {shown!r}" + (f"; did you mean {hint!r}?" if hint else ".")
    return InvalidArguments(f"{message} Use one of: {', '.join(canonical)}",
                            details={"suggestion": hint} if hint else None)


def parse_program_type(value: Any) -> ProgramType:
    """The row of a program_type (any accepted spelling; default predict)."""
    row = _BY_SPELLING.get(value or "predict") if isinstance(value, (str, type(None))) else None
    if row is None:
        raise _unknown("program_type", value, list(_BY_SPELLING), [r.name for r in PROGRAM_TYPES])
    return row


def parse_program_options(row: ProgramType, value: Any) -> dict[str, Any]:
    """Every option of the type, from `options` or its default: what program_data keeps."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidArguments(f"'options' must be an object, got {_json_type(value)}")
    unknown = sorted(set(value) - {option.name for option in row.options})
    if unknown:
        valid = ", ".join(option.name for option in row.options) or "none"
        raise InvalidArguments(f"{row.name} has no option {', '.join(map(repr, unknown))}; its options: {valid}")
    return {option.name: option.default if value.get(option.name) is None else option.parse(value[option.name], row.name)
            for option in row.options}


def parse_adapter(value: Any) -> str | None:
    """`adapter` of create_program/configure_lm: chat, json, xml, or none (DSPy's default)."""
    if value is None:
        return None
    if value not in ADAPTERS:
        raise _unknown("adapter", value, list(ADAPTERS), list(ADAPTERS))
    return value


def make_adapter(name: str | None) -> Any:
    """A DSPy adapter instance for dspy.context(adapter=...), or None for DSPy's default."""
    if name is None:
        return None
    from .loader import load_dspy

    return getattr(load_dspy(), ADAPTERS[name])()


def deno_executable() -> str | None:
    """Where DSPy's PythonInterpreter would find Deno (its managed package first, then PATH)."""
    try:
        from deno import find_deno_bin  # type: ignore[import-not-found]

        return str(find_deno_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


def check_tools(row: ProgramType, tools: list[ToolSpec | ClientTool]) -> None:
    if tools and not row.takes_tools:
        takers = ", ".join(r.name for r in PROGRAM_TYPES if r.takes_tools)
        raise InvalidArguments(f"program_type {row.name} takes no tools; only {takers} does")


@functools.lru_cache(maxsize=256)
def _signature_class(spec: SignatureSpec) -> type:
    """One DSPy Signature class per distinct spec: making one (a pydantic model) costs
    milliseconds, and a compile builds its student and its result from the same spec.
    Sharing is safe because DSPy derives new classes instead of changing one (with_instructions,
    load_state), and a program's deepcopy already shares its class with the original.
    Bounded: clients choose the specs."""
    return build_dspy_signature(spec)


def build_module(spec: SignatureSpec, program_type: ProgramType | str, options: dict[str, Any],
                 tools: list[ToolSpec | ClientTool]) -> tuple[Any, str]:
    """The DSPy module for a program type (options already parsed) and its signature class name."""
    row = program_type if isinstance(program_type, ProgramType) else parse_program_type(program_type)
    check_tools(row, tools)
    if row.needs_deno and deno_executable() is None:
        raise Unsupported(f"program_type {row.name} runs its generated code with Deno, which this worker "
                          "does not have: install it (pip install \"dspy[deno]\", or deno on PATH) and restart")
    from .loader import load_dspy

    dspy = load_dspy()
    signature = _signature_class(spec)
    return row.build(dspy, signature, options, dspy_tools(tools) if tools else []), signature.__name__


def apply_demos(module: Any, spec: SignatureSpec, demos: list[dict[str, Any]]) -> None:
    """Demos go to the predictors that take exactly the signature's inputs and give its outputs
    (ReAct's tool step and the comparison step of multi_chain_comparison take other fields)."""
    if not demos:
        return
    from .loader import load_dspy

    dspy = load_dspy()
    examples = [dspy.Example(**demo).with_inputs(*spec.input_names) for demo in demos]
    for predictor in module.predictors():
        fields = predictor.signature
        if set(fields.input_fields) == set(spec.input_names) and set(spec.output_names) <= set(fields.output_fields):
            predictor.demos = list(examples)


def output_names(row: ProgramType, spec: SignatureSpec, options: dict[str, Any]) -> list[str]:
    """The outputs execute_program returns: the type's extra fields, then the signature's."""
    extra = list(row.extra_outputs)
    if row.name in ("best_of_n", "refine") and options.get("module") == "chain_of_thought":
        extra.append("reasoning")
    return [*extra, *(name for name in spec.output_names if name not in extra)]


def trajectory(prediction: Any) -> list[dict[str, Any]]:
    """ReAct's steps as [{thought, tool, args, observation}], JSON-safe and without known secrets."""
    raw = getattr(prediction, "trajectory", None) or {}
    steps: list[dict[str, Any]] = []
    index = 0
    while f"tool_name_{index}" in raw:
        steps.append({"thought": raw.get(f"thought_{index}"), "tool": raw.get(f"tool_name_{index}"),
                      "args": raw.get(f"tool_args_{index}") or {}, "observation": raw.get(f"observation_{index}")})
        index += 1
    return scrub_values(to_json_safe(steps))


def run_details(row: ProgramType, prediction: Any, options: dict[str, Any], rewards: list[float]) -> dict[str, Any]:
    """What a module has beyond its outputs: ReAct's trajectory, the attempts of the others."""
    if row.name == "react":
        return {"trajectory": trajectory(prediction)}
    if row.name in ("best_of_n", "refine"):
        return {"attempts": len(rewards), "rewards": list(rewards)}
    if row.name == "multi_chain_comparison":
        return {"attempts": options["M"]}
    return {}


def describe_program_types() -> list[dict[str, Any]]:
    """The table as data (docs and `dspex commands`-style listings)."""
    return [{"program_type": row.name, "dspy_class": row.dspy_class, "spellings": list(row.spellings),
             "summary": row.summary, "takes_tools": row.takes_tools, "extra_outputs": list(row.extra_outputs),
             "options": [{"name": o.name, "type": o.type, "default": o.default, "help": o.help,
                          **({"choices": list(o.choices)} if o.choices else {})} for o in row.options]}
            for row in PROGRAM_TYPES]
