"""The one reader of `dspex serve`'s options and `DSPEX_*` variables.

Everything a worker is told at start, by flag or by environment, is read here once, into one
`ServeConfig`; nothing else in the worker looks at `os.environ` for its settings. A flag wins
over its variable; list-valued settings (plugins, allowed modules) take both.

Adapter-specific settings (the DSPy adapter's default LM from `--lm` / `DSPEX_LM_*`) are read
by an `AdapterOptionReader` the caller hands in, so this module names no adapter's code; each
reader's result lands in `ServeConfig.adapter_options[name]`, which the adapter receives in
`configure_from_serve`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ..engine import DEFAULT_MAX_CONCURRENCY
from ..plain_record import PlainRecord
from ..wire.framing import DEFAULT_MAX_FRAME

# The asyncio lane's default limit (kept here, not imported: config must not load an adapter).
DEFAULT_MAX_ASYNC = 1024

__all__ = ["AdapterOptionReader", "ConfigError", "ENVIRONMENT", "ServeConfig", "build_parser", "read_config",
           "split_list"]

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


# What a yes/no variable must say to mean yes (anything else, unset included, is no).
TRUE_WORDS = frozenset({"1", "true", "yes"})


class ConfigError(ValueError):
    """A setting the worker cannot start with; `dspex serve` prints it and exits 2."""


class ServeConfig(PlainRecord):
    """Everything `dspex serve` was told at start (a plain record, see bridge.plain_record)."""

    _fields = ("mode", "worker_id", "max_concurrency", "max_async", "max_frame_size", "plugins", "record",
               "control", "drain_timeout", "warm", "metrics", "argv", "parent_pid", "log_level", "replay_cassette",
               "adapter_options", "adapters", "record_ignore", "entry_point_adapters")

    mode: str
    worker_id: str | None
    max_concurrency: int
    # LM-bound requests (execute_program) in flight at once on the asyncio lane, apart from the pool.
    max_async: int
    max_frame_size: int
    plugins: list[str]
    record: str | None
    control: str  # on | read-only | off
    drain_timeout: float
    warm: bool
    metrics: str | None  # HOST:PORT of /metrics; None: not served
    argv: list[str]
    parent_pid: int | None  # noted at process start; None means "now"
    log_level: str
    # Set by `dspex replay --worker`: external calls are answered from this cassette.
    replay_cassette: str | None
    # Per adapter, what it takes from the command line (DSPy: "startup_lm", the LMConfig of
    # --lm / DSPEX_LM; python: "allow", the --allow / DSPEX_ALLOW list). Handed to each
    # adapter's `configure_from_serve`.
    adapter_options: dict[str, dict[str, Any]]
    # Names of the adapters to serve; None serves every known one (DSPy, entry points, plugins').
    adapters: list[str] | None
    # Reply paths a recording's header tells replay to leave uncompared (DSPEX_RECORD_IGNORE).
    record_ignore: list[str]
    # Whether the `dspex.adapters` entry point group is scanned: off by default, because
    # scanning every installed distribution costs start-up time (DSPEX_ENTRY_POINT_ADAPTERS).
    entry_point_adapters: bool

    def __init__(self, mode: str = "standalone", worker_id: str | None = None,
                 max_concurrency: int = DEFAULT_MAX_CONCURRENCY, max_async: int = DEFAULT_MAX_ASYNC,
                 max_frame_size: int = DEFAULT_MAX_FRAME, plugins: list[str] | None = None, record: str | None = None,
                 control: str = "on", drain_timeout: float = 30.0, warm: bool = True, metrics: str | None = None,
                 argv: list[str] | None = None, parent_pid: int | None = None, log_level: str = "warning",
                 replay_cassette: str | None = None, adapter_options: dict[str, dict[str, Any]] | None = None,
                 adapters: list[str] | None = None, record_ignore: list[str] | None = None,
                 entry_point_adapters: bool = False) -> None:
        # None for a list or dict stands for a fresh empty one (`adapters` excepted: None there
        # means "every adapter").
        self.mode = mode
        self.worker_id = worker_id
        self.max_concurrency = max_concurrency
        self.max_async = max_async
        self.max_frame_size = max_frame_size
        self.plugins = [] if plugins is None else plugins
        self.record = record
        self.control = control
        self.drain_timeout = drain_timeout
        self.warm = warm
        self.metrics = metrics
        self.argv = [] if argv is None else argv
        self.parent_pid = parent_pid
        self.log_level = log_level
        self.replay_cassette = replay_cassette
        self.adapter_options = {} if adapter_options is None else adapter_options
        self.adapters = adapters
        self.record_ignore = [] if record_ignore is None else record_ignore
        self.entry_point_adapters = entry_point_adapters


# Reads one adapter's settings from the parsed flags and the environment; raises
# ConfigError (or a ValueError, whose message is shown) for a value it cannot take.
AdapterOptionReader = Callable[[argparse.Namespace, Mapping[str, str]], dict[str, Any]]


class ServeParser(argparse.ArgumentParser):
    """argparse that names the closest known option when it meets an unknown one."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            import difflib  # only for a mistyped option: not worth its import on every start

            known = [o for o in self._option_string_actions if o.startswith("--")]
            hints = []
            for word in message[len(prefix):].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
                    if close:
                        hints.append(f"{word.split('=', 1)[0]}: did you mean {close[0]}?")
            if hints:
                message = message + "\n" + "\n".join(hints)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = ServeParser(prog="dspex serve", description=SERVE_HELP, epilog=SERVE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--mode", choices=["standalone", "pool-worker"], default="standalone",
                        help="standalone bridge or pool worker (as DSPex passes it)")
    parser.add_argument("--worker-id", metavar="ID", help="id reported in replies, logs and inspect")
    parser.add_argument("--lm", metavar="MODEL",
                        help="default LM of this worker, e.g. openai/gpt-4o-mini (also DSPEX_LM; see below)")
    parser.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                        help="requests handled at once (default 64)")
    parser.add_argument("--max-async", type=int, default=DEFAULT_MAX_ASYNC, metavar="N",
                        help=f"LM-bound requests (execute_program) in flight at once on the asyncio lane, "
                             f"apart from the thread pool (default {DEFAULT_MAX_ASYNC})")
    parser.add_argument("--max-frame-size", type=int, default=None, metavar="BYTES",
                        help="largest accepted frame in bytes (default 64 MiB)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE to register its commands (repeatable; also DSPEX_PLUGINS)")
    parser.add_argument("--adapters", metavar="NAMES",
                        help="serve only these framework adapters, comma-separated (default: all; "
                             "also DSPEX_ADAPTERS); e.g. a plugin's own adapter without DSPy")
    parser.add_argument("--allow", action="append", default=[], metavar="MODULE",
                        help="let the python adapter reach MODULE, or a `pkg.*` prefix (repeatable; "
                             "also DSPEX_ALLOW, comma-separated); nothing is reachable without it")
    parser.add_argument("--record", metavar="PATH",
                        help="write a transcript to PATH (file or directory; also DSPEX_RECORD)")
    parser.add_argument("--control", choices=["on", "read-only", "off"], default="on",
                        help="control socket for dspex inspect and repl --attach")
    parser.add_argument("--no-control", dest="control", action="store_const", const="off",
                        help="same as --control off")
    parser.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="seconds in-flight work may take after shutdown or a signal; "
                             "what is left then gets a shutting_down error reply (default 30)")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="do not warm the adapters up (DSPy's import) in the background after the first request")
    parser.add_argument("--log-level", default=None, metavar="LEVEL",
                        help="debug, info, warning (default) or error; also DSPEX_LOG_LEVEL")
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT",
                        help="serve Prometheus text at http://HOST:PORT/metrics (host defaults to 127.0.0.1; "
                             "a non-loopback host must be written out and is warned about; also DSPEX_METRICS)")
    return parser


