"""Chooses the target and the mode (terminal or pipe) and runs the console."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspex_cli.env import Environment
from dspex_cli.exit_status import ExitStatus, UserError, run_guarded

from .config import WORKER_LOGS_KEPT, ModelMemory, create_private_file, load_config, prune_worker_logs, secure_state_dir, state_dir
from .targets import AttachTarget, InProcessTarget, SpawnTarget, Target


USAGE = """dspex repl [--attach WORKER [--read-only] | --spawn CMD] [--session ID] [--lm MODEL]
                  [--json] [--yes] [--config FILE] [--no-history] [--plugin MODULE ...] [--tools FILE]

An interactive console for DSPy through the bridge. On a terminal: completion, history
(Ctrl-R), Ctrl-C cancels a running call, Ctrl-D exits; :help lists everything. With stdin
not a terminal, one command per line in and one JSON reply per line out:
    printf 'ping\\n' | dspex repl
"""


@dataclass
class ReplOptions:
    attach: str | None = None
    spawn: str | None = None
    session: str | None = None
    lm: str | None = None
    json: bool = False
    config_path: Path | None = None
    no_history: bool = False
    plugins: list[str] = field(default_factory=list)
    read_only: bool = False
    assume_yes: bool = False
    tools: Path | None = None


class LazyRichOutput:
    """Imports rich on the first output, so it costs nothing before the first prompt."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            from .render import RichOutput

            self._real = RichOutput(env=self._env)
        return getattr(self._real, name)


def parse_args(argv: list[str]) -> ReplOptions:
    """The command line of `dspex repl` (argparse: typer would cost start-up time)."""
    import argparse

    parser = argparse.ArgumentParser(prog="dspex repl", usage=USAGE, description=None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--attach", "-a", metavar="WORKER",
                        help="run commands in a live worker (pid, worker id or socket path)")
    target.add_argument("--spawn", metavar="CMD",
                        help='start a worker command, talk to it over the port framing (e.g. "dspex serve")')
    parser.add_argument("--read-only", action="store_true",
                        help="with --attach: send only commands that read (list_*, get_*, ping, execute_program)")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="answer yes to confirmations (destructive commands, :replay --into-attached)")
    parser.add_argument("--session", "-s", metavar="ID", help="the session to start in")
    parser.add_argument("--lm", metavar="MODEL", help="configure this LM at start-up (e.g. mock)")
    parser.add_argument("--json", action="store_true", help="show requests and replies as raw JSON")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config file (default: XDG config dir)")
    parser.add_argument("--no-history", action="store_true", help="do not read or write the history file")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also load this plugin module's commands (repeatable; $DSPEX_PLUGINS too)")
    parser.add_argument("--tools", type=Path, metavar="FILE",
                        help="a Python file whose functions answer client tools and metrics by name "
                             "(else the console asks by hand)")
    ns = parser.parse_args(argv)
    if ns.read_only and not ns.attach:
        parser.error("--read-only needs --attach WORKER (it guards a live worker)")
    return ReplOptions(attach=ns.attach, spawn=ns.spawn, session=ns.session, lm=ns.lm, json=ns.json,
                       config_path=ns.config, no_history=ns.no_history, plugins=ns.plugin,
                       read_only=ns.read_only, assume_yes=ns.yes, tools=ns.tools)


def execute(argv: list[str], env: Environment) -> int:
    """Parses the options and runs the console in `env`, inside the CLI's error boundary."""
    try:
        # argparse prints --help and its usage errors on sys.stdout/sys.stderr itself.
        with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
            options = parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return ExitStatus.of_exit_code(exc.code)
    return run_guarded("dspex repl", lambda: run(options, env), env)


def main(argv: list[str], env: Environment | None = None) -> int:
    """Runs the console and leaves the process at once with its exit status."""
    environment = env or Environment.from_process()
    code = execute(argv, environment)
    # Leave at once: a daemon thread still importing DSPy, or one of LiteLLM's threads,
    # would otherwise abort or stall the interpreter's shutdown.
    for stream in (environment.stdout, environment.stderr, sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone, or a closed stream: nothing left to say
            pass
    os._exit(code)


def make_target(options: ReplOptions, log_dir: Path) -> Target:
    if options.attach and options.spawn:
        raise UserError("use either --attach or --spawn, not both")
    if options.attach:
        return AttachTarget(options.attach)
    if options.spawn:
        # Each console leaves its worker's log behind; only the last few are worth keeping.
        prune_worker_logs(log_dir, keep=WORKER_LOGS_KEPT - 1)
        return SpawnTarget(options.spawn, log_dir / f"spawned-worker-{os.getpid()}.log")
    return InProcessTarget()


def _setup_logging(interactive: bool, log_dir: Path, env: Environment) -> None:
    # On a terminal, library warnings (DSPy, LiteLLM) would scribble over the prompt.
    if interactive:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            create_private_file(log_dir / "repl.log")
            handler: logging.Handler = logging.FileHandler(log_dir / "repl.log")
        except OSError:
            handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(env.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("DSPEX_LOG_LEVEL", "WARNING").upper())
    logging.captureWarnings(True)


def run(options: ReplOptions, env: Environment | None = None) -> int:
    """The console on a terminal, JSON lines otherwise; its exit status."""
    env = env or Environment.from_process()
    interactive = env.interactive
    config = load_config(options.config_path)
    if options.session:
        config.session = options.session
    if options.lm:
        config.lm = options.lm
    if options.json:
        config.json = True
    states = state_dir()
    try:
        secure_state_dir(states)
    except OSError as exc:
        env.error_line("dspex repl", f"cannot secure {states}: {exc.strerror or exc}")
    _setup_logging(interactive, states, env)
    from .parsing import use_plugins

    use_plugins(options.plugins)
    functions = _tool_functions(options)
    target = make_target(options, states)  # a UserError ends the command in the boundary
    models = ModelMemory(states / "repl_models.json")
    if not interactive:
        for problem in config.problems:
            env.error_line("dspex repl", f"config: {problem}")
        config.problems = []
        return _pipe(target, config, models, config.lm or None, options, env, functions)
    from .app import run_console, show_banner
    from .shell import Shell

    shell = Shell(target, LazyRichOutput(env), config=config, models=models, interactive=True,
                  read_only=options.read_only, assume_yes=options.assume_yes)
    shell.callbacks.functions.update(functions)
    history_path = None
    if not options.no_history:
        try:
            states.mkdir(parents=True, exist_ok=True)
            history_path = str(states / "repl_history")
        except OSError:
            history_path = None
    show_banner(shell, config, env)
    try:
        return run_console(shell, config, history_path)
    finally:
        shell.close()


def _tool_functions(options: ReplOptions) -> dict[str, Any]:
    if options.tools is None:
        return {}
    from .callbacks import ToolsFileError, load_tools_file

    try:
        return load_tools_file(options.tools)
    except ToolsFileError as exc:
        raise UserError(str(exc)) from None


def _pipe(target: Target, config: Any, models: ModelMemory, lm: str | None, options: ReplOptions,
          env: Environment, functions: dict[str, Any]) -> int:
    from .pipe import JsonLinesOutput, run_pipe
    from .shell import Shell

    shell = Shell(target, JsonLinesOutput(env.stdout, env.stderr), config=config, models=models,
                  read_only=options.read_only, assume_yes=options.assume_yes)
    shell.callbacks.functions.update(functions)
    try:
        if lm:
            # Same as typing `:lm MODEL` first, so its reply is the first line of output.
            shell.handle(f":lm {lm}")
        return run_pipe(shell, env.stdin)
    finally:
        shell.close()
