"""`dspex top`: every dspex worker on this machine in one live table, like htop for a pool.

    dspex top                    live table (a terminal); one snapshot otherwise
    dspex top --json             the snapshot as JSON, for scripts
    dspex top --interval 2       refresh every 2 s (default 1 s)
    dspex inspect --watch        the same screen

Workers are found through their discovery files (bridge.control.client); each refresh
asks each worker's control socket for `status`, `inflight` and `jobs` over a connection
kept open, and reads CPU time from /proc/PID/stat. A worker that exits simply leaves the
table. The terminal is put in cbreak mode (Ctrl-C still works) and restored on exit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import typer

from dspex_cli.env import Environment, environment_of
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded
from dspex_cli.top_fleet import Fleet, build_row, matches
from dspex_cli.top_terminal import Terminal, parse_keys

DEFAULT_INTERVAL = 1.0


@dataclass
class TopState:
    screen: str = "pool"  # pool | worker | stack | help
    sort_key: str = "worker_id"
    reverse: bool = False
    filter_text: str = ""
    editing_filter: bool = False
    selected: int = 0
    worker_pid: int | None = None
    request_selected: int = 0
    confirm: Any = None  # the request id waiting for y/n
    message: str = ""
    stack: dict[str, Any] | None = None
    stack_offset: int = 0
    previous: str = "pool"
    quit: bool = False


class TopApp:
    """The key handling and drawing loop; data comes from a Fleet."""

    def __init__(self, fleet: Fleet, interval: float, state: TopState | None = None) -> None:
        self.fleet = fleet
        self.interval = interval
        self.state = state or TopState()
        self.rows: list[dict[str, Any]] = []
        self.page: dict[str, Any] | None = None

    def refresh(self) -> None:
        from dspex_cli.top_views import sort_rows

        state = self.state
        if state.screen in ("worker", "stack") and state.worker_pid is not None:
            self.page = self.fleet.page(state.worker_pid)
            if self.page is None:
                state.screen, state.message = "pool", f"worker pid {state.worker_pid} exited"
        if state.screen in ("pool", "help") or self.page is None:
            rows = self.fleet.rows(with_sessions=bool(state.filter_text))
            if state.filter_text:
                rows = [r for r in rows if matches(r, state.filter_text)]
            self.rows = sort_rows(rows, state.sort_key, state.reverse)
            state.selected = min(state.selected, max(0, len(self.rows) - 1))
        if self.fleet.gone:
            state.message = "; ".join(self.fleet.gone[-2:])
            self.fleet.gone.clear()

    def render(self, width: int, height: int) -> Any:
        from dspex_cli.top_views import help_screen, pool_screen, stack_screen, worker_screen

        state = self.state
        message = state.message
        if state.editing_filter:
            message = f"filter: {state.filter_text}█  (Enter apply, Esc clear)"
        if state.screen == "help":
            return help_screen(width)
        if state.screen == "stack" and state.stack is not None:
            return stack_screen(state.stack, width=width, height=height, offset=state.stack_offset)
        if state.screen == "worker" and self.page is not None:
            if state.confirm is not None:
                message = f"cancel request #{state.confirm}? its caller gets error_type cancelled [y/N]"
            inflight = self.page.get("inflight") or []
            state.request_selected = min(state.request_selected, max(0, len(inflight) - 1))
            return worker_screen(self.page, selected=state.request_selected, width=width, height=height,
                                 message=message)
        return pool_screen(self.rows, selected=state.selected, sort_key=state.sort_key, reverse=state.reverse,
                           filter_text=state.filter_text, width=width, height=height, message=message)

    def selected_request(self) -> dict[str, Any] | None:
        inflight = (self.page or {}).get("inflight") or []
        if not inflight:
            return None
        return inflight[min(self.state.request_selected, len(inflight) - 1)]

    def press(self, key: str, width: int) -> bool:
        """Handles one key; True when the data should be fetched again at once."""
        from dspex_cli.top_views import COLUMNS, visible_columns

        state = self.state
        if state.editing_filter:
            if key == "enter":
                state.editing_filter = False
                return True
            if key == "esc":
                state.editing_filter, state.filter_text = False, ""
                return True
            if key == "backspace":
                state.filter_text = state.filter_text[:-1]
            elif len(key) == 1 and key.isprintable():
                state.filter_text += key
            return False
        if state.confirm is not None:
            request_id, state.confirm = state.confirm, None
            if key in ("y", "Y"):
                self._cancel(request_id)
                return True
            state.message = f"request #{request_id} left running"
            return False
        if key == "q":
            state.quit = True
            return False
        if state.screen == "help":
            state.screen = state.previous
            return False
        if key == "?":
            state.previous, state.screen = state.screen if state.screen != "help" else "pool", "help"
            return False
        state.message = ""
        if state.screen == "stack":
            if key in ("esc", "left"):
                state.screen, state.stack = "worker", None
                return True
            if key in ("up", "down", "pgup", "pgdown"):
                step = {"up": -1, "down": 1, "pgup": -10, "pgdown": 10}[key]
                state.stack_offset = max(0, state.stack_offset + step)
            return False
        if state.screen == "worker":
            inflight = (self.page or {}).get("inflight") or []
            if key in ("esc", "left"):
                state.screen, self.page = "pool", None
                return True
            if key == "up":
                state.request_selected = max(0, state.request_selected - 1)
            elif key == "down":
                state.request_selected = min(max(0, len(inflight) - 1), state.request_selected + 1)
            elif key == "c":
                request = self.selected_request()
                if request is None:
                    state.message = "nothing in flight to cancel"
                else:
                    state.confirm = request.get("id")
            elif key == "t":
                self._open_stack()
            return False
        # the pool
        keys = [c.key for c in COLUMNS]
        if key == "up":
            state.selected = max(0, state.selected - 1)
        elif key == "down":
            state.selected = min(max(0, len(self.rows) - 1), state.selected + 1)
        elif key in ("s", "S"):
            step = 1 if key == "s" else -1
            state.sort_key = keys[(keys.index(state.sort_key) + step) % len(keys)] \
                if state.sort_key in keys else keys[0]
            return True
        elif key.isdigit() and key != "0":
            shown = visible_columns(width)
            if int(key) <= len(shown):
                state.sort_key = shown[int(key) - 1].key
                return True
        elif key == "r":
            state.reverse = not state.reverse
            return True
        elif key == "/":
            state.editing_filter = True
        elif key == "esc" and state.filter_text:
            state.filter_text = ""
            return True
        elif key == "enter" and self.rows:
            state.worker_pid = self.rows[state.selected].get("pid")
            state.screen, state.request_selected = "worker", 0
            return True
        return False

    def _open_stack(self) -> None:
        from bridge.control.client import ControlError

        request = self.selected_request()
        state = self.state
        if request is None or state.worker_pid is None:
            state.message = "nothing in flight: no request to take a stack of"
            return
        try:
            stack = self.fleet.call(state.worker_pid, "stack", {"request_id": request.get("id")})
        except ControlError as exc:
            state.message = f"stack: {exc.message}"
            return
        if stack is not None:
            state.screen, state.stack, state.stack_offset = "stack", stack, 0

    def _cancel(self, request_id: Any) -> None:
        from bridge.control.client import ControlError

        state = self.state
        try:
            result = self.fleet.call(state.worker_pid, "cancel", {"request_id": request_id,  # type: ignore[arg-type]
                                                                  "reason": "cancelled from dspex top"})
        except ControlError as exc:
            state.message = f"cancel refused: {exc.message}"
            return
        state.message = f"request #{request_id} cancelled" if result else "the worker is gone"

    def run(self, terminal: Terminal) -> int:
        next_fetch = 0.0
        while not self.state.quit:
            width, height = terminal.size()
            if time.monotonic() >= next_fetch:
                self.refresh()
                next_fetch = time.monotonic() + self.interval
            terminal.draw(self.render(width, height), width, height)
            for key in terminal.keys(next_fetch - time.monotonic()):
                if self.press(key, width):
                    next_fetch = 0.0
                if self.state.quit:
                    break
        return ExitStatus.OK


# -- the command ---------------------------------------------------------------------------------


def snapshot_rows(fleet: Fleet) -> list[dict[str, Any]]:
    """Two readings a moment apart, so CPU % means something in a one-off snapshot."""
    fleet.rows()
    time.sleep(0.25)
    return fleet.rows(with_sessions=True)


def run_top(interval: float, as_json: bool, once: bool, filter_text: str | None, sort: str | None,
            env: Environment) -> int:
    from bridge.control.client import ControlError

    from dspex_cli.top_views import COLUMNS, pool_screen, sort_rows

    if not 0.1 <= interval <= 3600:
        raise UserError(f"--interval must be between 0.1 and 3600 seconds, got {interval:g}")
    keys = {c.key: c.key for c in COLUMNS} | {c.title.lower(): c.key for c in COLUMNS}
    if sort is not None and sort.lower() not in keys:
        import difflib

        close = difflib.get_close_matches(sort.lower(), list(keys), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown sort column {sort!r}{hint} (columns: {', '.join(c.key for c in COLUMNS)})")
    sort_key = keys[sort.lower()] if sort is not None else "worker_id"
    fleet = Fleet()
    try:
        if as_json or once or not env.interactive:
            rows = [r for r in snapshot_rows(fleet) if not filter_text or matches(r, filter_text)]
            rows = sort_rows(rows, sort_key, False)
            if as_json:
                env.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
            else:
                env.console().print(pool_screen(rows, selected=-1, sort_key=sort_key, reverse=False,
                                                filter_text=filter_text or "", width=env.columns, height=10_000))
            return ExitStatus.OK
        app = TopApp(fleet, interval, TopState(sort_key=sort_key, filter_text=filter_text or ""))
        with Terminal(env) as terminal:
            try:
                return app.run(terminal)
            except KeyboardInterrupt:
                return ExitStatus.OK
    except ControlError as exc:
        raise UserError(exc.message, ExitStatus.FAILURE) from None
    finally:
        fleet.close()


def run_top_guarded(interval: float, as_json: bool, once: bool, filter_text: str | None, sort: str | None,
                    env: Environment | None = None, where: str = "dspex top") -> int:
    environment = env or Environment.from_process()
    return run_guarded(where, lambda: run_top(interval, as_json, once, filter_text, sort, environment), environment)


def register(app: typer.Typer) -> None:
    @app.command("top", help=(
        "Every dspex worker on this machine in one live table: pid, mode, uptime, RSS, CPU, in flight, "
        "request/error/LM rates, LM latency, tokens, cost, jobs. Enter opens a worker (in-flight requests "
        "with their phase, stacks, cancel); ? lists the keys; q quits. Without a terminal: one snapshot."))
    def top(
        ctx: typer.Context,
        interval: float = typer.Option(DEFAULT_INTERVAL, "--interval", "-i", metavar="SECONDS",
                                       help="seconds between refreshes"),
        as_json: bool = typer.Option(False, "--json", help="print one snapshot as JSON"),
        once: bool = typer.Option(False, "--once", help="print one snapshot even on a terminal"),
        filter_text: str = typer.Option(None, "--filter", metavar="TEXT",
                                        help="only workers whose id, pid or a session contains TEXT"),
        sort: str = typer.Option(None, "--sort", metavar="COLUMN", help="sort column (e.g. inflight, cpu_pct)"),
    ) -> None:
        raise typer.Exit(run_top_guarded(interval, as_json, once, filter_text, sort, environment_of(ctx)))


__all__ = ["Fleet", "TopApp", "TopState", "build_row", "matches", "parse_keys", "register", "run_top",
           "run_top_guarded"]
