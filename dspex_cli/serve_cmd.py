"""Options of `dspex serve`, parsed with argparse to keep the worker's start fast."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import NoReturn

SERVE_HELP = ("Run the port worker an Elixir app spawns: 4-byte length-prefixed JSON frames on "
              "stdin/stdout. Logs go to stderr; nothing but frames ever reaches stdout.")

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

lifecycle:
  End of input, `shutdown`, SIGTERM/SIGINT/SIGHUP and the parent's death end the worker.
  In-flight work gets --drain-timeout seconds after shutdown or a signal (0.5 s after
  end of input or the parent's death); each request still unfinished then is answered
  with error_type "shutting_down" before the worker exits. A second signal exits at once.

This is a port worker, not a console: for an interactive session run `dspex repl`.
An unknown option exits with status 2."""


class ServeParser(argparse.ArgumentParser):
    """argparse that names the closest known option when it meets an unknown one."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
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
    parser.add_argument("--max-frame-size", type=int, default=None, metavar="BYTES",
                        help="largest accepted frame in bytes (default 64 MiB)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE to register its commands (repeatable; also DSPEX_PLUGINS)")
    parser.add_argument("--adapters", metavar="NAMES",
                        help="serve only these framework adapters, comma-separated (default: all; "
                             "also DSPEX_ADAPTERS); e.g. a plugin's own adapter without DSPy")
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
                        help="do not import DSPy in the background after the first request")
    parser.add_argument("--log-level", default=None, metavar="LEVEL",
                        help="debug, info, warning (default) or error; also DSPEX_LOG_LEVEL")
    return parser


def run_serve(argv: list[str], protocol_fd: int, parent_pid: int | None = None) -> int:
    """Parses options and runs the worker until its input ends or it is told to stop."""
    parser = build_parser()
    # Unknown options exit 2 with a hint: a misspelt --record must not silently record nothing.
    options = parser.parse_args(argv)
    if os.isatty(0):
        # Typed text would be read as a frame header ("hell" = a 1.7 GB frame).
        print("dspex serve: this is a port worker speaking length-prefixed JSON frames on stdin/stdout, "
              "started by an Elixir app; for an interactive console run `dspex repl`", file=sys.stderr)
        return 2
    if options.drain_timeout < 0:
        parser.error("--drain-timeout must not be negative")
    from bridge.adapters.dspy.lm_config import LMConfigError, startup_lm_config
    from bridge.redact import remember_secret

    try:
        lm_config = startup_lm_config(options.lm, os.environ)
    except LMConfigError as exc:
        print(f"dspex serve: invalid default LM: {exc}", file=sys.stderr)
        return 2
    if lm_config is not None:
        remember_secret(lm_config.api_key)
    from bridge.server import Server, ServeConfig, UnknownAdapter, configure_logging, load_plugins

    configure_logging(options.log_level)
    config = ServeConfig(mode=options.mode, worker_id=options.worker_id, plugins=options.plugin,
                         record=options.record, control=options.control,
                         drain_timeout=options.drain_timeout, warm=options.warm, argv=list(argv),
                         parent_pid=parent_pid,
                         adapter_options={"dspy": {"startup_lm": lm_config}})
    wanted = options.adapters if options.adapters is not None else os.environ.get("DSPEX_ADAPTERS")
    if wanted:
        config.adapters = [name.strip() for name in wanted.split(",") if name.strip()]
    if options.max_concurrency is not None:
        if options.max_concurrency < 1:
            parser.error("--max-concurrency must be at least 1")
        config.max_concurrency = options.max_concurrency
    if options.max_frame_size is not None:
        if options.max_frame_size < 16:
            parser.error("--max-frame-size must be at least 16 bytes")
        config.max_frame_size = options.max_frame_size
    try:
        load_plugins(config.plugins)
    except Exception as exc:  # a broken plugin must say so plainly, not with a traceback
        print(f"dspex serve: cannot load plugin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        server = Server(config, protocol_fd)
    except UnknownAdapter as exc:
        print(f"dspex serve: {exc}", file=sys.stderr)
        return 2
    return server.run()
