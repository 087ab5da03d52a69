"""Small formatters the inspect, top and transcript views share: durations, ages, sizes,
clocks, one-line previews, token counts, sparklines and the tables' common look."""

from __future__ import annotations

import time
from typing import Any

import orjson
from rich import box
from rich.table import Table

# Eight heights for the latency sparkline, lowest first.
_SPARK = "▁▂▃▄▅▆▇█"


def duration(seconds: float | None) -> str:
    """3.2s, 4m05s, 2h10m, 3d04h: short enough for a table cell."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def ago(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return "never"
    return duration((now or time.time()) - timestamp) + " ago"


def millis(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    return f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def size(num: float | None) -> str:
    if num is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num < 1024 or unit == "GiB":
            return f"{num:.0f}{unit}" if unit == "B" else f"{num:.1f}{unit}"
        num /= 1024
    return f"{num:.1f}GiB"


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) + f".{int(timestamp * 1000) % 1000:03d}"


def one_line(value: Any, width: int = 80) -> str:
    """Compact JSON on one line, cut to width."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def tokens(usage: dict[str, Any] | None) -> str:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt is None and completion is None:
        total = usage.get("total_tokens")
        return "-" if total is None else str(total)
    return f"{prompt or 0}+{completion or 0}"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARK[min(7, int((v - low) / span * 7.999))] for v in values)


def _table(title: str | None, *columns: str, empty: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold",
                  show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    if empty is not None:
        table.caption = empty
    return table


def _lm_model(lm: dict[str, Any] | None) -> str:
    return str(lm.get("model")) if isinstance(lm, dict) and lm.get("model") else "-"
