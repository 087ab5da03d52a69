"""The console's state and the dispatch of one input, shared by the terminal and the pipe.

The shell turns parsed input into protocol requests, sends them to its target, waits
(interruptibly) and hands every outcome to an Output: the rich renderer on a terminal,
JSON lines on a pipe. It never raises to its caller: whatever goes wrong becomes a red
message, and the console goes on.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from .config import ModelMemory, ReplConfig
from .parsing import (registry, CallInput, DefineInput, Empty, MetaInput, ParseError, ProtocolInput,
                      closest, command_for, parse, parse_assignments, split_words)
from .guard import Refused, check_read_only, destructive_question, is_destructive
from .secrets import KEY_FLAG, SecretAsker, ask_secret_on_tty, mask_request, resolve_secret_args
from .targets import AttachTarget, Target
from .callbacks import ClientCallbacks

# What a reply teaches the console is read from its command's effect tags in the one
# registry (bridge.registry.CREATES_PROGRAM ...), never from command names written here.
# bridge.registry is imported where a tag is needed, not here: importing any part of
# bridge loads the engine, which the first prompt must not wait for.

ANONYMOUS = "anonymous"

# What to try next, by error_type, when the reply itself carries no suggestion.
ERROR_HINTS = {
    "lm_not_configured": "configure one: `:lm mock` works offline; `:lm openai/gpt-4o-mini api_key=...` "
                         "or `:lm openai/MODEL api_base=http://...` for a real one",
    "program_not_found": "`:programs` lists this session's programs; `:def NAME inputs -> outputs` makes one",
    "program_exists": "pick another id, or `delete_program program_id=ID` first",
    "invalid_arguments": "`:help COMMAND` shows its arguments",
    "invalid_signature": "a signature looks like `question, context: list[str] -> answer: int`",
    "invalid_inputs": "`get_program_info program_id=ID` shows the program's input fields",
    "lm_error": "check the model name, api_base and key (`:lm` reconfigures)",
    "worker_gone": "restart the console to start a new worker",
}



class Output(Protocol):
    """Where the shell's outcomes go; see render.RichOutput and pipe.JsonLinesOutput."""

    def sent(self, request: dict[str, Any], raw: bool) -> None: ...

    def reply(self, request: dict[str, Any], reply: dict[str, Any], elapsed_ms: float | None,
              raw: bool) -> None: ...

    def error(self, message: str, suggestion: str | None = None, error_type: str = "error") -> None: ...

    def info(self, message: str, data: dict[str, Any] | None = None) -> None: ...

    def data(self, kind: str, payload: Any) -> None: ...

    def cancelled(self, request: dict[str, Any]) -> None: ...

    def notice(self, message: str, suggestion: str | None = None) -> None: ...

    def event(self, frame: dict[str, Any]) -> None: ...


class Cancelled(Exception):
    """The user pressed Ctrl-C while waiting for a reply."""


