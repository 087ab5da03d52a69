"""The Python adapter: calls of allowed Python functions, classes and methods, with
references to the objects they return (the access erlport or SnakeBridge give Elixir).

Off unless enabled: the allow-list comes from `dspex serve --allow MODULE` and DSPEX_ALLOW,
both read by the serve config (ServeConfig.adapter_options["python"]["allow"]), or, for an
engine built in-process, from `PythonAdapter(allow=[...])`. With an empty list
every python.* command answers `not_allowed`, and the adapter adds nothing to any other
reply, so a worker that does not use it answers byte for byte as before.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...adapter import Adapter, AdapterView
from ...errors import BridgeError
from ...registry import CommandSpec
from .errors import ERROR_TYPES, NotAllowed

if TYPE_CHECKING:
    from ...engine import Engine
    from .allow import AllowList
    from .refs import Counter

GENERATED_REF_ID = r"^r-[0-9a-f]{16}$"  # compiled when replay asks (start-up time)
_counter_lock = threading.Lock()


class PythonSession:
    """What one session holds: its references."""

    def __init__(self, worker: Counter) -> None:
        from .refs import RefTable

        self.refs = RefTable(worker)


class _NothingAllowed:
    """The allow-list of a worker that enables nothing (the default): falsy, no entries.
    Stands in for an AllowList so that the allow-list's module (its patterns) loads only
    when a worker is given entries, not with every worker's start-up."""

    def __bool__(self) -> bool:
        return False

    def entries(self) -> list[str]:
        return []


def allow_list(entries: Iterable[str]) -> AllowList | _NothingAllowed:
    """An AllowList of `entries` (ValueError for a malformed one), or the empty stand-in."""
    entries = list(entries)
    if not entries:
        return _NothingAllowed()
    from .allow import AllowList

    return AllowList(entries)


class PythonAdapter(Adapter):
    """Universal Python calls within an allow-list; references per session."""

    name = "python"

    def __init__(self, allow: Iterable[str] = ()) -> None:
        """`allow`: allow-list entries for an engine built in-process; `dspex serve` hands
        its --allow / DSPEX_ALLOW entries over in `configure_from_serve` instead. Raises
        ValueError for an entry that is not a module name or `pkg.*` prefix."""
        self.engine: Engine | None = None
        self._worker_refs: Counter | None = None
        self.allow = allow_list(allow)

    @property
    def worker_refs(self) -> Counter:
        """References held by every session of this worker (made on first use)."""
        counter = self._worker_refs
        if counter is None:
            from .refs import Counter

            with _counter_lock:
                if self._worker_refs is None:
                    self._worker_refs = Counter()
                counter = self._worker_refs
        return counter

    def bind(self, engine: Engine) -> None:
        self.engine = engine

    def configure_from_serve(self, options: dict[str, Any]) -> None:
        """The serve config's entries (--allow, then DSPEX_ALLOW), added to those given at
        construction."""
        entries = options.get("allow") or []
        self.allow = allow_list([*self.allow.entries(), *entries])

    def require_enabled(self) -> None:
        if not self.allow:
            from .allow import HOW_TO_ENABLE

            raise NotAllowed(HOW_TO_ENABLE)

    def commands(self) -> Iterable[CommandSpec]:
        from .commands import COMMANDS

        return COMMANDS.specs()

    # -- sessions: references die with their session ------------------------------------

    def new_session_state(self) -> PythonSession:
        return PythonSession(self.worker_refs)

    def session_fields(self, state: PythonSession, view: bool = False) -> dict[str, Any]:
        return {"python_refs": len(state.refs)} if self.allow else {}

    def _release(self, states: list[PythonSession]) -> int:
        return sum(state.refs.release(None)[0] for state in states)

    def on_cleanup_session(self, state: PythonSession) -> dict[str, Any]:
        released = self._release([state])
        return {"python_refs_released": released} if self.allow else {}

    def on_cleanup(self, states: list[PythonSession]) -> dict[str, Any]:
        released = self._release(states)
        return {"python_refs_released": released} if self.allow else {}

    def on_reset(self, states: list[PythonSession]) -> dict[str, Any]:
        released = self._release(states)
        return {"python_refs_released": released} if self.allow else {}

    # -- health, stats, inspect ----------------------------------------------------------

    def stats_fields(self, states: list[PythonSession]) -> dict[str, Any]:
        return {"python_refs": self.worker_refs.count} if self.allow else {}

    def status_fields(self, states: list[PythonSession]) -> dict[str, Any]:
        if not self.allow:
            return {}
        return {"python_allow": self.allow.entries(), "counters": {"python_refs": self.worker_refs.count}}

    def error_types(self) -> tuple[type[BridgeError], ...]:
        return ERROR_TYPES

    def views(self) -> dict[str, tuple[str, AdapterView]]:
        return {"refs": ("Python references per session, with type and repr (python adapter)", refs_view)}

    def replay_varying_keys(self) -> frozenset[str]:
        return frozenset({"repr"})  # reprs may hold memory addresses

    def generated_id_patterns(self) -> tuple[re.Pattern[str], ...]:
        return (re.compile(GENERATED_REF_ID),)


def refs_view(engine: Engine, args: dict[str, Any]) -> dict[str, Any]:
    """What `dspex inspect WORKER refs` shows: every session's references."""
    from ...control import cut, public

    wanted = args.get("session_id")
    adapter: PythonAdapter = engine.adapter(PythonAdapter.name)  # type: ignore[assignment]
    refs = []
    for session in engine.sessions.all():
        state = session.state.get(PythonAdapter.name)
        if state is None or (wanted is not None and session.session_id != wanted):
            continue
        refs += [{"session_id": session.session_id, **entry} for entry in state.refs.listing()]
    refs.sort(key=lambda ref: (ref["session_id"], ref["created_at"]))
    return public(cut({"allow": adapter.allow.entries(), "refs": refs, "total": len(refs)}))


__all__ = ["PythonAdapter"]
