"""The workers `dspex top` watches: found through their discovery files, each asked for
`status`, `inflight` and `jobs` over a kept-open control connection, with CPU time from
/proc/PID/stat; one table row per worker."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:  # fields after the command name start at field 3 (state): utime is 14, stime 15
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


@dataclass
class Fleet:
    """The workers being watched: one kept-open control connection per worker."""

    clients: dict[int, Any] = field(default_factory=dict)
    infos: dict[int, Any] = field(default_factory=dict)
    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)

    def discover(self) -> None:
        from bridge.control.client import ControlClient, ControlError, discovered_workers, scan_workers

        found = {info.pid: info for info in discovered_workers()}
        stale = False
        for pid in list(self.clients):
            if pid not in found:
                self._drop(pid)
        for pid, info in found.items():
            if pid in self.clients:
                continue
            try:
                self.clients[pid] = ControlClient(info.socket, timeout=5.0)
                self.infos[pid] = info
            except ControlError:
                stale = True
        if stale:  # a discovery file whose socket refuses: remove the litter once
            scan_workers(clean=True)

    def _drop(self, pid: int) -> None:
        client = self.clients.pop(pid, None)
        info = self.infos.pop(pid, None)
        self.cpu.pop(pid, None)
        if client is not None:
            client.close()
        if info is not None:
            self.gone.append(f"worker {info.worker_id} (pid {pid}) exited")

    def call(self, pid: int, view: str, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A view's result, or None when the worker went away (it is dropped from the table)."""
        from bridge.control.client import ControlError, WorkerGone

        client = self.clients.get(pid)
        if client is None:
            return None
        try:
            return client.call(view, args)
        except WorkerGone:
            self._drop(pid)
            return None
        except ControlError as exc:
            if exc.error_type == "timeout":
                self._drop(pid)
                return None
            raise

    def rows(self, with_sessions: bool = False) -> list[dict[str, Any]]:
        self.discover()
        rows = []
        for pid in list(self.clients):
            status = self.call(pid, "status")
            inflight = self.call(pid, "inflight") if status is not None else None
            if status is None or inflight is None:
                continue
            row = build_row(status, inflight.get("inflight") or [], self._cpu_pct(pid, status))
            if with_sessions:
                sessions = self.call(pid, "sessions")
                row["sessions"] = [s.get("session_id") for s in (sessions or {}).get("sessions") or []]
            rows.append(row)
        return rows

    def _cpu_pct(self, pid: int, status: dict[str, Any]) -> float | None:
        used = _proc_cpu_seconds(pid)
        if used is None:
            used = status.get("cpu_seconds")
        if not isinstance(used, (int, float)):
            return None
        now = time.monotonic()
        before = self.cpu.get(pid)
        self.cpu[pid] = (now, float(used))
        if before is None or now - before[0] < 0.05:
            return None
        return round(max(0.0, (used - before[1]) / (now - before[0]) * 100), 1)

    def page(self, pid: int) -> dict[str, Any] | None:
        """Everything the worker page shows."""
        status = self.call(pid, "status")
        if status is None:
            return None
        inflight = (self.call(pid, "inflight") or {}).get("inflight") or []
        page = {"row": build_row(status, inflight, self._cpu_pct(pid, status)), "inflight": inflight,
                "sessions": (self.call(pid, "sessions") or {}).get("sessions") or [],
                "programs": (self.call(pid, "programs") or {}).get("programs") or [],
                "jobs": (self.call(pid, "jobs") or {}).get("jobs") or [],
                "lm": (self.call(pid, "lm", {"limit": 5, "preview": 40}) or {}).get("calls") or []}
        return page if pid in self.clients else None

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


# A request older than this in an LM call or a tool marks its worker's row.
STUCK_MS = 10_000


def build_row(status: dict[str, Any], inflight: list[dict[str, Any]], cpu_pct: float | None) -> dict[str, Any]:
    """One worker's line of the table (and of --json)."""
    rates = (status.get("rates") or {}).get("10s") or {}
    latency = status.get("lm_latency_ms") or {}
    jobs = status.get("jobs") or {}
    oldest = max((r.get("age_ms") or 0 for r in inflight), default=None)
    return {
        "worker_id": status.get("worker_id"), "pid": status.get("pid"), "mode": status.get("mode"),
        "uptime": status.get("uptime"), "rss": (status.get("memory") or {}).get("rss"), "cpu_pct": cpu_pct,
        "inflight": len(inflight), "queued": status.get("queued", 0), "oldest_ms": oldest,
        "requests_per_s": rates.get("requests_per_s"), "errors_per_s": rates.get("errors_per_s"),
        "lm_calls_per_s": rates.get("lm_calls_per_s"), "tokens_per_min": rates.get("tokens_per_min"),
        "window_s": rates.get("window_s"), "lm_p50_ms": latency.get("p50"), "lm_p99_ms": latency.get("p99"),
        "cost_usd": status.get("cost_usd"), "jobs_running": jobs.get("running", 0), "jobs_total": jobs.get("total", 0),
        "control": status.get("control"), "stuck": bool(oldest and oldest >= STUCK_MS),
    }


def matches(row: dict[str, Any], text: str) -> bool:
    """The `/` filter: a worker id, pid or session id containing the text."""
    needle = text.lower()
    return any(needle in str(value).lower()
               for value in (row.get("worker_id"), row.get("pid"), *(row.get("sessions") or [])))
