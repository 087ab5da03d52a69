"""The asyncio lane: LM-bound requests (execute_program) run as tasks on one event loop.

A request on a pool thread holds that thread for its LM call's whole latency, so a pool of
64 threads serves 64 calls at once. On the lane a request is a task: thousands wait on their
sockets side by side on one thread, with DSPy's `acall` and its async LM client. The lane
has its own concurrency limit (`dspex serve --max-async`, default 1024); tasks beyond it wait
for a free slot without holding a thread. Its handler returns a `Deferred` whose future the
task resolves, so the request's pool thread is free at once.

A cancelled or expired request is answered by the engine at once; the lane's sweeper then
cancels its task, which closes the LM call's socket (the server sees it abandoned).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

# asyncio is imported inside the methods, on the lane's first use: importing it costs
# ~20 ms, which every spawned worker would otherwise pay before its first ping reply.

from ...errors import Cancelled

log = logging.getLogger("dspex.dspy.lane")

T = TypeVar("T")

from ...serve.config import DEFAULT_MAX_ASYNC  # noqa: E402  (one default, read by `--max-async`)
# How often the sweeper looks for cancelled requests: a cancel is answered by the engine at
# once; this only bounds how long the abandoned LM call keeps its socket.
SWEEP_INTERVAL_S = 0.05
# Program types without an async path (best_of_n, refine, multi_chain) run on these threads
# instead: bounded, so the lane never grows a thread per request.
SYNC_FALLBACK_THREADS = 16


class AsyncLane:
    """One event loop thread running request coroutines, at most `limit` at once."""

    def __init__(self, limit: int = DEFAULT_MAX_ASYNC) -> None:
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._start_lock = threading.Lock()
        self._watched: dict[asyncio.Task[Any], threading.Event] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        self.running = 0
        self.waiting = 0

    def set_limit(self, limit: int) -> None:
        """The concurrency limit; only before the lane's first request."""
        if limit < 1:
            raise ValueError("the async lane's limit must be at least 1")
        with self._start_lock:
            if self._loop is None:
                self.limit = limit

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        import asyncio

        loop = self._loop
        if loop is not None:
            return loop
        with self._start_lock:
            if self._loop is None:
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(new_loop)
                    self._slots = asyncio.Semaphore(self.limit)
                    ready.set()
                    new_loop.run_forever()

                threading.Thread(target=run, name="dspex-async-lane", daemon=True).start()
                ready.wait()
                self._loop = new_loop
            return self._loop

    def submit(self, make: Callable[[], Awaitable[T]], cancel: threading.Event,
               on_start: Callable[[asyncio.Task[Any]], None] | None = None) -> Future[T]:
        """Runs `make()` on the lane once a slot is free; the returned future ends with its
        result. A request cancelled before its turn never starts. `on_start` learns the
        task that runs it (inspect's `stack` walks its await chain)."""
        import asyncio

        loop = self._ensure_started()
        return asyncio.run_coroutine_threadsafe(self._guarded(make, cancel, on_start), loop)

    async def _guarded(self, make: Callable[[], Awaitable[T]], cancel: threading.Event,
                       on_start: Callable[[asyncio.Task[Any]], None] | None = None) -> T:
        import asyncio

        assert self._slots is not None
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        task = asyncio.current_task()
        assert task is not None
        self.running += 1
        try:
            if cancel.is_set():
                raise Cancelled("Request cancelled before it started")
            if on_start is not None:
                on_start(task)
            self._watch(task, cancel)
            try:
                return await make()
            except asyncio.CancelledError:
                if cancel.is_set():  # our sweeper's doing: the engine has answered already
                    raise Cancelled("Request cancelled; its LM call was abandoned") from None
                raise
        finally:
            self._watched.pop(task, None)
            self.running -= 1
            self._slots.release()

    def _watch(self, task: asyncio.Task[Any], cancel: threading.Event) -> None:
        import asyncio

        self._watched[task] = cancel
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Cancels the tasks of cancelled requests; one pass over flags, not a wait per task."""
        import asyncio

        while self._watched:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            for task, cancel in list(self._watched.items()):
                if cancel.is_set() and not task.done():
                    task.cancel()

    async def run_sync(self, run: Callable[[], T]) -> T:
        """Runs a blocking callable on the lane's bounded fallback threads, in this task's context."""
        import asyncio

        import contextvars

        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(SYNC_FALLBACK_THREADS, thread_name_prefix="dspex-lane-sync")
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._sync_pool, context.run, run)

    def describe(self) -> dict[str, Any]:
        """What inspect and get_stats may show about the lane."""
        return {"limit": self.limit, "running": self.running, "waiting": self.waiting,
                "started": self._loop is not None}


LANE = AsyncLane()
