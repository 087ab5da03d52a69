"""The worker's figures in Prometheus text format: `dspex serve --metrics HOST:PORT` serves
them at /metrics from a small stdlib HTTP thread, and the control socket's `metrics` view
returns the same text (`dspex inspect WORKER --prometheus`).

Rendering copies the counters under the stats lock once per scrape; the request path
only ever increments integers (see bridge.stats), so a scraper costs serving nothing.
Every series carries the worker's `worker_id` label, so one dashboard can hold a pool.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ..stats import LATENCY_BUCKETS, Histogram
from .present import snapshot

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("dspex.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"


class MetricsAddressError(ValueError):
    """A --metrics value that cannot be served (shown by `dspex serve`, exit 2)."""


def parse_address(text: str) -> tuple[str, int, bool]:
    """`PORT`, `:PORT`, `HOST:PORT` or `[V6]:PORT` -> (host, port, loopback).

    The host defaults to 127.0.0.1. A host that is not a loopback address is accepted
    only when spelled out (the caller warns): figures name models, commands and error
    types, which are not for every network.
    """
    value = text.strip()
    host, _, port_text = value.rpartition(":")
    if not _:
        host, port_text = "", value
    host = host.strip("[]") or DEFAULT_HOST
    if host in ("*", "any"):
        raise MetricsAddressError("--metrics needs a real address: write 0.0.0.0 (or ::) to serve every "
                                  "interface, knowing anyone who can reach it reads the figures")
    try:
        port = int(port_text)
    except ValueError:
        raise MetricsAddressError(f"--metrics wants HOST:PORT or PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise MetricsAddressError(f"--metrics port must be 0-65535, got {port}")
    if host == "localhost":
        return host, port, True
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name: whatever it resolves to, it was asked for explicitly
    return host, port, loopback


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: Any) -> None:
        self.lines.append(f"{name}{_labels(worker_id=self.worker_id, **labels)} {_number(value)}")

    def histogram(self, name: str, histogram: Histogram, **labels: Any) -> None:
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), histogram.cumulative()):
            self.sample(f"{name}_bucket", count, **labels, le="+Inf" if math.isinf(bound) else repr(bound))
        self.sample(f"{name}_sum", histogram.total, **labels)
        self.sample(f"{name}_count", histogram.count, **labels)


def render_metrics(engine: Engine) -> str:
    """All of the worker's figures as one Prometheus text exposition."""
    from ..system import memory_usage

    stats = engine.stats
    copied = stats.metrics_snapshot()
    received = snapshot(lambda: stats.by_command)
    out = _Writer(engine.worker_id)
    out.family("dspex_up", "gauge", "1 while the worker serves")
    out.sample("dspex_up", 1, mode=engine.config.mode)
    out.family("dspex_uptime_seconds", "gauge", "seconds since the worker started")
    out.sample("dspex_uptime_seconds", round(engine.uptime(), 3))
    out.family("dspex_resident_memory_bytes", "gauge", "resident set size of the worker process")
    out.sample("dspex_resident_memory_bytes", int(memory_usage().get("rss") or 0))
    out.family("dspex_inflight_requests", "gauge", "requests running now")
    out.sample("dspex_inflight_requests", len(engine.inflight))
    out.family("dspex_queued_requests", "gauge", "requests accepted and not finished (running included)")
    out.sample("dspex_queued_requests", len(engine._accepted))
    out.family("dspex_requests_received_total", "counter", "requests received, by command (all commands)")
    for command, count in sorted(received.items()):
        out.sample("dspex_requests_received_total", count, command=command)
    out.family("dspex_requests_total", "counter",
               "scheduled requests finished, by command and outcome (ok or the error_type)")
    for (command, outcome), count in sorted(copied["finished"].items()):
        out.sample("dspex_requests_total", count, command=command, outcome=outcome)
    out.family("dspex_request_duration_seconds", "histogram", "time to answer a scheduled request, by command")
    for command, histogram in sorted(copied["latency"].items()):
        out.histogram("dspex_request_duration_seconds", histogram, command=command)
    out.family("dspex_errors_total", "counter", "error replies and dropped frames, by error_type")
    for error_type, count in sorted(copied["errors_by_type"].items()):
        out.sample("dspex_errors_total", count, error_type=error_type)
    out.family("dspex_protocol_errors_total", "counter", "frames that could not be answered")
    out.sample("dspex_protocol_errors_total", copied["protocol_errors"])
    models = sorted(copied["by_model"].items())
    out.family("dspex_lm_calls_total", "counter", "LM calls, by model and status")
    for model, totals in models:
        out.sample("dspex_lm_calls_total", totals["calls"] - totals["failures"], model=model, status="ok")
        if totals["failures"]:
            out.sample("dspex_lm_calls_total", totals["failures"], model=model, status="error")
    out.family("dspex_lm_tokens_total", "counter", "LM tokens, by model and kind (prompt, completion)")
    for model, totals in models:
        for kind in ("prompt", "completion"):
            out.sample("dspex_lm_tokens_total", totals["tokens"].get(f"{kind}_tokens", 0), model=model, kind=kind)
    out.family("dspex_lm_cost_usd_total", "counter", "LM cost in USD where the price is known, by model")
    for model, totals in models:
        out.sample("dspex_lm_cost_usd_total", round(totals["cost"], 9), model=model)
    out.family("dspex_lm_call_duration_seconds", "histogram", "LM call latency, by model")
    for model, totals in models:
        out.histogram("dspex_lm_call_duration_seconds", totals["latency"], model=model)
    jobs = engine.jobs.all()
    out.family("dspex_jobs", "gauge", "jobs the worker remembers, by status")
    by_status: dict[str, int] = {}
    for job in jobs:
        status = str(job.view(with_result=False).get("status"))
        by_status[status] = by_status.get(status, 0) + 1
    for status, count in sorted(by_status.items()):
        out.sample("dspex_jobs", count, status=status)
    out.family("dspex_sessions", "gauge", "sessions held")
    out.sample("dspex_sessions", len(engine.sessions.all()))
    return "\n".join(out.lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "dspex-metrics"
    render: Callable[[], str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] not in ("/metrics", "/metrics/"):
            self._answer(404, "text/plain; charset=utf-8", b"not found: the figures are at /metrics\n")
            return
        try:
            body = type(self).render().encode("utf-8")
        except Exception:  # a scrape must never take the thread down
            log.exception("rendering /metrics failed")
            self._answer(500, "text/plain; charset=utf-8", b"internal error rendering metrics\n")
            return
        self._answer(200, CONTENT_TYPE, body)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def start_metrics_server(engine: Engine, address: str) -> tuple[Callable[[], None], tuple[str, int]]:
    """Serves /metrics on `address` (see parse_address) on daemon threads; returns the exit
    hook that stops it and the address actually bound (port 0 picks a free one)."""
    host, port, loopback = parse_address(address)
    if not loopback:
        log.warning("metrics served on non-loopback address %s:%d: anyone who can reach it reads this "
                    "worker's figures (models, commands, error types)", host, port)
    handler = type("MetricsHandler", (_Handler,), {"render": staticmethod(lambda: render_metrics(engine))})
    server_class = type("MetricsServer", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host \
        else _Server
    server = server_class((host, port), handler)
    bound = server.server_address[:2]
    threading.Thread(target=server.serve_forever, name="dspex-metrics", daemon=True,
                     kwargs={"poll_interval": 0.5}).start()
    log.info("metrics at http://%s:%d/metrics", bound[0], bound[1])

    def stop() -> None:
        server.shutdown()
        server.server_close()
    return stop, (str(bound[0]), int(bound[1]))


__all__ = ["CONTENT_TYPE", "MetricsAddressError", "parse_address", "render_metrics", "start_metrics_server"]
