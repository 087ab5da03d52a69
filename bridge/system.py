"""Cheap facts about this process (memory, versions) without heavy imports like psutil."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from collections.abc import Iterator

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.lru_cache(maxsize=1)
def total_memory() -> int:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_usage() -> dict[str, float]:
    """rss and vms in bytes, percent of physical memory, as get_stats reports them."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            vms_pages, rss_pages = (int(x) for x in handle.read().split()[:2])
        rss, vms = rss_pages * _PAGE, vms_pages * _PAGE
    except OSError:  # not Linux: peak RSS is the best cheap figure
        import resource  # here: only a system without /proc needs it

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        vms = 0
    total = total_memory()
    return {"rss": rss, "vms": vms, "percent": round(100.0 * rss / total, 3) if total else 0.0}


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """Versions of this package, DSPy and Python, without importing DSPy."""
    from importlib import metadata

    def version_of(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    from . import __version__

    return {"dspex": __version__, "dspy": version_of("dspy"), "python": platform.python_version()}


# The signals `dspex serve` ends on (its handlers run on the main thread, which reads frames).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


@contextlib.contextmanager
def stop_signals_left_to_the_main_thread() -> Iterator[None]:
    """Blocks the stop signals in this thread while the block runs.

    Linux hands a process's signal to any thread that does not block it, often a busy one.
    Python then only notes it, and its handler waits for the main thread to run bytecode:
    while that thread sits in `read` on a quiet port, a second SIGTERM ("now") would wait
    for the next frame. A background import (seconds of CPU) is the likeliest taker, so it
    refuses them. Only around work that starts no thread or process: those would inherit
    the blocked mask.
    """
    import _signal  # not `signal`: its enums cost milliseconds of a worker's start-up

    numbers = {getattr(_signal, name) for name in STOP_SIGNALS if hasattr(_signal, name)}
    try:
        previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, numbers)
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask here: nothing to keep
        yield
        return
    try:
        yield
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, previous)