class Shell:
    def __init__(self, target: Target, output: Output, config: ReplConfig | None = None,
                 models: ModelMemory | None = None, interactive: bool = False, read_only: bool = False,
                 assume_yes: bool = False) -> None:
        self.target = target
        # --read-only: against an attached worker, only commands that read are sent.
        self.read_only = read_only
        # --yes: scripts answer the confirmation questions in advance.
        self.assume_yes = assume_yes
        # How a key is asked for, and a yes/no question put; the terminal console sets
        # prompt_toolkit versions, a pipe asks on /dev/tty for keys and never confirms.
        self.ask_secret: SecretAsker = ask_secret_on_tty
        self.confirm: Any = None
        self.out = output
        self.config = config or ReplConfig()
        self.models = models or ModelMemory(None)
        self.interactive = interactive
        self.session = self.config.session or ANONYMOUS
        self.show_json = self.config.json
        self.timing = self.config.timing
        self.lm_label: str | None = None
        self.programs: dict[str, set[str]] = {}
        self.sessions: set[str] = {ANONYMOUS, self.session}
        self.last_latency_ms: float | None = None
        self.last_tokens: int | None = None
        self.failures = 0
        self.quit_requested = False
        self.stop_recording: Any = None
        self.recording_path: str | None = None
        # Successful commands that built the current state, for a recording's prelude.
        self.setup_log: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self._waiting: set[Future[dict[str, Any]]] = set()
        self._notices: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self.stream = False  # `:stream on`: commands that can stream are sent with "stream": true
        # Client tools and metrics: --tools functions, else asked by hand with `ask_line`
        # (the terminal sets it; a pipe cannot ask).
        self.callbacks = ClientCallbacks()
        self.ask_line: Any = None
        target.on_event = self.on_event

    # -- input ------------------------------------------------------------------------

    def handle(self, text: str) -> None:
        """Runs one complete input; never raises (Ctrl-C included)."""
        self.flush_notices()
        try:
            parsed = parse(text)
            if isinstance(parsed, Empty):
                return
            if isinstance(parsed, MetaInput):
                from .meta import run_meta
                from .meta_registry import MetaContext

                # Meta-commands see the console through a MetaContext, never the shell itself.
                run_meta(MetaContext(self), parsed.name, parsed.argument)
            elif isinstance(parsed, ProtocolInput):
                self.send(parsed.command, parsed.args)
            elif isinstance(parsed, DefineInput):
                self.define(parsed.program_id, parsed.signature, parsed.program_type)
            elif isinstance(parsed, CallInput):
                self.call_program(parsed.program_id, parsed.inputs)
        except ParseError as exc:
            self.fail(exc.message, exc.suggestion, exc.error_type)
        except KeyboardInterrupt:
            self.fail("Interrupted", None, "cancelled")
        except Exception as exc:  # the console must outlive any bug in itself
            self.fail(f"{type(exc).__name__}: {exc}", "this is a bug in the console; the session goes on",
                      "console_error")

    def fail(self, message: str, suggestion: str | None, error_type: str) -> None:
        self.failures += 1
        self.out.error(message, suggestion, error_type)

    def notice(self, message: str, suggestion: str | None = None) -> None:
        """A message from a background task, shown before the next command's output."""
        with self._lock:
            self._notices.append((message, suggestion))

    def flush_notices(self) -> None:
        from . import parsing

        registry()  # loads plugins, whose failures are notices too
        with self._lock:
            notices, self._notices = self._notices, []
            notices += [(error, "check the module name and that it imports") for error in parsing.plugin_errors]
            parsing.plugin_errors.clear()
        for message, suggestion in notices:
            self.out.notice(message, suggestion)

    # -- requests ---------------------------------------------------------------------

    def request_for(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        args = resolve_secret_args(dict(args))
        spec = registry().get(command)
        # The current session goes to every command that has one, unless given explicitly.
        if self.session != ANONYMOUS and "session_id" in spec.arg_names and "session_id" not in args:
            args["session_id"] = self.session
        if self.stream and "stream" not in args:
            from bridge.registry import STREAMS  # loaded by now: registry() built the catalog

            if spec.has(STREAMS):
                args["stream"] = True
        return {"id": next(self._ids), "command": command, "args": args}

    def attached(self) -> bool:
        return isinstance(self.target, AttachTarget)

    def ask_confirmation(self, question: str) -> bool:
        """Yes only if the user says so (or --yes said so in advance)."""
        if self.assume_yes:
            return True
        return bool(self.confirm(question)) if self.confirm is not None else False

    def guard(self, command: str) -> None:
        """Refuses what --read-only forbids; asks before a destructive command hits a live worker."""
        if not self.attached():
            return
        spec = registry().get(command)
        if self.read_only:
            check_read_only(spec)
        if is_destructive(spec) and not self.ask_confirmation(destructive_question(spec.name)):
            how = "answered no" if self.confirm is not None else "cannot ask in a pipe"
            raise Refused(f"{spec.name} was not sent to the attached worker ({how})",
                          "start the console with --yes to confirm in advance" if self.confirm is None
                          else "it runs only when you answer y")

    def send(self, command: str, args: dict[str, Any], *, show_reply: bool = True) -> dict[str, Any] | None:
        """Sends one protocol command, shows it, waits for and shows the reply."""
        self.guard(command)
        request = self.request_for(command, args)
        self.out.sent(mask_request(request), self.show_json)
        started = time.perf_counter()
        future = self.target.submit(request)
        try:
            reply = self.wait(request, future)
        except Cancelled:
            self.out.cancelled(request)
            self.failures += 1
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.observe(request, reply)
        if not reply.get("success"):
            self.failures += 1
            if "suggestion" not in reply:
                hint = ((reply.get("details") or {}).get("suggestion")
                        if isinstance(reply.get("details"), dict) else None)
                if hint:
                    reply = {**reply, "suggestion": f"did you mean '{hint}'?"}
                elif reply.get("error_type") in ERROR_HINTS:
                    reply = {**reply, "suggestion": ERROR_HINTS[reply["error_type"]]}
        if show_reply or not reply.get("success"):
            self.out.reply(request, reply, elapsed_ms if self.timing else None, self.show_json)
        return reply

    def wait(self, request: dict[str, Any], future: Future[dict[str, Any]]) -> dict[str, Any]:
        """Waits for a reply in short steps, so Ctrl-C is noticed at once."""
        self._waiting.add(future)
        try:
            while True:
                try:
                    return future.result(timeout=0.05)
                except FutureTimeout:
                    if self.ask_line is not None:  # callbacks waiting for a hand answer
                        self.callbacks.answer_pending(self.ask_line, self.target.answer)
                    continue
        except KeyboardInterrupt:
            self.target.cancel(request["id"])
            raise Cancelled() from None
        finally:
            if future.done():
                self._waiting.discard(future)
            else:
                future.add_done_callback(self._waiting.discard)

    def on_event(self, frame: dict[str, Any]) -> None:  # on the target's thread
        if frame.get("event") == "callback" and isinstance(frame.get("data"), dict):
            self.callbacks.on_callback(frame["data"], self.ask_line is not None, self.target.answer)
        self.out.event(frame)

    def inflight(self) -> int:
        """Calls not answered yet, including those the user stopped waiting for."""
        counted = self.target.inflight()
        pending = sum(1 for f in list(self._waiting) if not f.done())
        return max(pending, counted or 0)

    def observe(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        """Learns ids, sessions and models from traffic, for completion and the toolbar."""
        args = request.get("args") or {}
        session = args.get("session_id") or ANONYMOUS
        if isinstance(session, str):
            self.sessions.add(session)
        if not reply.get("success"):
            return
        from bridge.registry import (CLEARS_SESSIONS, CONFIGURES_LM, CREATES_PROGRAM, DELETES_PROGRAM,
                                     LISTS_PROGRAMS, LISTS_SESSIONS, RESETS_WORKER, RUNS_PROGRAM)

        result = reply.get("result") or {}
        spec = registry().find(request.get("command")) if isinstance(request.get("command"), str) else None
        tags = spec.tags if spec is not None else frozenset()
        self._log_setup(tags, request, reply)
        if CONFIGURES_LM in tags:
            model = result.get("model") or args.get("model")
            if isinstance(model, str):
                self.models.remember(model)
                if session == self.session or not args.get("session_id"):
                    self.lm_label = model
        elif CREATES_PROGRAM in tags:
            self.programs.setdefault(session, set()).add(str(result.get("program_id")))
        elif DELETES_PROGRAM in tags:
            self.programs.get(session, set()).discard(str(args.get("program_id")))
        elif LISTS_PROGRAMS in tags:
            self.programs[session] = {str(p.get("id")) for p in result.get("programs") or []}
        elif LISTS_SESSIONS in tags:
            for entry in result.get("sessions") or []:
                self.sessions.add(str(entry.get("session_id")))
        elif RESETS_WORKER in tags or CLEARS_SESSIONS in tags:
            self.programs.clear()
            if RESETS_WORKER in tags:
                self.lm_label = None
        elif RUNS_PROGRAM in tags:
            self.last_latency_ms = result.get("duration_ms")
            usage = result.get("usage") or {}
            self.last_tokens = usage.get("total_tokens") if isinstance(usage, dict) else None

    def _log_setup(self, tags: frozenset[str], request: dict[str, Any], reply: dict[str, Any]) -> None:
        """Keeps the commands that built the current state (BUILDS_STATE), minus what was undone."""
        from bridge.registry import (BUILDS_STATE, CLEARS_SESSIONS, CONFIGURES_LM, CREATES_PROGRAM,
                                     DELETES_PROGRAM, DROPS_SESSION, RESETS_WORKER)

        args = request.get("args") or {}
        catalog = registry()
        if BUILDS_STATE in tags:
            self.setup_log.append((request, reply))
        elif DELETES_PROGRAM in tags:
            session = args.get("session_id") or ANONYMOUS
            self.setup_log = [(q, r) for q, r in self.setup_log
                              if not (catalog.has_tag(q["command"], CREATES_PROGRAM)
                                      and (q["args"].get("session_id") or ANONYMOUS) == session
                                      and (r.get("result") or {}).get("program_id") == args.get("program_id"))]
        elif DROPS_SESSION in tags:
            session = args.get("session_id")
            self.setup_log = [(q, r) for q, r in self.setup_log if q["args"].get("session_id") != session]
        elif CLEARS_SESSIONS in tags:
            # The default LM outlives the sessions; everything else went with them.
            self.setup_log = [(q, r) for q, r in self.setup_log if catalog.has_tag(q["command"], CONFIGURES_LM)]
        elif RESETS_WORKER in tags:
            self.setup_log = []

    # -- the friendly layer -------------------------------------------------------------

    def known_programs(self) -> list[str]:
        return sorted(self.programs.get(self.session, set()))

    def configure_lm(self, text: str) -> None:
        words = split_words(text)
        if not words:
            current = self.lm_label or "none"
            self.out.info(f"LM: {current}", {"lm": self.lm_label})
            if self.lm_label is None:
                self.out.error("No LM configured yet", ERROR_HINTS["lm_not_configured"], "lm_not_configured")
            return
        ask_key = KEY_FLAG in words
        words = [w for w in words if w != KEY_FLAG]
        if not words:
            raise ParseError(f"{KEY_FLAG} needs a model", f":lm openai/gpt-4o-mini {KEY_FLAG}")
        model, rest = words[0], words[1:]
        if "=" in model:
            args = parse_assignments(words)
        else:
            args = {"model": model, **parse_assignments(rest)}
        from bridge.registry import CONFIGURES_LM

        command = command_for(CONFIGURES_LM)
        self._check_args(command, args)
        if ask_key:
            if "api_key" in args:
                raise ParseError(f"Give the key either as api_key=... or with {KEY_FLAG}, not both")
            self.guard(command)  # refuse before asking for a key that would not be sent
            key = self.ask_secret(f"API key for {args.get('model') or 'the LM'}: ").strip()
            if not key:
                raise ParseError("No key was entered, so nothing was configured",
                                 f"type the key after {KEY_FLAG}, or use api_key=$VARIABLE")
            args["api_key"] = key
        self.send(command, args)

    def define(self, program_id: str, signature: str, program_type: str = "predict") -> None:
        args = {"id": program_id, "signature": signature}
        if program_type != "predict":
            args["program_type"] = program_type
        self.create_program(args)

    def create_program(self, args: dict[str, Any]) -> dict[str, Any] | None:
        """Creates a program (replacing one of the same id in this session)."""
        from bridge.registry import CREATES_PROGRAM, DELETES_PROGRAM

        program_id = str(args["id"])
        if program_id in self.programs.get(self.session, set()):
            # Redefining is the point of a console: replace, showing both commands.
            self.send(command_for(DELETES_PROGRAM), {"program_id": program_id}, show_reply=False)
        return self.send(command_for(CREATES_PROGRAM), args, show_reply=True)

    def call_program(self, program_id: str, inputs: dict[str, Any]) -> None:
        from bridge.registry import RUNS_PROGRAM

        self.send(command_for(RUNS_PROGRAM), {"program_id": program_id, "inputs": inputs})

    def _check_args(self, command: str, args: dict[str, Any]) -> None:
        spec = registry().get(command)
        for key in args:
            if key not in spec.arg_names:
                close = closest(key, spec.arg_names)
                hint = (f"did you mean '{close}'? " if close else "") + f"{command} takes: {', '.join(spec.arg_names)}"
                raise ParseError(f"{command} has no argument '{key}'", hint)

    def switch_session(self, session_id: str) -> None:
        self.session = session_id or ANONYMOUS
        self.sessions.add(self.session)

    def close(self) -> None:
        if self.stop_recording is not None:
            try:
                self.stop_recording()
            except Exception:
                pass
            self.stop_recording = None
        self.target.close()
