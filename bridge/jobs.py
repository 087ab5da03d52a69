"""Jobs: long work (evaluate, compile, batch) that outlives the request which started it.

A job runs on its own thread with its own cancel flag, so `ping`, other sessions and
the other requests of its own session are never held behind it. The request that
starts a job either replies at once with the job's id (`wait: false`) or waits for it
and replies with its result (`wait: true`). `get_job`, `list_jobs` and `cancel_job` watch
and stop jobs; a finished job's result is kept for KEEP_FINISHED_S.

This module knows no framework: what a job does is a function an adapter hands to
`start_job`, which reports progress and usage through the `Job` it is given.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import twoway
from .context import Context
from .twoway import Deferred, RequestContext
from .errors import BridgeError, Cancelled, InvalidArguments, JobNotFound, LimitExceeded
from .plain_record import PlainRecord
from .registry import Arg, Registry, command

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("dspex.jobs")

COMMANDS = Registry()

# Both bounds keep a client from growing the worker without end: the table holds at
# most MAX_JOBS jobs (finished ones are dropped oldest first when it is full), and at
# most MAX_RUNNING_JOBS run at once (each holds a thread and LM calls).
MAX_JOBS = 1000
MAX_RUNNING_JOBS = 32
# The issue promises a finished job's result for at least ten minutes.
KEEP_FINISHED_S = 600.0

# The ids start_job makes up (replay maps recorded ones to those of the replay).
GENERATED_JOB_ID = r"^job-[0-9]+-[0-9a-f]{8}$"  # a pattern; compiled by replay, not at start-up

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"


class JobCancelled(Cancelled):
    """Raised inside a job's work once the job is cancelled."""


class Job(PlainRecord):
    """One job: what `get_job` reports, updated by the job's work as it goes (a plain
    record, see bridge.plain_record)."""

    _fields = ("job_id", "kind", "session_id", "request_id", "total", "created_at", "started", "status", "done",
               "score", "best_score", "lm_calls", "tokens", "cost", "result", "error", "finished", "cancel",
               "_ended", "thread_alive", "_lock", "watchers", "_on_end")
    _hidden = frozenset({"cancel", "_ended", "_lock", "watchers", "_on_end"})

    job_id: str
    kind: str
    session_id: str
    request_id: Any
    total: int | None
    created_at: float
    started: float
    status: str
    done: int
    score: float | None        # the current (latest) score the work saw
    best_score: float | None
    lm_calls: int
    tokens: dict[str, int]
    cost: float
    result: dict[str, Any] | None
    error: BridgeError | None
    finished: float | None     # monotonic
    cancel: threading.Event
    _ended: threading.Event
    # The work's thread may outlive a cancel by the LM call it is in: it still counts
    # against MAX_RUNNING_JOBS until it has returned.
    thread_alive: bool
    _lock: threading.Lock
    # Called after each progress update (streamed progress events subscribe here).
    watchers: list[Callable[[Job], None]]
    _on_end: list[Callable[[Job], None]]

    def __init__(self, job_id: str, kind: str, session_id: str, request_id: Any, total: int | None = None,
                 created_at: float | None = None, started: float | None = None, status: str = RUNNING,
                 done: int = 0, score: float | None = None, best_score: float | None = None, lm_calls: int = 0,
                 tokens: dict[str, int] | None = None, cost: float = 0.0, result: dict[str, Any] | None = None,
                 error: BridgeError | None = None, finished: float | None = None,
                 cancel: threading.Event | None = None, _ended: threading.Event | None = None,
                 thread_alive: bool = True, _lock: threading.Lock | None = None,
                 watchers: list[Callable[[Job], None]] | None = None,
                 _on_end: list[Callable[[Job], None]] | None = None) -> None:
        # None stands for "a fresh one": each job gets its own clocks, dicts, lists, lock, events.
        self.job_id = job_id
        self.kind = kind
        self.session_id = session_id
        self.request_id = request_id
        self.total = total
        self.created_at = time.time() if created_at is None else created_at
        self.started = time.monotonic() if started is None else started
        self.status = status
        self.done = done
        self.score = score
        self.best_score = best_score
        self.lm_calls = lm_calls
        self.tokens = {} if tokens is None else tokens
        self.cost = cost
        self.result = result
        self.error = error
        self.finished = finished
        self.cancel = threading.Event() if cancel is None else cancel
        self._ended = threading.Event() if _ended is None else _ended
        self.thread_alive = thread_alive
        self._lock = threading.Lock() if _lock is None else _lock
        self.watchers = [] if watchers is None else watchers
        self._on_end = [] if _on_end is None else _on_end

    # -- what the work calls -----------------------------------------------------------

    def check_cancelled(self) -> None:
        """Raises JobCancelled once the job is cancelled: work calls it between steps."""
        if self.cancel.is_set():
            raise JobCancelled(f"Job {self.job_id} was cancelled")

    def progress(self, done: int | None = None, total: int | None = None, *, step: int = 0,
                 score: float | None = None, best_score: float | None = None) -> None:
        """Records progress: an absolute `done`, or `step` more done; scores where known."""
        with self._lock:
            if done is not None:
                self.done = done
            self.done += step
            if total is not None:
                self.total = total
            if score is not None:
                self.score = score
                if self.best_score is None or score > self.best_score:
                    self.best_score = score
            if best_score is not None:
                self.best_score = best_score
        for watcher in list(self.watchers):
            try:
                watcher(self)
            except Exception:  # a watcher (an event stream) must never stop the work
                log.exception("job watcher failed")

    def add_lm_call(self, usage: dict[str, Any], cost: float | None = None) -> None:
        """Counts one LM call of the job with its tokens and cost."""
        with self._lock:
            self.lm_calls += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.tokens[key] = self.tokens.get(key, 0) + value
            if isinstance(cost, (int, float)) and not isinstance(cost, bool):
                self.cost += float(cost)

    def finish(self, status: str, result: dict[str, Any] | None = None, error: BridgeError | None = None) -> bool:
        """Ends the job once: the first of "the work returned" and "cancelled" wins."""
        with self._lock:
            if self.status != RUNNING:
                return False
            self.status, self.result, self.error = status, result, error
            self.finished = time.monotonic()
            ended = list(self._on_end)
        self._ended.set()
        for callback in ended:
            self._call(callback)
        return True

    def when_ended(self, callback: Callable[[Job], None]) -> None:
        """Calls `callback(job)` once the job has ended (at once if it already has)."""
        with self._lock:
            if self.status == RUNNING:
                self._on_end.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[Job], None]) -> None:
        try:
            callback(self)
        except Exception:  # a listener of the job (its waiting request) must not break it
            log.exception("job %s: end listener failed", self.job_id)

    def request_cancel(self) -> bool:
        """Cancels at once: the status is `cancelled` from now on, no further LM call of
        the job starts (its LM refuses), and whatever the work returns later is dropped."""
        self.cancel.set()
        ended = self.finish(CANCELLED, error=JobCancelled(f"Job {self.job_id} was cancelled"))
        if ended:
            self.progress()  # watchers learn the final state
        return ended

    # -- what the table and the commands read ------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    def view(self, with_result: bool = True) -> dict[str, Any]:
        """What `get_job` and `list_jobs` answer (list_jobs leaves out the result)."""
        with self._lock:
            view: dict[str, Any] = {
                "job_id": self.job_id, "kind": self.kind, "status": self.status,
                "session_id": self.session_id, "request_id": self.request_id,
                "progress": {"done": self.done, "total": self.total},
                "score": self.score, "best_score": self.best_score,
                "lm_calls": self.lm_calls, "tokens": dict(self.tokens), "cost": round(self.cost, 8),
                "created_at": self.created_at, "elapsed": round(self.elapsed(), 3),
            }
        if self.error is not None:
            view["error"] = self.error.message
            view["error_type"] = self.error.error_type
        if with_result and self.result is not None:
            view["result"] = self.result
        return view


