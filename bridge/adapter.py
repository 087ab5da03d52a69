"""What a framework adapter contributes to the engine.

The engine is generic: framing, requests, sessions, scheduling, stats, recording and the
control socket. A framework (DSPy is the first) plugs in as an `Adapter` instance, one
per engine, so two engines in one process share no adapter state. An adapter brings:

- its commands (`commands()`, CommandSpecs in the one Registry type);
- its per-session state (`new_session_state()`; the core Session holds one slot per
  adapter) and what happens to it on `cleanup_session`, `cleanup` and `reset_state`;
- its fields in `ping`, `get_stats` and `list_sessions`;
- its error classes (for docs and clients: stable `error_type` codes);
- its control-socket views;
- its warm-up (a background import after the first request);
- its replay hooks: the keys of replies that vary from run to run and the shape of the
  ids it generates (the external calls it records are the engine's `lm_call` records).

Every hook has a harmless default, so a tiny adapter overrides only what it has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import BridgeError
from .registry import CommandSpec

if TYPE_CHECKING:
    from .engine import Engine
    from .sessions import Session

# A control-socket view: (engine, request args) -> a JSON-safe object.
AdapterView = Callable[["Engine", dict[str, Any]], dict[str, Any]]


class Adapter:
    """Base class of framework adapters; see the module docstring for the contract."""

    #: Unique name; also the key of its slot in every session.
    name: str = "adapter"
    #: True promises that `ping_fields()` returns the same until the adapter calls
    #: `engine.ping_fields_changed()` (the engine is given in `bind`). The engine then asks
    #: once per change and answers pings from that result (bridge.ping_reply); an adapter
    #: that adds fields without this promise has `ping_fields()` called on every ping.
    announces_ping_changes: bool = False

    def commands(self) -> Iterable[CommandSpec]:
        """The commands this adapter serves (flat names, as the wire contract has them)."""
        return ()

    def bind(self, engine: Engine) -> None:
        """Called once when the engine is built; keep the engine if hooks need it."""

    def configure_from_serve(self, options: dict[str, Any]) -> None:
        """What `dspex serve` was told for this adapter (ServeConfig.adapter_options)."""

    def live_replay_frame(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A recorded request about to be replayed with live external calls (`--lm live`):
        the adapter may fill in what recording scrubbed, within its own rules."""
        return frame

    # -- sessions ----------------------------------------------------------------------

    def new_session_state(self) -> Any:
        """A fresh per-session slot (None: this adapter keeps no per-session state)."""
        return None

    def session_fields(self, state: Any, view: bool = False) -> dict[str, Any]:
        """What `list_sessions` (and, with view=True, inspect) shows of one session's slot."""
        return {}

    def on_cleanup_session(self, state: Any) -> dict[str, Any]:
        """A session is being dropped; returns fields for the cleanup_session reply."""
        return {}

    def on_cleanup(self, states: list[Any]) -> dict[str, Any]:
        """`cleanup`: drop what every session holds; returns fields for the reply."""
        return {}

    def on_reset(self, states: list[Any]) -> dict[str, Any]:
        """`reset_state`: every session is gone; forget worker-level state too."""
        return {}

    # -- health and stats -----------------------------------------------------------------

    def ping_fields(self) -> dict[str, Any]:
        """Fields added to every `ping` reply. Must be cheap: pings are frequent."""
        return {}

    def stats_fields(self, states: list[Any]) -> dict[str, Any]:
        """Fields added to `get_stats` (given every session's slot)."""
        return {}

    def status_fields(self, states: list[Any]) -> dict[str, Any]:
        """Fields added to the control socket's status view."""
        return {}

    # -- everything else ----------------------------------------------------------------

    def error_types(self) -> tuple[type[BridgeError], ...]:
        """The error classes this adapter raises, each with a stable `error_type`."""
        return ()

    def views(self) -> dict[str, tuple[str, AdapterView]]:
        """Control-socket views: name -> (summary, view)."""
        return {}

    def warm(self) -> None:
        """Starts warming up (e.g. a background import); must return at once."""

    def replay_varying_keys(self) -> frozenset[str]:
        """Reply keys whose values differ from run to run (replay ignores them)."""
        return frozenset()

    def generated_id_patterns(self) -> tuple[re.Pattern[str], ...]:
        """Ids this adapter makes up (e.g. program ids), which replay maps across runs."""
        return ()


def session_states(engine: Engine, adapter: Adapter, sessions: Iterable[Session] | None = None) -> list[Any]:
    """The adapter's slot of every (given) session that has one."""
    found = []
    for session in engine.sessions.all() if sessions is None else sessions:
        state = session.state.get(adapter.name)
        if state is not None:
            found.append(state)
    return found