def split_list(text: str | None) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]`: the comma-separated form of every list variable."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _merged(flags: list[str], variable: str | None) -> list[str]:
    """Flags first, then the variable's items, each once, in order."""
    return list(dict.fromkeys([*flags, *split_list(variable)]))


def read_config(argv: list[str], environ: Mapping[str, str], parent_pid: int | None = None,
                adapter_readers: Mapping[str, AdapterOptionReader] | None = None) -> ServeConfig:
    """Parses `dspex serve`'s options and reads its variables into one ServeConfig.

    An unknown option or a malformed value exits 2 through argparse (with a hint for a
    near miss: a misspelt --record must not silently record nothing); a value that parses
    but cannot be used raises ConfigError.
    """
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.drain_timeout < 0:
        parser.error("--drain-timeout must not be negative")
    if options.max_concurrency is not None and options.max_concurrency < 1:
        parser.error("--max-concurrency must be at least 1")
    if options.max_async < 1:
        parser.error("--max-async must be at least 1")
    if options.max_frame_size is not None and options.max_frame_size < 16:
        parser.error("--max-frame-size must be at least 16 bytes")
    wanted = options.adapters if options.adapters is not None else environ.get("DSPEX_ADAPTERS")
    config = ServeConfig(
        mode=options.mode, worker_id=options.worker_id,
        max_concurrency=options.max_concurrency or DEFAULT_MAX_CONCURRENCY,
        max_async=options.max_async, max_frame_size=options.max_frame_size or DEFAULT_MAX_FRAME,
        plugins=_merged(options.plugin, environ.get("DSPEX_PLUGINS")),
        record=options.record or environ.get("DSPEX_RECORD") or None,
        control=options.control, drain_timeout=options.drain_timeout, warm=options.warm,
        metrics=options.metrics or environ.get("DSPEX_METRICS") or None,
        argv=list(argv), parent_pid=parent_pid,
        log_level=(options.log_level or environ.get("DSPEX_LOG_LEVEL") or "warning").lower(),
        replay_cassette=environ.get("DSPEX_REPLAY_CASSETTE") or None,
        adapters=split_list(wanted) or None,
        record_ignore=split_list(environ.get("DSPEX_RECORD_IGNORE")),
        entry_point_adapters=environ.get("DSPEX_ENTRY_POINT_ADAPTERS", "").strip().lower() in TRUE_WORDS,
        adapter_options={"python": {"allow": _merged(options.allow, environ.get("DSPEX_ALLOW"))}},
    )
    if config.metrics is not None:
        from ..control.metrics import MetricsAddressError, parse_address

        try:
            parse_address(config.metrics)
        except MetricsAddressError as exc:
            raise ConfigError(str(exc)) from None
    for name, reader in (adapter_readers or {}).items():
        try:
            config.adapter_options.setdefault(name, {}).update(reader(options, environ))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return config
