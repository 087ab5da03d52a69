"""`dspex serve`'s command-line options: one table, read by argparse and by a short path.

Every option is written once, in `SERVE_OPTIONS`; `build_parser` makes the argparse parser
(its `--help`, its errors, its hints for a near miss) from it. A pool spawns a worker with
a handful of plain long options (`--mode pool-worker --worker-id w1`), and importing and
building argparse (with gettext and locale behind it) is ~5 ms of a spawn's ~60 ms before
the first reply; so `parse_common` reads such a command line from the same table without
argparse, and gives up (returns None) at anything it is not sure argparse reads the same
way: an unknown or abbreviated option, a value that starts with `-`, a missing value, a
value argparse would refuse, `--help`. Then argparse parses, and speaks. That both read the
same is tested over generated command lines (tests/unit/test_serve_options.py).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..engine import DEFAULT_MAX_CONCURRENCY

if TYPE_CHECKING:
    import argparse

__all__ = ["DEFAULT_MAX_ASYNC", "ENVIRONMENT", "SERVE_EPILOG", "SERVE_HELP", "SERVE_OPTIONS", "ServeOption",
           "build_parser", "parse_args", "parse_common"]

# The asyncio lane's default limit (kept here, not imported: config must not load an adapter).
DEFAULT_MAX_ASYNC = 1024

SERVE_HELP = ("Run the port worker an Elixir app spawns: 4-byte length-prefixed JSON frames on "
              "stdin/stdout. Logs go to stderr; nothing but frames ever reaches stdout.")

# The worker's own variables and what each stands for; --help lists them from here.
ENVIRONMENT: Mapping[str, str] = {
    "DSPEX_PLUGINS": "plugin modules to import, comma-separated (added to --plugin)",
    "DSPEX_ADAPTERS": "adapters to serve, comma-separated (--adapters wins)",
    "DSPEX_ALLOW": "modules the python adapter may reach, comma-separated (added to --allow)",
    "DSPEX_RECORD": "transcript path (--record wins)",
    "DSPEX_RECORD_IGNORE": "JSON paths replay should not compare, written into the transcript's header",
    "DSPEX_ENTRY_POINT_ADAPTERS": "1/true/yes: also load adapters of the `dspex.adapters` entry point group",
    "DSPEX_LOG_LEVEL": "log level (--log-level wins)",
    "DSPEX_METRICS": "serve Prometheus /metrics on HOST:PORT (--metrics wins)",
    "DSPEX_REPLAY_CASSETTE": "set by `dspex replay --worker`: answer external calls from this cassette",
}

SERVE_EPILOG = """\
default LM:
  --lm MODEL (or DSPEX_LM) gives every worker of a pool its LM at start, so no
  configure_lm is needed; a configure_lm still overrides it, reset_state returns to it.
  It is built on first use (start-up stays fast). More settings from the environment:
    DSPEX_LM_API_BASE      base URL of an OpenAI-compatible server
    DSPEX_LM_TEMPERATURE   0..2
    DSPEX_LM_MAX_TOKENS    positive integer
    DSPEX_LM_TIMEOUT       seconds; bounds each whole LM call, retries included
    DSPEX_LM_NUM_RETRIES   0..10 (default 3)
  The API key comes from the provider's usual variable (OPENAI_API_KEY,
  ANTHROPIC_API_KEY, GEMINI_API_KEY, ...). An invalid value exits with status 2.

environment:
""" + "\n".join(f"  {name:<22} {meaning}" for name, meaning in ENVIRONMENT.items()) + """

