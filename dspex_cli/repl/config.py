"""The console's configuration file and the places it keeps state.

`$XDG_CONFIG_HOME/dspex/repl.toml` is written on first run with every setting present
but commented out, so a user sees what can be changed without reading docs. History and
the models used before live under `$XDG_STATE_HOME/dspex/`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_COLOURS: dict[str, str] = {
    "prompt": "ansicyan bold",
    "command": "ansigreen bold",
    "meta": "ansimagenta bold",
    "unknown": "ansired",
    "key": "ansicyan",
    "string": "ansiyellow",
    "number": "ansiblue",
    "toolbar": "bg:#303030 #d0d0d0",
}

DEFAULT_CONFIG_TEXT = """\
# dspex repl configuration (written on first run; every line below is a default).
# Uncomment a line to change it. Colours use prompt_toolkit style strings.

[repl]
# key_bindings = "emacs"      # or "vi"
# session = "anonymous"       # the session commands run in at start-up
# lm = ""                     # an LM configured at start-up, e.g. "mock"
# timing = true               # show how long each call took
# json = false                # show requests and replies as raw JSON
# history_size = 10000        # entries kept in the history file

[colors]
# prompt = "ansicyan bold"
# command = "ansigreen bold"
# meta = "ansimagenta bold"
# unknown = "ansired"
# key = "ansicyan"
# string = "ansiyellow"
# number = "ansiblue"
# toolbar = "bg:#303030 #d0d0d0"
"""


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "dspex"


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "dspex"


@dataclass
class ReplConfig:
    key_bindings: str = "emacs"
    session: str = "anonymous"
    lm: str = ""
    timing: bool = True
    json: bool = False
    history_size: int = 10000
    colours: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOURS))
    path: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def vi(self) -> bool:
        return self.key_bindings.lower() == "vi"


def load_config(path: Path | None = None, write_defaults: bool = True) -> ReplConfig:
    """Reads the config file, writing the commented defaults first if there is none.

    A broken file never stops the console: its problems are listed and defaults used.
    """
    path = path or config_dir() / "repl.toml"
    config = ReplConfig(path=path)
    if not path.exists():
        if write_defaults:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(DEFAULT_CONFIG_TEXT)
            except OSError as exc:
                config.problems.append(f"cannot write {path}: {exc.strerror or exc}")
        return config
    try:
        data = _read_toml(path.read_text())
    except (OSError, ValueError) as exc:
        config.problems.append(f"{path}: {exc}; using defaults")
        return config
    _apply(config, data)
    return config


def _read_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    try:
        import tomli  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ValueError("reading the config needs Python 3.11 or the tomli package") from exc
    return tomli.loads(text)


def _apply(config: ReplConfig, data: dict[str, Any]) -> None:
    section = data.get("repl") or {}
    expected: dict[str, type] = {"key_bindings": str, "session": str, "lm": str, "timing": bool,
                                 "json": bool, "history_size": int}
    for key, value in section.items():
        kind = expected.get(key)
        if kind is None:
            config.problems.append(f"[repl] {key}: unknown setting")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            config.problems.append(f"[repl] {key}: expected {kind.__name__}")
        else:
            setattr(config, key, value)
    if config.key_bindings.lower() not in ("emacs", "vi"):
        config.problems.append(f"[repl] key_bindings: {config.key_bindings!r} is not emacs or vi")
        config.key_bindings = "emacs"
    for key, value in (data.get("colors") or data.get("colours") or {}).items():
        if key in DEFAULT_COLOURS and isinstance(value, str):
            config.colours[key] = value
        else:
            config.problems.append(f"[colors] {key}: unknown colour or not a string")


def trim_history(path: Path, keep: int) -> None:
    """Keeps the last `keep` entries of a prompt_toolkit history file.

    Each entry there is a blank line, a `# timestamp` line and `+`-prefixed text lines.
    """
    try:
        text = path.read_text()
    except OSError:
        return
    entries = text.split("\n\n# ")
    if len(entries) - 1 <= keep:
        return
    kept = entries[len(entries) - keep:] if keep > 0 else []
    try:
        path.write_text("".join("\n\n# " + entry for entry in kept) + "")
    except OSError:
        pass  # a history too long is not worth failing over


class ModelMemory:
    """Models configured before, offered by completion after `:lm` and `model=`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.models: list[str] = []
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
                self.models = [m for m in loaded if isinstance(m, str)][:50]
            except (OSError, ValueError, TypeError):
                self.models = []

    def remember(self, model: str) -> None:
        if not model:
            return
        if model in self.models:
            self.models.remove(model)
        self.models.insert(0, model)
        del self.models[50:]
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_private_file(self.path)
                self.path.write_text(json.dumps(self.models))
            except OSError:
                pass  # completion is a convenience; failing to persist it is not an error


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def secure_state_dir(path: Path) -> None:
    """Makes the state directory 0700 and every file in it 0600, fixing older, looser modes.

    The history, the logs and the remembered models may name hosts, users and prompts;
    other local users must not read them.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    for entry in path.iterdir():
        try:
            if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o077:
                entry.chmod(PRIVATE_FILE_MODE)
        except OSError:
            continue  # a file that vanished meanwhile needs no fixing


def create_private_file(path: Path) -> None:
    """Creates `path` as 0600 if it does not exist (FileHistory and logs append with the umask)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    os.close(descriptor)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_FILE_MODE)


WORKER_LOGS_KEPT = 5


def prune_worker_logs(directory: Path, keep: int = WORKER_LOGS_KEPT) -> list[Path]:
    """Deletes all but the `keep` newest spawned-worker-PID.log files; returns those deleted."""
    try:
        logs = [(p.stat().st_mtime, p) for p in directory.glob("spawned-worker-*.log") if p.is_file()]
    except OSError:
        return []
    logs.sort(reverse=True)
    deleted = []
    for _, old in logs[keep:]:
        try:
            old.unlink()
            deleted.append(old)
        except OSError:
            pass  # another console removing it first is fine
    return deleted


def redact_history_file(path: Path) -> None:
    """Rewrites a history file whose entries hold secret values (from before redaction)."""
    from .secrets import redact_line

    try:
        text = path.read_text()
    except OSError:
        return
    lines = text.split("\n")
    cleaned = [("+" + redact_line(line[1:])) if line.startswith("+") else line for line in lines]
    if cleaned != lines:
        try:
            path.write_text("\n".join(cleaned))
        except OSError:
            pass
