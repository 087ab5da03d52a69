"""DSPy's outputs as JSON values: what a reply may carry.

Predictions, pydantic models, tuples and sets become plain JSON; NaN and infinities become
`null`, which strict JSON can spell. Its own module: every command that answers with
DSPy's values uses it, and it knows nothing of signatures.
"""

from __future__ import annotations

import math
from typing import Any


def to_json_safe(value: Any) -> Any:
    """Converts DSPy outputs (pydantic models, Predictions, tuples, sets, ...) to JSON values.

    NaN and infinities become `null`: strict JSON has no spelling for them.
    """
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        # Prediction/Example: their own dict view, not the str() the fallback would give.
        value = to_dict()
    from pydantic_core import to_jsonable_python

    return _finite(to_jsonable_python(value, fallback=_fallback, inf_nan_mode="null"))


def _fallback(value: Any) -> Any:
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_json_safe(to_dict())
    return str(value)


def _finite(value: Any) -> Any:
    # pydantic's inf_nan_mode covers models; plain floats inside containers pass through.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
