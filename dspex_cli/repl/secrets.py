"""Secrets typed into the console: never echoed, never stored, and not even typed if wanted.

Which argument names hold secrets is bridge.redact's call (`SECRET_NAMES`), the one list
the worker's redaction uses too. Three ways to give a key:
  `api_key=sk-...`            works, but the history keeps the line with the value removed;
  `api_key=$OPENAI_API_KEY`   the value is read from the environment (a missing one is an error);
  `:lm MODEL --key`           the key is asked for without echo.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from .parsing import ParseError

# `$NAME` or `${NAME}`: a whole value naming an environment variable.
_ENV_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def _redact_module() -> Any:
    from bridge import redact

    return redact


def redacted_marker() -> str:
    return str(_redact_module().REDACTED)


def is_secret_name(name: str) -> bool:
    """Whether an argument of this name holds a secret (the last part of a dotted key counts).

    bridge.redact decides (its exact SECRET_NAMES list), so the console and the worker
    never disagree about what a secret is.
    """
    return bool(_redact_module().is_secret_key(name.rsplit(".", 1)[-1]))


def _remember(value: str) -> None:
    try:
        _redact_module().remember_secret(value)
    except Exception:  # the table of known secrets is full: masking by name still applies
        pass


def env_reference(value: Any) -> str | None:
    """The variable a value like `$OPENAI_API_KEY` names, or None for a literal value."""
    if not isinstance(value, str):
        return None
    match = _ENV_REFERENCE.fullmatch(value)
    if match is None:
        return None
    return match["braced"] or match["bare"]


def resolve_secret_args(args: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A copy of args with `$NAME` secret values read from the environment.

    Every secret value (read or typed) is registered with bridge.redact, so free text that
    quotes it later (an error message, a log line) is scrubbed too. A value put back from a
    redacted history line is refused: sending "[REDACTED]" as a key would only fail later.
    """
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    redact = _redact_module()
    resolved: dict[str, Any] = {}
    # Top-level arguments only: nested objects are program inputs, demos or session data,
    # whose fields are the user's and never secrets (nor environment references).
    for key, value in args.items():
        if isinstance(key, str) and is_secret_name(key) and isinstance(value, str):
            variable = env_reference(value)
            if variable is not None:
                if variable not in environ:  # type: ignore[operator]
                    raise ParseError(f"{key}: environment variable {variable} is not set",
                                     f"export {variable}=... before starting the console, "
                                     "or use `:lm MODEL --key` to type it unseen")
                value = environ[variable]  # type: ignore[index]
                if not value:
                    raise ParseError(f"{key}: environment variable {variable} is empty",
                                     f"give {variable} a value, or use `:lm MODEL --key`")
            elif value == redact.REDACTED:
                raise ParseError(f"{key}: this line came from the history, which never keeps secrets",
                                 f"write {key}=$VARIABLE to read it from the environment, "
                                 "or use `:lm MODEL --key` to type it unseen")
            _remember(value)
        resolved[key] = value
    return resolved


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return _redact_module().scrub_text(value) if isinstance(value, str) else value


def mask_args(args: dict[str, Any]) -> dict[str, Any]:
    """What the console shows of a request's args: secret-named arguments replaced.

    By name only at the top level (where configure_lm's keys and headers are); deeper,
    only known secret values and key-shaped tokens, so user data shows as it is.
    """
    marker = redacted_marker()
    return {key: marker if isinstance(key, str) and is_secret_name(key) and value is not None else _scrub(value)
            for key, value in args.items()}


def mask_request(request: dict[str, Any]) -> dict[str, Any]:
    return {**request, "args": mask_args(request.get("args") or {})}


# A typed `name=value` word (value quoted or not), and a JSON `"name": "value"` pair.
_ASSIGNMENT = re.compile(r"""(?<![\w.])(?P<key>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)="""
                         r"""(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s'"]+)""")
_JSON_PAIR = re.compile(r""""(?P<key>[A-Za-z_][\w]*)"\s*:\s*(?P<value>"(?:\\.|[^"\\])*")""")


def redact_line(text: str) -> str:
    """A typed line as the history may keep it: every secret value replaced.

    Values that only name an environment variable (`$OPENAI_API_KEY`) are kept: they
    are not secrets, and recalling the line must still work. The values removed are
    registered as secrets too, and known secrets and key-shaped tokens anywhere in the
    line are scrubbed by bridge.redact.
    """
    redact = _redact_module()

    def replace(match: re.Match[str], quoted: bool) -> str:
        key, value = match["key"], match["value"]
        if not is_secret_name(key):
            return match.group(0)
        inner = value[1:-1] if value[:1] in "\"'" and len(value) >= 2 else value
        if env_reference(inner) is not None or inner == redact.REDACTED:
            return match.group(0)
        _remember(inner)
        # Quoted, so the recalled line parses and meets resolve_secret_args' clear refusal.
        marker = f'"{redact.REDACTED}"' if quoted else f"'{redact.REDACTED}'"
        return match.group(0)[: match.start("value") - match.start()] + marker

    text = _ASSIGNMENT.sub(lambda m: replace(m, False), text)
    text = _JSON_PAIR.sub(lambda m: replace(m, True), text)
    return str(redact.scrub_text(text))


KEY_FLAG = "--key"


def ask_secret_on_tty(prompt: str) -> str:
    """Reads a secret from the controlling terminal without echo (pipe mode's `--key`).

    Never from stdin: in a pipe that is the script, and the key would be read as commands
    (or a command as the key).
    """
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise ParseError("--key needs a terminal to type the key into, and there is none",
                         "give it as api_key=$VARIABLE (read from the environment)") from None
    import getpass

    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        raise ParseError("No key was entered", "type the key, or use api_key=$VARIABLE") from None


SecretAsker = Callable[[str], str]
