"""The interactive console: prompt_toolkit for input, rich for output.

Start-up is kept short: DSPy, rich and the engine are loaded after the first prompt is
on screen (a background thread started from the prompt's pre-run hook).
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.document import Document
from prompt_toolkit.filters import emacs_mode, is_searching
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.output import Output as PTOutput
from prompt_toolkit.styles import Style

from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus

from .completion import ReplCompleter
from .config import ReplConfig, create_private_file, redact_history_file, trim_history
from .parsing import registry, BARE_META_WORDS, command_for, is_complete
from .shell import Shell

_TOKEN = re.compile(r"""(?P<string>"(?:\\.|[^"\\])*"?|'(?:\\.|[^'\\])*'?)"""
                    r"""|(?P<key>[A-Za-z_][\w.]*)(?==)"""
                    r"""|(?P<number>-?\d+(?:\.\d+)?\b|\btrue\b|\bfalse\b|\bnull\b)"""
                    r"""|(?P<other>\s+|.)""")


class ReplLexer(Lexer):
    """Colours the command (known, meta or unknown), argument keys, strings and numbers."""

    def lex_document(self, document: Document) -> Any:
        lines = document.lines

        def get_line(number: int) -> FormattedText:
            line = lines[number]
            fragments: list[tuple[str, str]] = []
            rest = line
            if number == 0:
                match = re.match(r"\s*(:?[\w\-?]+)", line)
                if match:
                    word = match.group(1)
                    if word.startswith(":"):
                        from .meta import META  # loaded with the first meta-command typed

                        style = "class:meta" if word[1:] in META else "class:unknown"
                    elif word in registry() or word in BARE_META_WORDS:
                        style = "class:command"
                    else:
                        style = ""
                    fragments.append((style, match.group(0)))
                    rest = line[match.end():]
            for token in _TOKEN.finditer(rest):
                kind = token.lastgroup
                fragments.append((f"class:{kind}" if kind != "other" else "", token.group()))
            return FormattedText(fragments)

        return get_line


class RedactingFileHistory(FileHistory):
    """The history file, holding every line with its secret values removed.

    The line recalled with Up in this console is the redacted one too: sending it again
    gets a clear error pointing to `$VARIABLE` or `--key` rather than a wrong key.
    """

    def append_string(self, string: str) -> None:
        from .secrets import redact_line

        super().append_string(redact_line(string))


def ask_secret(prompt: str) -> str:
    """A key typed without echo (`:lm MODEL --key` on a terminal)."""
    from prompt_toolkit import prompt as ask

    return ask(prompt, is_password=True)


def ask_callback(prompt: str) -> str:
    """A callback's answer typed by hand (a client tool with no --tools function)."""
    from prompt_toolkit import prompt as ask

    return ask(prompt)


