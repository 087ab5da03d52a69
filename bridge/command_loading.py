"""Loading the adapters' commands after the worker's first reply instead of before it.

Importing the adapters' command modules (the DSPy adapter's programs, evaluation and
optimizers) is most of what a spawned worker does before it can answer its pool's init
ping. With `EngineConfig.background_commands` the engine starts with the core's commands
(ping, get_stats, cancel, shutdown, jobs), which are answered at once, and a thread adds the
adapters' and plugins' commands. A request for any other command that arrives meanwhile is
held, already accepted: a drain waits for it and answers it if it gives up, exactly as for
a queued request, and once the commands are there the held requests are dispatched in
their order of arrival, before anything that came later.

A mixin of `bridge.engine.Engine`; in-process engines (REPL, replay, tests) build every
command at once and never hold a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .context import OnceReply
from .errors import BridgeError, Overloaded
from .system import stop_signals_left_to_the_main_thread

log = logging.getLogger("dspex.engine")

Send = Callable[[bytes], None]


class BackgroundCommands:
    """Holding requests until the full registry is built (see the module's docstring)."""

    # What the engine provides (declared for readers and type checkers).
    registry: Any
    config: Any
    _idle: threading.Condition
    _accepted: set[OnceReply]
    submit: Callable[..., bool]
    _release: Callable[[OnceReply], None]
    shutting_down: threading.Event

    def _start_commands(self, ready: bool, build_full: Callable[[], Any]) -> None:
        """Called by the engine's constructor; `ready` False means held until `load_commands`."""
        self._commands_ready = threading.Event()
        self._held: list[tuple[Any, OnceReply, bool]] = []
        self._held_lock = threading.Lock()
        self._build_full_registry = build_full
        if ready:
            self._commands_ready.set()

    @property
    def commands_loaded(self) -> bool:
        """Whether every command is registered (always, for an in-process engine)."""
        return self._commands_ready.is_set()

    def _hold(self, request: Any, send: Send) -> bool:
        """Holds a request that needs the full registry (or refuses it, past the engine's
        queue bound); False once the registry is there and the request may go on."""
        with self._held_lock:
            if self._commands_ready.is_set():
                return False
            request_id = request.get("id") if type(request) is dict else None
            command = request.get("command") if type(request) is dict else None
            once = OnceReply(request_id, send, command if type(command) is str else "", "")
            with self._idle:
                # Held requests count toward the same bound as queued ones: a client must not
                # grow the list without limit while the commands load.
                overloaded = len(self._accepted) >= self.config.max_queued
                if not overloaded:
                    self._accepted.add(once)
            if not overloaded:
                # Whether it came before a drain began: such requests run, later ones are refused.
                self._held.append((request, once, not self.shutting_down.is_set()))
                return True
        self._reply_error(request_id, self.overloaded_error(), once)  # type: ignore[attr-defined]
        return True

    def overloaded_error(self) -> Overloaded:
        """The refusal of a request beyond `EngineConfig.max_queued` (held or queued)."""
        return Overloaded(f"{self.config.max_queued} requests are already queued; retry later")

    def load_commands(self) -> None:
        """Builds the full registry, then dispatches the held requests in arrival order.

        Raises what the adapters' command modules raised (the held requests are then
        answered with `internal_error`, as a drain that gives up would answer them)."""
        if self._commands_ready.is_set():
            return
        try:
            with stop_signals_left_to_the_main_thread():  # imports only; dispatch comes after
                self.registry = self._build_full_registry()
        except BaseException as exc:
            self._fail_held(BridgeError(f"The worker could not load its commands: {type(exc).__name__}: {exc}"))
            raise
        while True:
            with self._held_lock:
                held, self._held = self._held, []
                if not held:
                    # Set only with nothing left to dispatch: a request that arrives now
                    # goes straight on, after every held one has been.
                    self._commands_ready.set()
                    return
            for request, once, admitted in held:
                # The held entry becomes the request's own reply channel, so events, cancel,
                # deadlines and a drain's answer all find it, and one reply passes. Not
                # scheduled (refused, inline, answered by a drain meanwhile): freed here.
                if once.answered or not self.submit(request, once, admitted=admitted):
                    self._release(once)

    def load_commands_in_background(self, after: threading.Event, wait_seconds: float,
                                    on_failure: Callable[[BaseException], None]) -> threading.Thread:
        """Starts `load_commands` on a daemon thread once `after` is set (the first reply was
        written) or `wait_seconds` have passed; `on_failure` gets what it raised."""
        def run() -> None:
            after.wait(wait_seconds)
            try:
                self.load_commands()
            except BaseException as exc:  # the worker cannot serve; its owner ends it
                log.critical("cannot load the adapters' commands: %s: %s", type(exc).__name__, exc)
                on_failure(exc)

        thread = threading.Thread(target=run, name="dspex-commands", daemon=True)
        thread.start()
        return thread

    def _fail_held(self, exc: BridgeError) -> None:
        with self._held_lock:
            held, self._held = self._held, []
        for _, once, _ in held:
            self._reply_error(once.request_id, exc, once)  # type: ignore[attr-defined]
            self._release(once)

