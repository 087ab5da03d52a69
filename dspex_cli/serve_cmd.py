"""Options of `dspex serve`, parsed with argparse to keep the worker's start fast."""

from __future__ import annotations

import argparse
import os
import sys

SERVE_HELP = ("Run the port worker an Elixir app spawns: 4-byte length-prefixed JSON frames on "
              "stdin/stdout. Logs go to stderr; nothing but frames ever reaches stdout.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dspex serve", description=SERVE_HELP)
    parser.add_argument("--mode", choices=["standalone", "pool-worker"], default="standalone",
                        help="standalone bridge or pool worker (as DSPex passes it)")
    parser.add_argument("--worker-id", help="id reported in replies, logs and inspect")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="requests handled at once (default 64)")
    parser.add_argument("--max-frame-size", type=int, default=None,
                        help="largest accepted frame in bytes (default 64 MiB)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE to register its commands (repeatable; also DSPEX_PLUGINS)")
    parser.add_argument("--record", metavar="PATH",
                        help="write a transcript to PATH (file or directory; also DSPEX_RECORD)")
    parser.add_argument("--control", choices=["on", "read-only", "off"], default="on",
                        help="control socket for dspex inspect and repl --attach")
    parser.add_argument("--no-control", dest="control", action="store_const", const="off",
                        help="same as --control off")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds in-flight work may take after shutdown or SIGTERM")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="do not import DSPy in the background after the first request")
    parser.add_argument("--log-level", default=None,
                        help="debug, info, warning (default) or error; also DSPEX_LOG_LEVEL")
    return parser


def run_serve(argv: list[str], protocol_fd: int, parent_pid: int | None = None) -> int:
    """Parses options and runs the worker until its input ends or it is told to stop."""
    parser = build_parser()
    # Unknown flags are tolerated: older DSPex versions pass options of their own.
    options, unknown = parser.parse_known_args(argv)
    from bridge.server import Server, ServeConfig, configure_logging, load_plugins

    configure_logging(options.log_level)
    import logging

    log = logging.getLogger("dspex.serve")
    if unknown:
        log.info("ignoring unknown arguments: %s", " ".join(unknown))
    config = ServeConfig(mode=options.mode, worker_id=options.worker_id, plugins=options.plugin,
                         record=options.record, control=options.control,
                         drain_timeout=options.drain_timeout, warm=options.warm, argv=list(argv),
                         parent_pid=parent_pid)
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
    return Server(config, protocol_fd).run()
