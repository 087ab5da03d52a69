"""The DSPy adapter: DSPy's programs, LMs and LM calls, served through the generic engine.

Importing this package does not import DSPy: `loader.load_dspy()` does, on the first
request that needs it or in the background warm-up after the first request.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...adapter import Adapter, AdapterView
from ...errors import BridgeError
from ...redact import REDACTED, scrub_text
from ...registry import CommandSpec
from .errors import ERROR_TYPES
from .loader import dspy_available, is_loaded, warm_in_background, when_loaded

if TYPE_CHECKING:
    from ...engine import Context, Engine
    from .state import DSPySession, LMHandle

log = logging.getLogger("dspex.dspy")

# The modules whose commands this adapter serves (each adds to commands.COMMANDS).
COMMAND_MODULES: tuple[str, ...] = ("commands", "evaluation", "usage", "portable", "optimizers")

# Program ids the worker makes up when create_program names none (replay maps them).
# A string, compiled when replay asks: a regex compiled at import costs a worker's start-up.
GENERATED_PROGRAM_ID = r"^program_[0-9a-f]{12}$"


@functools.lru_cache(maxsize=1)
def gemini_available() -> bool:
    """Gemini is served through DSPy, so it needs DSPy and a key in the environment."""
    return dspy_available() and bool(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"))


class DSPyAdapter(Adapter):
    """Programs per session, the session's LM, and the worker's default LM."""

    name = "dspy"
    # What ping reports moves only with the default LM and the background import's end,
    # and both announce it (default_lm, bind).
    announces_ping_changes = True

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._default_lm: LMHandle | None = None
        # The worker's own LM from `dspex serve --lm` / DSPEX_LM; reset_state returns to it.
        self.startup_lm: LMHandle | None = None

    @property
    def default_lm(self) -> LMHandle | None:
        """The worker's default LM (configure_lm without a session sets it)."""
        return self._default_lm

    @default_lm.setter
    def default_lm(self, handle: LMHandle | None) -> None:
        self._default_lm = handle
        self._ping_fields_changed()

    def bind(self, engine: Engine) -> None:
        self.engine = engine
        when_loaded(self._ping_fields_changed)  # dspy_loaded turns true

    def _ping_fields_changed(self) -> None:
        if self.engine is not None:
            self.engine.ping_fields_changed()

    def commands(self) -> Iterable[CommandSpec]:
        import importlib

        from .commands import COMMANDS

        # Each module registers its commands into commands.COMMANDS when imported.
        for module in COMMAND_MODULES:
            importlib.import_module(f"{__name__}.{module}")
        return COMMANDS.specs()

    # -- state of a request --------------------------------------------------------------

    def state(self, ctx: Context) -> DSPySession:
        """The request's session slot (the session is made on first use)."""
        return ctx.session.slot(self)

    def lm_for(self, ctx: Context) -> LMHandle | None:
        """The LM a request should use: its session's, else the worker's default."""
        session = ctx.engine.sessions.peek(ctx.session_id)
        state = session.state.get(self.name) if session is not None else None
        if state is not None and state.lm is not None:
            return state.lm
        return self.default_lm

    def configure_from_serve(self, options: dict[str, Any]) -> None:
        from ...serve.config import DEFAULT_MAX_ASYNC

        # The lane's module loads with the first request that needs it, not at start-up,
        # unless its limit was changed.
        if options.get("max_async") and options["max_async"] != DEFAULT_MAX_ASYNC:
            from .async_lane import LANE

            LANE.set_limit(int(options["max_async"]))
        if options.get("startup_lm") is not None:
            self.install_startup_lm(options["startup_lm"])

    def install_startup_lm(self, lm_config: Any) -> None:
        """The worker's own default LM (from `--lm`): used until a configure_lm replaces it,
        built on first use so start-up never imports DSPy."""
        from .lm_config import LazyLMHandle

        engine = self.engine

        def replayed() -> Any:
            # Under `dspex replay --worker` even the default LM answers from the cassette.
            if engine is None or engine.lm_responder is None:
                return None
            from .lm_calls import make_replay_lm
            return make_replay_lm(lm_config.public_dict(), SimpleNamespace(engine=engine))  # type: ignore[arg-type]

        handle = LazyLMHandle(lm_config, replay=replayed)
        self.startup_lm = handle  # type: ignore[assignment]
        self.default_lm = handle  # type: ignore[assignment]  (last: it bumps the ping version)
        log.info("default LM %s (built on first use)", handle.model)

    # -- hooks of the engine -------------------------------------------------------------

    def new_session_state(self) -> DSPySession:
        from .state import DSPySession

        return DSPySession()

    def session_fields(self, state: DSPySession, view: bool = False) -> dict[str, Any]:
        programs = sorted(state.programs)
        fields: dict[str, Any] = {"programs": programs}
        if view:
            fields["program_count"] = len(programs)
        fields["lm"] = state.lm.public if state.lm is not None else None
        return fields

    def on_cleanup_session(self, state: DSPySession) -> dict[str, Any]:
        return {"programs_removed": len(state.programs)}

    def on_cleanup(self, states: list[DSPySession]) -> dict[str, Any]:
        removed = 0
        for state in states:
            removed += len(state.programs)
            state.programs.clear()
        return {"programs_removed": removed}

    def on_reset(self, states: list[DSPySession]) -> dict[str, Any]:
        self.default_lm = self.startup_lm  # back to the worker's own LM (--lm), if any
        return {"programs_cleared": sum(len(state.programs) for state in states)}

    def _lm_model(self) -> dict[str, Any]:
        # Only for a worker started with --lm / DSPEX_LM, so replies recorded without one replay exactly.
        if self.startup_lm is not None and self.default_lm is not None:
            return {"lm_model": self.default_lm.model}
        return {}

    def ping_fields(self) -> dict[str, Any]:
        return {
            # Whether the background import has finished: benchmarks and health checks wait on it.
            "dspy_loaded": is_loaded(),
            "dspy_available": dspy_available(),
            "gemini_available": gemini_available(),
            **self._lm_model(),
        }

    def stats_fields(self, states: list[DSPySession]) -> dict[str, Any]:
        return {"programs_count": sum(len(state.programs) for state in states),
                "dspy_available": dspy_available(), "gemini_available": gemini_available(),
                **self._lm_model()}

    def status_fields(self, states: list[DSPySession]) -> dict[str, Any]:
        return {"dspy_loaded": "dspy" in sys.modules,
                "default_lm": self.default_lm.public if self.default_lm is not None else None,
                "counters": {"programs": sum(len(state.programs) for state in states)}}

    def error_types(self) -> tuple[type[BridgeError], ...]:
        return ERROR_TYPES

    def views(self) -> dict[str, tuple[str, AdapterView]]:
        from .views import program_view

        return {"programs": ("programs with signature, type, executions, last executed, mean latency",
                             program_view)}

    def warm(self) -> None:
        frames = self.engine.recent_frames  # (direction, monotonic time, payload), newest last
        # While frames keep coming the import steps aside between modules (see the loader).
        warm_in_background(lambda: frames[-1][1] if frames else 0.0)

    def live_replay_frame(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A recorded configure_lm whose key was scrubbed: the key from the environment is
        filled in only for the provider's own endpoint (no api_base) or a server on this
        machine. A transcript is a file of requests: it must not choose where a key goes."""
        original = frame.get("args")
        if frame.get("command") != "configure_lm" or not isinstance(original, dict) \
                or original.get("api_key") != REDACTED:
            return frame
        base = original.get("api_base")
        if base is not None and not _loopback(base):
            log.warning("live replay: no key from the environment is sent to %s, named by the transcript",
                        scrub_text(str(base)))
            return frame
        from .lm_config import environment_key

        key = environment_key(original)
        return {**frame, "args": {**original, "api_key": key}} if key else frame

    def replay_varying_keys(self) -> frozenset[str]:
        return frozenset({"dspy_loaded"})

    def generated_id_patterns(self) -> tuple[re.Pattern[str], ...]:
        return (re.compile(GENERATED_PROGRAM_ID),)


def _loopback(url: Any) -> bool:
    try:
        host = urlsplit(str(url)).hostname or ""
    except ValueError:
        return False
    return host == "localhost" or host == "::1" or host.startswith("127.")


def adapter_of(ctx: Context) -> DSPyAdapter:
    """The DSPy adapter of the request's engine."""
    return ctx.engine.adapter(DSPyAdapter.name)  # type: ignore[return-value]


__all__ = ["DSPyAdapter", "adapter_of", "gemini_available", "tool"]


def __getattr__(name: str) -> Any:
    """`from bridge.adapters.dspy import tool` (plugins) without importing the tools module
    at every worker's start: the package is imported before the first ping reply."""
    if name == "tool":
        from .tools import tool

        return tool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
