"""Metrics by name: the built-ins, and those plugins register with `@metric`.

A request names a metric; it never sends code. `"exact_match"` compares the first output
field; `{"metric": "exact_match", "field": "answer"}` names the field; options such as
`tolerance` (numeric) or `frac` (answer_exact_match) ride along in the same object.

Every metric is called DSPy's way, `metric(example, prediction, trace=None)` with a
`dspy.Example` and a `dspy.Prediction` (both read as `x.answer` or `x["answer"]`), and
returns a number or a bool. This module does not import DSPy: the built-ins that reuse
DSPy's own scoring load it when first called.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidArguments
from .errors import UnknownMetric

MetricFn = Callable[..., Any]


@dataclass(frozen=True)
class MetricSpec:
    """A metric that requests may name."""

    name: str
    summary: str
    # fn(example, prediction, field, options) -> score; plugin metrics get (example, prediction[, trace]).
    fn: MetricFn
    options: dict[str, str] = field(default_factory=dict)  # option -> JSON type
    uses_field: bool = True
    plugin: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "options": dict(self.options),
                "uses_field": self.uses_field, "plugin": self.plugin}


class MetricRegistry:
    """Metrics by name; `list_metrics`, completion and docs read the same table."""

    def __init__(self) -> None:
        self._specs: dict[str, MetricSpec] = {}

    def add(self, spec: MetricSpec) -> None:
        self._specs[spec.name] = spec

    def find(self, name: str) -> MetricSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[MetricSpec]:
        return [self._specs[name] for name in self.names()]


METRICS = MetricRegistry()


# -- the built-ins ------------------------------------------------------------------------

def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _normalize(value: Any) -> str:
    from .loader import load_dspy

    return str(load_dspy().evaluate.normalize_text(_text(value)))


def _exact_match(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> bool:
    return _normalize(example.get(name)) == _normalize(prediction.get(name))


def _answer_exact_match(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> bool:
    from dspy.evaluate.metrics import EM, F1

    expected = example.get(name)
    answers = [_text(a) for a in expected] if isinstance(expected, list) else [_text(expected)]
    frac = float(options.get("frac", 1.0))
    predicted = _text(prediction.get(name))
    return bool(EM(predicted, answers)) if frac >= 1.0 else F1(predicted, answers) >= frac


def _answer_passage_match(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> bool:
    from dspy.evaluate.metrics import _passage_match

    expected = example.get(name)
    answers = [_text(a) for a in expected] if isinstance(expected, list) else [_text(expected)]
    passages = prediction.get(options.get("passages_field", "context"))
    if isinstance(passages, str):
        passages = [passages]
    return bool(_passage_match([_text(p) for p in passages or []], answers))


def _f1(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> float:
    from dspy.evaluate.metrics import f1_score

    return float(f1_score(_text(prediction.get(name)), _text(example.get(name))))


def _contains(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> bool:
    expected = _text(example.get(name)).strip().lower()
    return bool(expected) and expected in _text(prediction.get(name)).lower()


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _NUMBER.search(_text(value).replace(",", ""))  # "about 1,234.5 km" -> 1234.5
    return float(match.group()) if match else None


def _numeric(example: Any, prediction: Any, name: str, options: dict[str, Any]) -> bool:
    expected, predicted = _number(example.get(name)), _number(prediction.get(name))
    if expected is None or predicted is None:
        return False
    tolerance = float(options.get("tolerance", 0.0))
    return abs(expected - predicted) <= tolerance


for _spec in (
    MetricSpec("exact_match", "1 when the field equals the expected value after DSPy's normalisation", _exact_match),
    MetricSpec("answer_exact_match", "DSPy's answer_exact_match: the expected value may be a list; "
               "frac < 1 accepts a token F1 of at least frac", _answer_exact_match, {"frac": "number"}),
    MetricSpec("answer_passage_match", "DSPy's answer_passage_match: a passage of the prediction's "
               "context field holds the expected answer", _answer_passage_match, {"passages_field": "string"}),
    MetricSpec("f1", "token-level F1 between the field and the expected value (0..1)", _f1),
    MetricSpec("contains", "1 when the field contains the expected value (case-insensitive)", _contains),
    MetricSpec("numeric", "1 when the first number in the field is within tolerance of the expected one",
               _numeric, {"tolerance": "number"}),
):
    METRICS.add(_spec)


# -- plugin metrics -----------------------------------------------------------------------

def metric(name: str | Callable[..., Any] | None = None, *, summary: str | None = None) -> Any:
    """Registers a plugin's metric: `@metric` or `@metric("name")`. The function is called
    as DSPy calls metrics, `fn(example, prediction, trace=None)`, and returns a number or a bool."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        metric_name = name if isinstance(name, str) else fn.__name__
        doc = summary or (inspect.getdoc(fn) or "").split("\n", 1)[0] or f"plugin metric {metric_name}"
        METRICS.add(MetricSpec(metric_name, doc, fn, uses_field=False, plugin=fn.__module__))
        return fn

    if callable(name):
        return register(name)
    return register


