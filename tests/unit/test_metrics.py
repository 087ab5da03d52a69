"""Metrics by name: built-ins score what they say, bad names and options are clear errors."""

from __future__ import annotations

import pytest

from bridge.adapters.dspy.metrics import METRICS, UnknownMetric, metric, resolve_metric
from bridge.errors import InvalidArguments

dspy = pytest.importorskip("dspy")


def _score(spec: object, expected: dict, predicted: dict, outputs: list[str] | None = None) -> float:
    resolved = resolve_metric(spec, outputs or ["answer"])
    return resolved(dspy.Example(**expected), dspy.Prediction(**predicted))


@pytest.mark.parametrize(("spec", "expected", "predicted", "score"), [
    ("exact_match", {"answer": "Paris"}, {"answer": " paris. "}, 1.0),
    ("exact_match", {"answer": "Paris"}, {"answer": "Lyon"}, 0.0),
    ("answer_exact_match", {"answer": ["Eiffel Tower", "Louvre"]}, {"answer": "the Louvre"}, 1.0),
    ({"metric": "answer_exact_match", "frac": 0.5}, {"answer": "Eiffel Tower"}, {"answer": "tower"}, 1.0),
    ("contains", {"answer": "blue"}, {"answer": "The sky is Blue today"}, 1.0),
    ("contains", {"answer": "red"}, {"answer": "The sky is Blue"}, 0.0),
    ({"metric": "numeric", "tolerance": 0.5}, {"answer": 10}, {"answer": "about 10.4 units"}, 1.0),
    ({"metric": "numeric", "tolerance": 0.1}, {"answer": 10}, {"answer": "10.4"}, 0.0),
    ("numeric", {"answer": "1,234"}, {"answer": "1234"}, 1.0),
])
def test_builtin_metrics_score(spec: object, expected: dict, predicted: dict, score: float) -> None:
    assert _score(spec, expected, predicted) == score


def test_f1_is_partial_and_the_field_can_be_named() -> None:
    value = _score({"metric": "f1", "field": "b"}, {"b": "red green blue"}, {"a": "x", "b": "red green"},
                   ["a", "b"])
    assert 0.7 < value < 0.9
    assert resolve_metric("f1", ["a", "b"]).field == "a"  # the first output by default


def test_answer_passage_match_reads_the_context_field() -> None:
    assert _score("answer_passage_match", {"answer": "Paris"},
                  {"context": ["Lyon is big.", "Paris is the capital."]}) == 1.0


def test_unknown_metric_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownMetric, match="did you mean 'exact_match'"):
        resolve_metric("exact_mach", ["answer"])


@pytest.mark.parametrize(("spec", "text"), [
    ({"metric": "exact_match", "field": "nope"}, "not an output"),
    ({"metric": "numeric", "tolerance": "big"}, "must be a number"),
    ({"metric": "exact_match", "tolerance": 1}, "has no option"),
    (42, "must be a metric name"),
])
def test_bad_metric_specs_are_invalid_arguments(spec: object, text: str) -> None:
    with pytest.raises(InvalidArguments, match=text):
        resolve_metric(spec, ["answer"])


def test_plugin_metrics_register_by_decorator() -> None:
    @metric("test_len_at_least_3")
    def long_enough(example, prediction):  # noqa: ANN001, ANN202
        """1 when the answer has at least three characters."""
        return len(prediction.answer) >= 3

    try:
        assert METRICS.find("test_len_at_least_3").summary.startswith("1 when")
        assert _score("test_len_at_least_3", {"answer": ""}, {"answer": "abcd"}) == 1.0
        assert _score("test_len_at_least_3", {"answer": ""}, {"answer": "ab"}) == 0.0
    finally:
        METRICS._specs.pop("test_len_at_least_3")


def test_a_metric_returning_nonsense_is_that_examples_error() -> None:
    @metric("test_returns_text")
    def bad(example, prediction, trace=None):  # noqa: ANN001, ANN202
        return "yes"

    try:
        with pytest.raises(ValueError, match="not a number"):
            _score("test_returns_text", {"answer": "a"}, {"answer": "a"})
    finally:
        METRICS._specs.pop("test_returns_text")
