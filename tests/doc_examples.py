"""The fenced examples of a docs page, each with the marker that says how it is tested.

Every fence of a checked page is preceded (on the line just above it) by one of:

    <!-- doc-test: KIND NAME -->     a test runs it; KIND NAME says which runner (tests/integration/test_docs*.py)
    <!-- not-a-test: REASON -->      it cannot run as written, and REASON says why

so the tests can tell a fence nobody runs from one that is deliberately left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fixtures import ROOT

DOCS = ROOT / "docs"
FENCE_OPEN = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(doc-test|not-a-test):\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Fence:
    page: str          # file name under docs/
    line: int          # 1-based line of the opening ```
    lang: str
    body: str
    marker: str | None  # "doc-test", "not-a-test" or None
    label: str          # what follows the marker's colon: "KIND NAME" or the reason


def fences(page: str) -> list[Fence]:
    """The fenced blocks of docs/PAGE in order; a linear pass over the lines."""
    lines = (DOCS / page).read_text().splitlines()
    found: list[Fence] = []
    index = 0
    while index < len(lines):
        opening = FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        closing = index + 1
        while closing < len(lines) and lines[closing].strip() != "```":
            closing += 1
        marker = MARKER.match(lines[index - 1]) if index > 0 else None
        found.append(Fence(page, index + 1, opening.group(1), "\n".join(lines[index + 1:closing]) + "\n",
                           marker.group(1) if marker else None, marker.group(2) if marker else ""))
        index = closing + 1
    return found


def doc_test(page: str, label: str) -> Fence:
    """The one fence of docs/PAGE marked `<!-- doc-test: LABEL -->`."""
    matching = [fence for fence in fences(page) if fence.marker == "doc-test" and fence.label == label]
    assert len(matching) == 1, f"docs/{page} should have exactly one fence marked doc-test: {label}"
    return matching[0]