# -- what a request names -----------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedMetric:
    """A metric ready to call: `score(example, prediction, trace=None) -> float`."""

    name: str
    field: str | None
    options: dict[str, Any]
    spec: MetricSpec

    def __call__(self, example: Any, prediction: Any, trace: Any = None, *_: Any, **__: Any) -> float:
        # GEPA calls metrics with (gold, pred, trace, pred_name, pred_trace): the extras are ignored.
        if self.spec.plugin is None:
            value = self.spec.fn(example, prediction, self.field, self.options)
        elif _takes_trace(self.spec.fn):
            value = self.spec.fn(example, prediction, trace)
        else:
            value = self.spec.fn(example, prediction)
        return score_value(value, self.name)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.name, "field": self.field, **self.options}


@dataclass(frozen=True)
class ClientMetric(ResolvedMetric):
    """A metric that lives in the client: each call is a `callback` event (kind "metric")
    with args `{example, prediction}` as JSON objects, through the context of the request
    waiting for the job (evaluate's threads may each wait on one at once)."""

    def __call__(self, example: Any, prediction: Any, trace: Any = None, *_: Any, **__: Any) -> float:
        from ...errors import CallbackFailed
        from .tools import calling_request

        ctx = calling_request()
        if ctx is None:
            raise CallbackFailed(f"metric {self.name} lives in the client, but no request is running it")
        value = ctx.callback("metric", self.name, {"example": _as_object(example),
                                                   "prediction": _as_object(prediction)})
        return score_value(value, self.name)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.name, "handler": "client"}


def _as_object(value: Any) -> dict[str, Any]:
    from .json_values import to_json_safe

    to_dict = getattr(value, "toDict", None)
    raw = to_dict() if callable(to_dict) else value if isinstance(value, dict) else {"value": value}
    safe = to_json_safe(raw)
    return safe if isinstance(safe, dict) else {"value": safe}


def _client_metric(value: dict[str, Any]) -> ClientMetric:
    name = value.get("name", value.get("metric"))
    if not isinstance(name, str) or not _CLIENT_NAME.match(name):
        raise InvalidArguments("a client metric needs a 'name': an identifier of at most 64 characters, "
                               "e.g. {\"handler\": \"client\", \"name\": \"my_metric\"}")
    unknown = sorted(set(value) - {"handler", "name", "metric"})
    if unknown:
        raise InvalidArguments(f"client metric {name!r} has unknown keys: {', '.join(k[:40] for k in unknown)} "
                               "(the client computes the score from {example, prediction})")
    spec = MetricSpec(name, "a metric that lives in the client", _never_called, uses_field=False, plugin="client")
    return ClientMetric(name, None, {}, spec)


def _never_called(*_: Any) -> Any:  # ClientMetric.__call__ asks the client instead
    raise AssertionError("a client metric's spec function is never called")


_CLIENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


def _takes_trace(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


def score_value(value: Any, name: str) -> float:
    """A metric's answer as a float: a bool counts 1/0; anything else is the metric's error."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    score = getattr(value, "score", None)  # a dspy.Prediction(score=..., feedback=...) (GEPA style)
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    raise ValueError(f"metric {name} returned {type(value).__name__}, not a number or a bool")


def _suggest(name: str) -> str:
    import difflib  # only for a misspelt name: not at every worker's start

    close = difflib.get_close_matches(name, METRICS.names(), n=1) if len(name) <= 64 else []
    return f"; did you mean {close[0]!r}?" if close else f"; known metrics: {', '.join(METRICS.names())}"


def resolve_metric(value: Any, output_names: list[str]) -> ResolvedMetric:
    """What `metric` names in a request, checked: a name, or an object with `metric`,
    `field` and the metric's options. The field defaults to the first output field."""
    if isinstance(value, dict) and "handler" in value:
        if value["handler"] != "client":
            raise InvalidArguments("a metric's 'handler' can only be \"client\" (a metric that lives in the client)")
        return _client_metric(value)
    if isinstance(value, str):
        name, rest = value, {}
    elif isinstance(value, dict) and isinstance(value.get("metric", value.get("name")), str):
        rest = dict(value)
        name = rest.pop("metric", None) or rest.pop("name")
        rest.pop("name", None)
    else:
        raise InvalidArguments("'metric' must be a metric name or {\"metric\": NAME, \"field\": FIELD, ...}")
    spec = METRICS.find(name)
    if spec is None:
        raise UnknownMetric(f"Unknown metric {name[:100]!r}{_suggest(name)}")
    field_name = rest.pop("field", None)
    if field_name is not None and (not isinstance(field_name, str) or field_name not in output_names):
        raise InvalidArguments(f"metric field {str(field_name)[:100]!r} is not an output of the signature "
                               f"(outputs: {', '.join(output_names)})")
    for option, option_value in rest.items():
        declared = spec.options.get(option)
        if declared is None:
            raise InvalidArguments(f"metric {name} has no option {option[:100]!r}"
                                   + (f" (options: {', '.join(spec.options)})" if spec.options else ""))
        if declared == "number" and (isinstance(option_value, bool) or not isinstance(option_value, (int, float))):
            raise InvalidArguments(f"metric option {option} must be a number")
        if declared == "string" and not isinstance(option_value, str):
            raise InvalidArguments(f"metric option {option} must be a string")
    if spec.uses_field and field_name is None:
        if not output_names:
            raise InvalidArguments("the signature has no output field to score")
        field_name = output_names[0]
    return ResolvedMetric(name, field_name if spec.uses_field else None, rest, spec)


__all__ = ["ClientMetric", "METRICS", "MetricSpec", "ResolvedMetric", "UnknownMetric", "metric", "resolve_metric", "score_value"]
