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
from types import ModuleType

__all__ = ["DSPyUnavailableError", "dspy_available", "is_loaded", "load_dspy", "warm_in_background"]

logger = logging.getLogger("dspex.dspy_loader")

# Optional packages DSPy imports only if installed, for notebook display. A worker never
# displays a notebook, and IPython alone adds ~0.4 s and ~20 MB to every worker, so they
# are hidden while DSPy is imported (DSPy falls back to its own plain versions).
_OPTIONAL_EXTRAS = ("IPython",)

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
    return _import_locked()


def _import_locked() -> ModuleType:
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
        try:
            module = importlib.import_module("dspy")
        except ImportError as exc:
            raise DSPyUnavailableError(f"DSPy is not available: {exc}") from exc
        finally:
            for name in blocked:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]  # later code that wants them may import them
        logger.debug("imported dspy %s in %.0f ms", getattr(module, "__version__", "?"),
                     (time.perf_counter() - started) * 1000)
        _dspy = module
        return module


def is_loaded() -> bool:
    """Whether DSPy has already been imported through `load_dspy`."""
    return _dspy is not None


def warm_in_background() -> threading.Thread:
    """Starts importing DSPy on a daemon thread so the first real request finds it loaded.

    Failures are only logged: the request that needs DSPy will raise the error itself.
    """
    thread = threading.Thread(target=_warm, name="dspex-dspy-warmup", daemon=True)
    thread.start()
    return thread


def _warm() -> None:
    try:
        load_dspy()
    except Exception:  # the request that needs DSPy reports it; a warm-up must not crash
        logger.warning("background import of dspy failed", exc_info=True)
        return
    # DSPy brings hundreds of thousands of long-lived objects; left to the collector, every
    # full collection walks them all while a request waits. Frozen, they are skipped.
    gc.freeze()
