"""The one place in `bridge/` that imports DSPy.

`import dspy` costs about half a second and ~60 MB, while the pool's first `ping` must
be answered within a few seconds of spawn. Everything else in the bridge therefore asks
this module for DSPy inside a function, and the worker can warm it up in the background
while it already answers pings.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ...system import stop_signals_left_to_the_main_thread

__all__ = ["DSPyUnavailableError", "dspy_available", "is_loaded", "load_dspy", "warm_in_background"]

logger = logging.getLogger("dspex.dspy_loader")

# Optional packages that DSPy's import pulls in only if they are installed, hidden while
# DSPy is imported:
# - IPython, for notebook display: a worker never displays a notebook, and IPython alone
#   adds ~0.4 s and ~20 MB to every worker (DSPy falls back to its own plain versions).
# - the character-set guessers `requests` looks for when it is first imported (DSPy
#   imports requests): charset_normalizer imports every codec of the standard library,
#   121 modules and 4.3 MiB of the worker's memory. Without one, requests decodes a body
#   that names no charset as UTF-8 (Response.apparent_encoding), which is what every
#   LM API sends anyway.
_OPTIONAL_EXTRAS = ("IPython", "charset_normalizer", "chardet")

_lock = threading.Lock()
_dspy: ModuleType | None = None
_available: bool | None = None


class DSPyUnavailableError(ImportError):
    """DSPy is not installed (or fails to import) in this interpreter."""

    error_type = "dspy_unavailable"


def dspy_available() -> bool:
    """Whether `import dspy` can be attempted, answered without importing it.

    `ping` reports this on every call, so the answer is cached: the interpreter's
    installed packages do not change while the worker runs.
    """
    global _available
    if _available is None:
        try:
            _available = importlib.util.find_spec("dspy") is not None
        except (ImportError, ValueError):
            # find_spec raises instead of returning None for a half-installed package.
            _available = False
    return _available


def load_dspy() -> ModuleType:
    """Imports DSPy once (thread-safe) and returns the module.

    Never calls `dspy.configure`: that may only be called again by the thread that
    called it first, so per-request settings must go through `dspy.context`.
    """
    module = _dspy
    if module is not None:
        return module
    global _waiting_for_dspy
    if getattr(_warm_thread, "active", False):
        return _import_locked()
    with _waiting_lock:
        _waiting_for_dspy += 1  # a request needs DSPy now: the warm-up stops stepping aside
    try:
        return _import_locked()
    finally:
        with _waiting_lock:
            _waiting_for_dspy -= 1


def _import_locked() -> ModuleType:
    module = _import_once()
    if _loaded_callbacks:
        _announce_loaded()  # outside the import lock: callbacks take locks of their own
    return module


def _import_once() -> ModuleType:
    global _dspy
    with _lock:
        if _dspy is not None:
            return _dspy
        # Without this, the first LM call spends up to 5 s trying to download
        # LiteLLM's model price list from the internet.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        started = time.perf_counter()
        blocked = [name for name in _OPTIONAL_EXTRAS if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  (makes `import` raise ImportError)
        if "charset_normalizer" in blocked:
            # requests warns once, on its import, that it found no guesser: we chose that.
            warnings.filterwarnings("ignore", message="Unable to find acceptable character detection",
                                    module="requests")
        try:
            module = importlib.import_module("dspy")
        except ImportError as exc:
            raise DSPyUnavailableError(f"DSPy is not available: {exc}") from exc
        finally:
            for name in blocked:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]  # later code that wants them may import them
        _bound_global_history(module)
        from .model_metadata import install as remember_model_metadata

        remember_model_metadata()  # DSPy's per-call price-map walk, once per model (model_metadata says why)
        logger.debug("imported dspy %s in %.0f ms", getattr(module, "__version__", "?"),
                     (time.perf_counter() - started) * 1000)
        _dspy = module
        return module


# LM call history entries a worker keeps (each holds a whole prompt and response). DSPy keeps
# 10,000 per LM, per predictor and in its global list: in a worker that serves for weeks that
# is hundreds of megabytes, and every full garbage collection walks it while requests wait.
# The LM-call observer only reads the entry of the call that just ended (lm_calls.history_entry).
HISTORY_KEPT = 256


def _bound_global_history(dspy: ModuleType) -> None:
    """DSPy's global history list is capped by a module constant read at each call; the
    per-LM and per-predictor lists by `max_history_size`, which lm_calls.observed_context sets."""
    base_lm = getattr(getattr(dspy, "clients", None), "base_lm", None)
    if isinstance(getattr(base_lm, "MAX_HISTORY_SIZE", None), int):
        base_lm.MAX_HISTORY_SIZE = min(base_lm.MAX_HISTORY_SIZE, HISTORY_KEPT)
        del base_lm.GLOBAL_HISTORY[:-HISTORY_KEPT]


# Called once DSPy is imported (a ping reports it). Bound methods are held weakly: an engine
# built and dropped before the import (tests build hundreds) is not kept alive by this.
_loaded_callbacks: list[weakref.WeakMethod[Callable[[], None]]] = []
_callbacks_lock = threading.Lock()


def when_loaded(callback: Callable[[], None]) -> None:
    """Calls the bound method `callback` once DSPy has been imported: from the importing
    thread, or at once if it already is. Failures are logged, never raised into the import."""
    with _callbacks_lock:
        if _dspy is None:
            _loaded_callbacks[:] = [ref for ref in _loaded_callbacks if ref() is not None]
            _loaded_callbacks.append(weakref.WeakMethod(callback))  # type: ignore[arg-type]
            return
    _call_quietly(callback)


def _announce_loaded() -> None:
    with _callbacks_lock:
        callbacks = [ref() for ref in _loaded_callbacks]
        _loaded_callbacks.clear()
    for callback in callbacks:
        if callback is not None:
            _call_quietly(callback)


def _call_quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.warning("a callback on DSPy's import failed", exc_info=True)


def is_loaded() -> bool:
    """Whether DSPy has already been imported through `load_dspy`."""
    return _dspy is not None


def warm_in_background(last_activity: Callable[[], float] | None = None) -> threading.Thread:
    """Starts importing DSPy on a daemon thread so the first real request finds it loaded.

    `last_activity` returns the `time.monotonic()` of the worker's latest frame; while
    frames keep coming, the import steps aside (see _Yielding). Failures are only logged:
    the request that needs DSPy will raise the error itself.
    """
    thread = threading.Thread(target=_warm, args=(last_activity,), name="dspex-dspy-warmup", daemon=True)
    thread.start()
    return thread


# `import dspy` runs ~700 modules for ~0.5 s of CPU, and the interpreter runs one thread at
# a time: a ping arriving while the import holds it waits for CPython's switch interval
# (5 ms), so a freshly spawned worker's ping p99 was ~100 x the floor's. Shortening the
# interval made it worse (the import then also interrupts the reader mid-ping, and every
# ping paid for several hand-overs). So the warm-up yields instead: before each module it
# imports, it waits while the worker has seen a frame within QUIET_SECONDS, for at most
# TOTAL_PAUSE_SECONDS in all (a client that never stops sending still gets a worker that
# finishes warming), and not at all once a request is waiting for DSPy (that request then
# waits only for the import itself). An earlier cap of 50 ms per pause let one module run
# every 50 ms during a burst of pings, and a large module held the reader for many of them.
QUIET_SECONDS = 0.002
TOTAL_PAUSE_SECONDS = 3.0
_POLL_SECONDS = 0.0005
_waiting_for_dspy = 0
_waiting_lock = threading.Lock()
_warm_thread = threading.local()  # `active` is set on the warm-up thread only


class _Yielding:
    """A finder that finds nothing: it only pauses the warm-up thread between modules.

    A plain class with `find_spec`, which is all `sys.meta_path` asks of a finder:
    subclassing importlib.abc.MetaPathFinder would import importlib.abc before the first reply."""

    def __init__(self, last_activity: Callable[[], float]) -> None:
        self.last_activity = last_activity
        self.thread_id = threading.get_ident()
        self.paused = 0.0  # seconds spent stepping aside so far

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if threading.get_ident() != self.thread_id or self.paused >= TOTAL_PAUSE_SECONDS:
            return None  # another thread's import is none of our business
        started = time.monotonic()
        deadline = started + TOTAL_PAUSE_SECONDS - self.paused
        now = started
        while not _waiting_for_dspy and now < deadline and now - self._latest() < QUIET_SECONDS:
            time.sleep(_POLL_SECONDS)
            now = time.monotonic()
        self.paused += now - started
        return None

    def _latest(self) -> float:
        try:
            return self.last_activity()
        except Exception:  # a failing probe must never fail the import: treat it as quiet
            return 0.0


def _warm(last_activity: Callable[[], float] | None) -> None:
    _warm_thread.active = True
    yielding = _Yielding(last_activity) if last_activity is not None else None
    if yielding is not None:
        sys.meta_path.insert(0, yielding)
    try:
        with stop_signals_left_to_the_main_thread():
            load_dspy()
    except Exception:  # the request that needs DSPy reports it; a warm-up must not crash
        logger.warning("background import of dspy failed", exc_info=True)
        return
    finally:
        if yielding is not None:
            sys.meta_path.remove(yielding)
    # DSPy brings hundreds of thousands of long-lived objects; left to the collector, every
    # full collection walks them all while a request waits. Frozen, they are skipped.
    gc.freeze()
