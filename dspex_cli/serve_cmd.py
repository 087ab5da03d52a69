"""`dspex serve`: reads its config (bridge.serve.config) and runs the worker.

Kept free of typer: the worker is spawned for every pool member, and its start-up is
measured (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from bridge.serve.config import SERVE_HELP, ConfigError, build_parser, read_config

__all__ = ["SERVE_HELP", "build_parser", "dspy_serve_options", "run_serve"]


def dspy_serve_options(options: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """The DSPy adapter's settings: its default LM from --lm and DSPEX_LM_* (None without one).
    `options` are the parsed options (bridge.serve.options: argparse's or the short path's).

    Raises the parser's LMConfigError (a ValueError naming the variable) for a bad value.
    """
    if (options.lm is None or not options.lm.strip()) and not any(
            name.startswith("DSPEX_LM") and value.strip() for name, value in environ.items()):
        # No LM named anywhere (the usual pool worker): the LM parser's module, a tenth of
        # the time to the first reply, is not needed. Any DSPEX_LM* variable goes to the
        # parser, which alone knows their names (lm_config.STARTUP_LM_ENV) and their errors.
        return {"startup_lm": None, "max_async": options.max_async}
    from bridge.adapters.dspy.lm_config import LMConfigError, startup_lm_config

    try:
        return {"startup_lm": startup_lm_config(options.lm, environ), "max_async": options.max_async}
    except LMConfigError as exc:
        raise ConfigError(f"invalid default LM: {exc}") from None


def run_serve(argv: list[str], protocol_fd: int, parent_pid: int | None = None) -> int:
    """Reads the options and runs the worker until its input ends or it is told to stop."""
    try:
        config = read_config(argv, os.environ, parent_pid=parent_pid,
                             adapter_readers={"dspy": dspy_serve_options})
    except ConfigError as exc:
        print(f"dspex serve: {exc}", file=sys.stderr)
        return 2
    if os.isatty(0):
        # Typed text would be read as a frame header ("hell" = a 1.7 GB frame).
        print("dspex serve: this is a port worker speaking length-prefixed JSON frames on stdin/stdout, "
              "started by an Elixir app; for an interactive console run `dspex repl`", file=sys.stderr)
        return 2
    from bridge.redact import remember_secret

    startup_lm = config.adapter_options["dspy"]["startup_lm"]
    if startup_lm is not None:
        remember_secret(startup_lm.api_key)
    from bridge.serve.server import Server, UnknownAdapter, configure_logging, load_plugins

    configure_logging(config.log_level)
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