Work = Callable[[Job, Context], dict[str, Any]]


class JobTable:
    """The jobs of one engine: started, watched, cancelled, forgotten after a while."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def start(self, kind: str, ctx: Context, work: Work, total: int | None = None,
              watcher: Callable[[Job], None] | None = None) -> Job:
        """Starts `work(job, job_ctx)` on its own thread. `job_ctx` is a Context of the
        starting request whose cancel flag is the job's own. `watcher` sees every
        progress, the first included (it is in place before the thread starts)."""
        with self._lock:
            self._forget_expired()
            running = sum(1 for job in self._jobs.values() if job.thread_alive)
            if running >= MAX_RUNNING_JOBS:
                raise LimitExceeded(f"{MAX_RUNNING_JOBS} jobs are already running on this worker; "
                                    "wait for one or cancel one (cancel_job)")
            if len(self._jobs) >= MAX_JOBS:
                self._drop_oldest_finished()
            # A counter keeps ids short and ordered; the random tail keeps them unguessable
            # across workers of a pool, whose counters all start at 1.
            # os.urandom, not secrets: the secrets module (hmac, hashlib) costs a spawn 4 ms.
            job_id = f"job-{next(self._numbers)}-{os.urandom(4).hex()}"
            job = Job(job_id=job_id, kind=kind, session_id=ctx.session_id, request_id=ctx.request_id, total=total)
            self._jobs[job_id] = job
        if watcher is not None:
            job.watchers.append(watcher)
        job_ctx = ctx.for_job(job.cancel) if isinstance(ctx, RequestContext) else \
            Context(self.engine, ctx.request_id, ctx.command, ctx.session_id, job.cancel)
        thread = threading.Thread(target=self._run, args=(job, job_ctx, work), name=f"dspex-{job_id}", daemon=True)
        thread.start()
        self.engine.publish("job_started", {"job_id": job_id, "kind": kind, "session_id": ctx.session_id})
        return job

    def _run(self, job: Job, ctx: Context, work: Work) -> None:
        ended = False
        try:
            result = work(job, ctx)
            if job.cancel.is_set():
                raise JobCancelled(f"Job {job.job_id} was cancelled")
            ended = job.finish(SUCCEEDED, result=result)
        except Cancelled as exc:
            ended = job.finish(CANCELLED, error=exc)
        except BridgeError as exc:
            ended = job.finish(FAILED, error=exc)
        except BaseException as exc:  # a job must never take the worker down
            log.exception("job %s (%s) failed", job.job_id, job.kind)
            ended = job.finish(FAILED, error=BridgeError(f"{type(exc).__name__}: {exc}"))
        finally:
            job.thread_alive = False
            if ended:
                job.progress()  # the watchers learn the final state
            self.engine.publish("job_ended", {"job_id": job.job_id, "status": job.status})

    def get(self, job_id: Any) -> Job:
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise JobNotFound(f"Job not found: {str(job_id)[:100]} (finished jobs are kept "
                              f"{KEEP_FINISHED_S / 60:g} min)")
        return job

    def all(self, session_id: str | None = None) -> list[Job]:
        with self._lock:
            self._forget_expired()
            jobs = list(self._jobs.values())
        return [job for job in jobs if session_id is None or job.session_id == session_id]

    def cancel_session(self, session_id: str) -> int:
        """Cancels the running jobs of one session (cleanup_session): no job outlives its owner."""
        return self._cancel([job for job in self.all(session_id) if not job.ended])

    def cancel_started_by(self, request_id: Any) -> int:
        """Cancels the running jobs a request started (that request was cancelled or expired)."""
        return self._cancel([job for job in self.all() if not job.ended and job.request_id == request_id])

    def cancel_all(self) -> int:
        return self._cancel([job for job in self.all() if not job.ended])

    def _cancel(self, jobs: list[Job]) -> int:
        return sum(1 for job in jobs if job.request_cancel())

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for job_id in [j for j, job in self._jobs.items()
                       if job.finished is not None and now - job.finished > KEEP_FINISHED_S]:
            del self._jobs[job_id]

    def _drop_oldest_finished(self) -> None:
        finished = sorted((job for job in self._jobs.values() if job.finished is not None),
                          key=lambda job: job.finished or 0.0)
        if not finished:
            raise LimitExceeded(f"This worker already holds {MAX_JOBS} jobs")
        del self._jobs[finished[0].job_id]


def run_as_job(kind: str, args: dict[str, Any], ctx: Context, work: Work, *, wait_default: bool,
               total: int | None = None) -> dict[str, Any] | Deferred:
    """What a job-starting command replies: `{job_id, status: "running"}` at once, or,
    with `wait: true`, the job's own result (plus `job_id`) once it ends: a Deferred
    reply, so the request holds no scheduling slot while it waits. With `stream: true`
    too, the request gets `progress` events until then."""
    wait = args.get("wait", wait_default)
    if not isinstance(wait, bool):
        raise InvalidArguments("'wait' must be true or false")
    if not wait and twoway.asks_for_callbacks(args):
        raise InvalidArguments("a tool or metric that lives in the client needs 'wait': true "
                               "(its callbacks are events of the waiting request)")
    # Streamed progress watches from the start: a fast job's first steps are not lost.
    streams = wait and ctx.wants_events
    job = ctx.engine.jobs.start(kind, ctx, work, total,
                                watcher=(lambda job: ctx.emit("progress", _progress_event(job))) if streams else None)
    if not wait:
        return {"job_id": job.job_id, "status": RUNNING, "kind": kind}
    deferred = Deferred()

    def ended(job: Job) -> None:
        if ctx.wants_events:  # the final state, before the reply that ends the stream
            ctx.emit("progress", _progress_event(job))
        if job.status == SUCCEEDED:
            deferred.future.set_result({**(job.result or {}), "job_id": job.job_id})
        else:
            deferred.future.set_exception(job.error or BridgeError(f"Job {job.job_id} {job.status}"))

    job.when_ended(ended)
    return deferred


def _progress_event(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, "done": job.done, "total": job.total, "score": job.score,
            "best_score": job.best_score, "status": job.status}


_JOB_ID = Arg("job_id", "string", required=True)


@command("get_job", read_only=True, registry=COMMANDS, scheduling="read", args=(_JOB_ID,))
def get_job(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A job's status, progress, scores, LM calls, tokens, cost, and its result once done."""
    return ctx.engine.jobs.get(args["job_id"]).view()


@command("list_jobs", read_only=True, registry=COMMANDS, scheduling="read",
         args=(Arg("session_id", "string"), Arg("all_sessions", "boolean", help="every session's jobs")))
def list_jobs(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The jobs of the request's session (or of every session), newest last, without results."""
    jobs = ctx.engine.jobs.all(None if args.get("all_sessions") else ctx.session_id)
    return {"jobs": [job.view(with_result=False) for job in jobs], "total_count": len(jobs),
            "session_id": ctx.session_id}


@command("cancel_job", registry=COMMANDS, scheduling="read", args=(_JOB_ID,))
def cancel_job(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Stops a job: no further LM call of it starts; its status becomes cancelled."""
    job = ctx.engine.jobs.get(args["job_id"])
    cancelled = job.request_cancel()
    return {"job_id": job.job_id, "status": job.status, "cancelled": cancelled}