def confirm(question: str) -> bool:
    """A pgcli-style yes/no question; anything but y/yes (Enter included) is no."""
    from prompt_toolkit import prompt as ask

    try:
        answer = ask(f"{question} [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    # Not while searching history (Ctrl-R): there Enter accepts the match, as usual.
    @bindings.add("enter", filter=~is_searching)
    def _(event: KeyPressEvent) -> None:
        # Enter runs the input unless a bracket or quote is still open.
        buffer = event.current_buffer
        if buffer.complete_state is not None and buffer.complete_state.current_completion is not None:
            buffer.apply_completion(buffer.complete_state.current_completion)
            return
        if is_complete(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    # Emacs only: in vi mode Escape leaves insert mode, and a quick Enter after it must
    # still run the input rather than complete an Escape-Enter sequence.
    @bindings.add("escape", "enter", filter=emacs_mode)
    def _(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


def toolbar_text(shell: Shell) -> FormattedText:
    parts = [f" {shell.target.label()}", f"LM {shell.lm_label or 'none (:lm mock)'}",
             f"session {shell.session}", f"in flight {shell.inflight()}"]
    if shell.last_latency_ms is not None:
        last = f"last {shell.last_latency_ms:.0f} ms"
        if shell.last_tokens is not None:
            last += f", {shell.last_tokens} tokens"
        parts.append(last)
    if shell.recording_path:
        parts.append(f"● rec {shell.recording_path}")
    return FormattedText([("class:bottom-toolbar.text", " │ ".join(parts) + " ")])


def prompt_message(shell: Shell) -> FormattedText:
    label = "dspex" if shell.session == "anonymous" else f"dspex:{shell.session}"
    return FormattedText([("class:prompt", f"{label}> ")])


def build_session(shell: Shell, config: ReplConfig, history: History | None = None,
                  input: Input | None = None, output: PTOutput | None = None) -> PromptSession[str]:
    """The PromptSession of the console; tests pass a pipe input and a dummy output."""
    colours = config.colours
    style = Style.from_dict({
        "prompt": colours["prompt"], "command": colours["command"], "meta": colours["meta"],
        "unknown": colours["unknown"], "key": colours["key"], "string": colours["string"],
        "number": colours["number"], "bottom-toolbar": colours["toolbar"],
    })
    return PromptSession(
        message=lambda: prompt_message(shell),
        history=history or InMemoryHistory(),
        auto_suggest=AutoSuggestFromHistory(),
        completer=ReplCompleter(shell),
        complete_while_typing=False,
        lexer=ReplLexer(),
        bottom_toolbar=lambda: toolbar_text(shell),
        multiline=True,
        prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
        key_bindings=_key_bindings(),
        vi_mode=config.vi,
        style=style,
        include_default_pygments_style=False,
        enable_history_search=False,  # Ctrl-R reverse search stays available
        input=input,
        output=output,
        refresh_interval=0.5,
    )


class BackgroundStart:
    """Runs the target's heavy start-up once the first prompt has been drawn."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.thread: threading.Thread | None = None

    def __call__(self, *_: object) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="repl-startup", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        shell = self.shell
        try:
            shell.target.start()
        except Exception as exc:
            shell.notice(f"Target failed to start: {exc}")
            return
        if shell.config.lm:
            # The configured default LM; its outcome shows in the toolbar, a failure as a notice.
            from bridge.registry import CONFIGURES_LM

            request = shell.request_for(command_for(CONFIGURES_LM), {"model": shell.config.lm})
            try:
                reply = shell.target.submit(request).result(60)
            except Exception as exc:
                shell.notice(f"Could not configure LM {shell.config.lm}: {exc}")
                return
            shell.observe(request, reply)
            if not reply.get("success"):
                shell.notice(f"Could not configure LM {shell.config.lm}: {reply.get('error')}",
                             "fix `lm` in the config file, or use :lm")


def run_console(shell: Shell, config: ReplConfig, history_path: str | None,
                input: Input | None = None, output: PTOutput | None = None) -> ExitStatus:
    """The read-eval-print loop; Ctrl-D (or :quit) leaves it."""
    if history_path:
        create_private_file(Path(history_path))
        redact_history_file(Path(history_path))
        trim_history(Path(history_path), config.history_size)
    history: History = RedactingFileHistory(history_path) if history_path else InMemoryHistory()
    shell.ask_secret = ask_secret
    shell.confirm = confirm
    shell.ask_line = ask_callback
    session = build_session(shell, config, history, input=input, output=output)
    start = BackgroundStart(shell)
    # after_render, not pre_run: the import of DSPy must not compete with the first draw.
    session.app.after_render += start
    while not shell.quit_requested:
        try:
            text = session.prompt()
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line, as in every shell
        except EOFError:
            break
        if text.strip():
            shell.handle(text)
    return ExitStatus.OK


def show_banner(shell: Shell, config: ReplConfig, env: Environment | None = None) -> None:
    """A one-line greeting; plain text, because rich is not imported yet."""
    stdout = env.stdout if env is not None else sys.stdout
    lines = [f"dspex repl · {shell.target.label()} · :help for commands, Ctrl-D to exit",
             *(f"config: {problem}" for problem in config.problems)]
    config.problems = []
    stdout.write("".join(line + "\n" for line in lines))
    stdout.flush()


__all__ = ["ReplLexer", "build_session", "run_console", "show_banner", "toolbar_text"]
