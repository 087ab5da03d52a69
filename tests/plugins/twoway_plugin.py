"""Commands that exercise two-way frames without DSPy: slow work that notices cancel,
events, callbacks into the client and a job with progress."""

from __future__ import annotations

import time
from typing import Any

from bridge import Arg, Context, command
from bridge.jobs import Job, run_as_job
from bridge.registry import STREAMS


@command("tw_sleep", scheduling="read", args=(Arg("seconds", "number", required=True),))
def tw_sleep(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sleeps in short steps, stopping early once the request is cancelled."""
    deadline = time.monotonic() + float(args["seconds"])
    steps = 0
    while time.monotonic() < deadline and not ctx.cancel.is_set():
        time.sleep(0.01)
        steps += 1
    ctx.engine.publish("tw_sleep_ended", {"cancelled": ctx.cancel.is_set(), "steps": steps})
    return {"slept": not ctx.cancel.is_set()}


@command("tw_stream", scheduling="read", tags={STREAMS}, args=(Arg("n", "integer", required=True),))
def tw_stream(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sends n chunk events (when streamed), then the joined text as the reply."""
    parts = [f"part{i} " for i in range(args["n"])]
    for part in parts:
        ctx.emit("chunk", {"field": "text", "delta": part})
    return {"text": "".join(parts)}


@command("tw_ask", scheduling="read", args=(Arg("names", "array", required=True),))
def tw_ask(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Calls each named client tool (declared as {"handler": "client"} in `tools`) and
    returns the answers, or the error text of each failure."""
    from bridge.errors import BridgeError

    answers = {}
    for name in args["names"]:
        try:
            answers[name] = ctx.callback("tool", name, {"asked": name})
        except BridgeError as exc:
            answers[name] = {"error": exc.message, "error_type": exc.error_type}
    return {"answers": answers}


@command("tw_job", scheduling="read", tags={STREAMS}, args=(Arg("steps", "integer", required=True),
                                                          Arg("step_s", "number")))
def tw_job(args: dict[str, Any], ctx: Context) -> Any:
    """A job of `steps` steps, `step_s` seconds each, reporting progress."""
    def work(job: Job, job_ctx: Context) -> dict[str, Any]:
        for step in range(args["steps"]):
            job.check_cancelled()
            time.sleep(float(args.get("step_s") or 0.01))
            job.progress(step=1, score=float(step))
        return {"steps": args["steps"]}

    return run_as_job("tw", args, ctx, work, wait_default=True, total=args["steps"])