lifecycle:
  End of input, `shutdown`, SIGTERM/SIGINT/SIGHUP and the parent's death end the worker.
  In-flight work gets --drain-timeout seconds after shutdown or a signal (0.5 s after
  end of input or the parent's death); each request still unfinished then is answered
  with error_type "shutting_down" before the worker exits. A second signal exits at once.

This is a port worker, not a console: for an interactive session run `dspex repl`.
An unknown option exits with status 2."""


class ServeOption:
    """One option: its flag, where its value goes, what argparse is told about it."""

    __slots__ = ("flag", "dest", "action", "type", "default", "choices", "const", "metavar", "help")

    def __init__(self, flag: str, help: str, *, dest: str | None = None, action: str = "store",
                 type: Callable[[str], Any] | None = None, default: Any = None,
                 choices: Sequence[str] | None = None, const: Any = None, metavar: str | None = None) -> None:
        self.flag = flag
        self.help = help
        self.dest = dest or flag[2:].replace("-", "_")
        self.action = action  # store | append | store_false | store_const (argparse's names)
        self.type = type
        self.default = default
        self.choices = choices
        self.const = const
        self.metavar = metavar

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        settings: dict[str, Any] = {"dest": self.dest, "action": self.action, "help": self.help}
        if self.action in ("store", "append"):
            settings.update(default=[] if self.action == "append" else self.default, metavar=self.metavar)
            if self.type is not None:
                settings["type"] = self.type
            if self.choices is not None:
                settings["choices"] = list(self.choices)
                settings.pop("metavar")
        elif self.action == "store_const":
            settings["const"] = self.const
        parser.add_argument(self.flag, **settings)

    def takes_value(self) -> bool:
        return self.action in ("store", "append")


SERVE_OPTIONS: tuple[ServeOption, ...] = (
    ServeOption("--mode", "standalone bridge or pool worker (as DSPex passes it)",
                choices=("standalone", "pool-worker"), default="standalone"),
    ServeOption("--worker-id", "id reported in replies, logs and inspect", metavar="ID"),
    ServeOption("--lm", "default LM of this worker, e.g. openai/gpt-4o-mini (also DSPEX_LM; see below)",
                metavar="MODEL"),
    ServeOption("--max-concurrency", f"requests handled at once (default {DEFAULT_MAX_CONCURRENCY})",
                type=int, metavar="N"),
    ServeOption("--max-async", "LM-bound requests (execute_program) in flight at once on the asyncio lane, "
                f"apart from the thread pool (default {DEFAULT_MAX_ASYNC})",
                type=int, default=DEFAULT_MAX_ASYNC, metavar="N"),
    ServeOption("--max-frame-size", "largest accepted frame in bytes (default 64 MiB)", type=int, metavar="BYTES"),
    ServeOption("--plugin", "import MODULE to register its commands (repeatable; also DSPEX_PLUGINS)",
                action="append", metavar="MODULE"),
    ServeOption("--adapters", "serve only these framework adapters, comma-separated (default: all; "
                "also DSPEX_ADAPTERS); e.g. a plugin's own adapter without DSPy", metavar="NAMES"),
    ServeOption("--allow", "let the python adapter reach MODULE, or a `pkg.*` prefix (repeatable; "
                "also DSPEX_ALLOW, comma-separated); nothing is reachable without it",
                action="append", metavar="MODULE"),
    ServeOption("--record", "write a transcript to PATH (file or directory; also DSPEX_RECORD)", metavar="PATH"),
    ServeOption("--control", "control socket for dspex inspect and repl --attach",
                choices=("on", "read-only", "off"), default="on"),
    ServeOption("--no-control", "same as --control off", dest="control", action="store_const", const="off"),
    ServeOption("--drain-timeout", "seconds in-flight work may take after shutdown or a signal; "
                "what is left then gets a shutting_down error reply (default 30)",
                type=float, default=30.0, metavar="SECONDS"),
    ServeOption("--no-warm", "do not warm the adapters up (DSPy's import) in the background after the first "
                "request", dest="warm", action="store_false"),
    ServeOption("--log-level", "debug, info, warning (default) or error; also DSPEX_LOG_LEVEL", metavar="LEVEL"),
    ServeOption("--metrics", "serve Prometheus text at http://HOST:PORT/metrics (host defaults to 127.0.0.1; "
                "a non-loopback host must be written out and is warned about; also DSPEX_METRICS)",
                metavar="HOST:PORT"),
)

_BY_FLAG: dict[str, ServeOption] = {option.flag: option for option in SERVE_OPTIONS}


def _defaults() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in SERVE_OPTIONS:
        if option.action == "append":
            values[option.dest] = []
        elif option.action == "store_false":
            values.setdefault(option.dest, True)
        elif option.action == "store":
            values[option.dest] = option.default
    return values


def parse_common(argv: Sequence[str]) -> types.SimpleNamespace | None:
    """The options of a command line made only of known long options with plain values,
    as argparse would read them; None for anything else (argparse must decide)."""
    values = _defaults()
    tokens = iter(argv)
    for token in tokens:
        name, equals, attached = token.partition("=")
        option = _BY_FLAG.get(name)
        if option is None:  # unknown, abbreviated, positional, `--`, `--help`, `-x`: argparse
            return None
        if not option.takes_value():
            if equals:
                return None  # argparse refuses a value for a flag
            values[option.dest] = False if option.action == "store_false" else option.const
            continue
        if equals:
            text = attached
        else:
            text = next(tokens, None)
            if text is None:
                return None
        if not text or text.startswith("-"):
            return None  # argparse's reading of dashes (negative numbers, options) is its own
        try:
            value = option.type(text) if option.type is not None else text
        except ValueError:
            return None
        if option.choices is not None and value not in option.choices:
            return None
        if option.action == "append":
            values[option.dest].append(value)
        else:
            values[option.dest] = value
    return types.SimpleNamespace(**values)


class _ParserHints:
    """What `dspex serve`'s parser adds to argparse: the closest known option for an unknown one."""

    def error(self, message: str) -> Any:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            import difflib  # only for a mistyped option: not worth its import on every start

            known = [o for o in self._option_string_actions if o.startswith("--")]  # type: ignore[attr-defined]
            hints = []
            for word in message[len(prefix):].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
                    if close:
                        hints.append(f"{word.split('=', 1)[0]}: did you mean {close[0]}?")
            if hints:
                message = message + "\n" + "\n".join(hints)
        return super().error(message)  # type: ignore[misc]


def build_parser() -> argparse.ArgumentParser:
    """argparse's parser of `dspex serve` (help, errors), made from SERVE_OPTIONS."""
    import argparse

    class ServeParser(_ParserHints, argparse.ArgumentParser):
        pass

    parser = ServeParser(prog="dspex serve", description=SERVE_HELP, epilog=SERVE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    for option in SERVE_OPTIONS:
        option.add_to(parser)
    return parser


def parse_args(argv: Sequence[str]) -> Any:
    """The options of `argv`: by the short path when it is sure, else by argparse (which
    exits 2 with its message for a command line it refuses, and 0 after `--help`)."""
    options = parse_common(argv)
    if options is None:
        options = build_parser().parse_args(list(argv))
    return options


def refuse(message: str) -> Any:
    """Exits 2 with argparse's usage line and `message`, as a refused option does."""
    return build_parser().error(message)
