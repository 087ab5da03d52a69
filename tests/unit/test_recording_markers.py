"""The recorder's fast path lets a frame through as its own bytes only when it holds no
marker; the markers must come from redaction's one list of secret words and key shapes."""

from __future__ import annotations

import re

import pytest

from bridge.record.scrubbing import _FOLD, _MARKERS, marker_free
from bridge.redact import _KEY_SHAPES, SECRET_NAMES


@pytest.mark.parametrize("name", sorted(SECRET_NAMES))
def test_every_secret_name_stops_the_fast_path(name: str) -> None:
    for spelled in (name, name.upper(), name.replace("_", "-").title()):
        frame = b'{"id":1,"command":"configure_lm","args":{"%s":"v"}}' % spelled.encode()
        assert not marker_free(frame.translate(_FOLD)), spelled


def test_every_key_shape_of_redaction_has_a_marker() -> None:
    # Each branch of redaction's key-shape pattern starts with a literal; the recorder must
    # stop at that literal, or a key of that shape would be written unscrubbed.
    branches = _KEY_SHAPES.pattern.removeprefix(r"\b(").removesuffix(")").split("|")
    literals = [re.match(r"[A-Za-z0-9-]+", branch).group(0) for branch in branches]
    assert len(literals) == 5
    for literal in literals:
        assert any(marker in literal.encode().translate(_FOLD) for marker in _MARKERS), literal


def test_an_ordinary_ping_takes_the_fast_path() -> None:
    assert marker_free(b'{"id":12,"command":"ping","args":{}}'.translate(_FOLD))
    assert not marker_free(b'{"url":"https://u:p@h"}'.translate(_FOLD))
