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

from collections.abc import Callable, Mapping
from typing import Any

from ..engine import DEFAULT_MAX_CONCURRENCY
from ..plain_record import PlainRecord
from ..wire.framing import DEFAULT_MAX_FRAME
# The option table and its parsers; the help texts and the asyncio lane's default limit
# are re-exported for the modules that have always read them here.
from .options import DEFAULT_MAX_ASYNC, ENVIRONMENT, SERVE_HELP, build_parser, parse_args, refuse

__all__ = ["AdapterOptionReader", "ConfigError", "DEFAULT_MAX_ASYNC", "ENVIRONMENT", "SERVE_HELP", "ServeConfig",
           "build_parser", "read_config", "split_list"]

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


# Reads one adapter's settings from the parsed options (attributes named as in
# options.SERVE_OPTIONS) and the environment; raises ConfigError (or a ValueError, whose
# message is shown) for a value it cannot take.
AdapterOptionReader = Callable[[Any, Mapping[str, str]], dict[str, Any]]


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
    options = parse_args(argv)
    if options.drain_timeout < 0:
        refuse("--drain-timeout must not be negative")
    if options.max_concurrency is not None and options.max_concurrency < 1:
        refuse("--max-concurrency must be at least 1")
    if options.max_async < 1:
        refuse("--max-async must be at least 1")
    if options.max_frame_size is not None and options.max_frame_size < 16:
        refuse("--max-frame-size must be at least 16 bytes")
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
