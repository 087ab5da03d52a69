"""Keeps secrets out of replies, logs, errors, transcripts and inspect views.

Two complementary guards:
- by name: the value under a key from `SECRET_NAMES` (an exact list, not a substring
  rule) is replaced, except inside user data (program inputs, outputs, demos, session
  data, prompts), where a field called `keywords` or even `token` is the user's own;
- by value: every secret value the worker has been given (configure_lm keys, provider
  keys from the environment), key-shaped tokens and the password part of URLs are
  masked in all free text, user data included, since a key quoted in an input must not
  reach a log.

Every scan here is linear in the text: they run over bytes a client sent.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from .errors import LimitExceeded

REDACTED = "[REDACTED]"

# The argument, header and field names whose values are secrets (compared lower-cased,
# with "-" read as "_", so the header X-Api-Key matches too). Documented in docs/protocol.md.
SECRET_NAMES = frozenset({
    "api_key", "apikey", "api_secret", "api_token", "x_api_key", "openai_api_key",
    "access_token", "refresh_token", "auth_token", "bearer_token", "id_token", "session_token",
    "token", "secret", "secret_key", "client_secret", "aws_secret_access_key", "aws_session_token",
    "password", "passwd", "private_key", "authorization", "proxy_authorization",
    "credentials", "credential", "cookie", "set_cookie",
})

# Keys whose values are user data: program inputs and outputs, demos, data sets,
# session data, prompts and LM responses. Inside them no key is redacted by name.
USER_DATA_KEYS = frozenset({
    "inputs", "outputs", "demos", "signature", "signature_def", "field_mapping", "program_data",
    "value", "data", "examples", "devset", "trainset", "valset", "expected", "prediction",
    "trajectory", "messages", "prompt", "response", "content", "outputs_preview",
})

class _LazyPattern:
    """A regex compiled on first use. Compiling this module's patterns cost a worker about
    1.5 ms of start-up, before its first reply, for text that is scrubbed much later."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the instance lacks (sub, search, ...): after the compile the
        # pattern's methods are instance attributes, so later calls skip this.
        compiled = re.compile(self.pattern, self.flags)
        for method in ("sub", "search", "findall", "finditer", "match", "fullmatch", "split", "subn"):
            setattr(self, method, getattr(compiled, method))
        return getattr(compiled, name)


# Shapes of common provider keys, caught even if nobody registered them. Each branch
# starts with a literal, so a failed attempt costs one comparison: the scan is linear.
_KEY_SHAPES = _LazyPattern(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|xox[abp]-[A-Za-z0-9\-]{10,}"
                         r"|gh[pous]_[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
# The part of a URL between "://" and the host that may hold "user:password@".
_AUTHORITY_END = _LazyPattern(r"[/\s\"'<>\\?#]")
_AUTHORITY_LIMIT = 512

# Known secret values are compared against every reply and log line: a client may not
# grow this table without bound (each configure_lm can bring a new key).
MAX_KNOWN_SECRETS = 4096
# Shorter values are not taken as secrets: masking every "abc" in replies and logs would
# destroy user data, and no provider issues keys that short.
_MIN_SECRET_LENGTH = 8
_known: set[str] = set()
_known_bytes: tuple[bytes, ...] = ()
_lock = threading.Lock()

# Endings of environment variable names whose values are secrets (provider keys arrive
# this way), compared in upper case. Checked for every variable at start: a suffix test,
# not a regex, so nothing is compiled before the first reply.
_SECRET_ENV_SUFFIXES = ("API_KEY", "APIKEY", "_TOKEN", "_SECRET", "SECRET_KEY", "PASSWORD", "_PASSWD")


def is_secret_key(name: str) -> bool:
    """Whether a key names a secret (exact names only, see SECRET_NAMES)."""
    return name.lower().replace("-", "_") in SECRET_NAMES


def remember_secret(value: Any) -> None:
    """Registers a secret value so free text that quotes it is scrubbed later.

    Raises LimitExceeded once MAX_KNOWN_SECRETS distinct values are known: forgetting an
    older key would let it leak, so the new one is refused instead.
    """
    global _known_bytes
    if not isinstance(value, str) or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _known:
            return
        if len(_known) >= MAX_KNOWN_SECRETS:
            raise LimitExceeded(f"This worker already holds {MAX_KNOWN_SECRETS} distinct secret values; "
                                "restart it or reuse a configured key")
        _known.add(value)
        _known_bytes = tuple(s.encode("utf-8", "surrogatepass") for s in _known)


def remember_environment_secrets(environ: Mapping[str, str] | None = None) -> int:
    """Registers the values of secret-named environment variables (OPENAI_API_KEY, ...).

    LiteLLM reads provider keys from the environment, so they can surface in its errors
    and logs without ever crossing configure_lm. Returns how many were registered.
    """
    count = 0
    for name, value in (os.environ if environ is None else environ).items():
        if len(value) >= 8 and name.upper().endswith(_SECRET_ENV_SUFFIXES):
            remember_secret(value)
            count += 1
    return count


def remember_config_secrets(args: Any, _depth: int = 0) -> None:
    """Registers every secret an LM configuration carries: values under secret names at
    any depth (api_key, headers' Authorization) and the passwords of URLs (api_base).

    Libraries quote these in forms no pattern expects (aiohttp writes "host user:pw@h:9"
    without the scheme), so the values themselves must be known.
    """
    if _depth >= MAX_DEPTH:
        return
    if isinstance(args, dict):
        for key, value in args.items():
            if isinstance(key, str) and is_secret_key(key) and isinstance(value, str):
                remember_secret(value)
                if value.lower().startswith("bearer "):
                    remember_secret(value[7:].strip())
            else:
                remember_config_secrets(value, _depth + 1)
    elif isinstance(args, list):
        for item in args:
            remember_config_secrets(item, _depth + 1)
    elif isinstance(args, str) and "://" in args:
        try:
            password = urlsplit(args).password
        except ValueError:
            return
        if password:
            remember_secret(password)
            remember_secret(unquote(password))


def known_secrets() -> tuple[str, ...]:
    """The secret values registered so far (the recorder's fast path checks raw bytes for them)."""
    with _lock:
        return tuple(_known)


def holds_known_secret(data: bytes) -> bool:
    """Whether raw bytes contain a registered secret value: a memory-speed check that lets
    clean replies skip decoding."""
    for secret in _known_bytes:
        if secret in data:
            return True
    return False


def mask_url_passwords(text: str) -> str:
    """Replaces the password in every `scheme://user:password@host` with [REDACTED]."""
    start = text.find("://")
    if start < 0:
        return text
    pieces: list[str] = []
    done = 0
    while start >= 0:
        begin = start + 3
        end_match = _AUTHORITY_END.search(text, begin, begin + _AUTHORITY_LIMIT)
        end = end_match.start() if end_match else min(len(text), begin + _AUTHORITY_LIMIT)
        at = text.rfind("@", begin, end)
        colon = text.find(":", begin, at) if at > 0 else -1
        if colon >= 0 and text[colon + 1:at] != REDACTED:
            pieces.append(text[done:colon + 1])
            pieces.append(REDACTED)
            done = at
        start = text.find("://", max(end, begin))
    pieces.append(text[done:])
    return "".join(pieces)


def scrub_known(text: str) -> str:
    """Replaces the registered secret values in text, and nothing else."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_text(text: str) -> str:
    """Replaces known secret values, key-shaped tokens and URL passwords in free text."""
    if len(text) < _MIN_SECRET_LENGTH:  # shorter than any secret, key shape or "a://u:p@h"
        return text
    text = scrub_known(text)
    if "://" in text:
        text = mask_url_passwords(text)
    return _KEY_SHAPES.sub(REDACTED, text)


# Deeper structures are cut here rather than walked: orjson reads requests nested up to
# 1024 levels, deeper than Python's recursion limit, and writes none deeper than 254.
MAX_DEPTH = 200
TOO_DEEP = "[NESTED TOO DEEP]"


class TooDeep(RecursionError):
    """A structure nested past MAX_DEPTH: callers choose to keep it as text or cut it."""


def redact(value: Any, _in_user_data: bool = False, _depth: int = 0) -> Any:
    """A copy of value with secrets masked: by name outside user data, by value everywhere."""
    if isinstance(value, dict):
        if _depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        cleaned = {}
        for key, item in value.items():
            name_is_str = isinstance(key, str)
            if not _in_user_data and name_is_str and item is not None and is_secret_key(key):
                cleaned[key] = REDACTED
            else:
                inner = _in_user_data or (name_is_str and key in USER_DATA_KEYS)
                cleaned[scrub_text(key) if name_is_str else key] = redact(item, inner, _depth + 1)
        return cleaned
    if isinstance(value, list):
        if _depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return [redact(item, _in_user_data, _depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_values(value: Any, _depth: int = 0) -> Any:
    """A copy with registered secret values masked in every string (keys too), nothing
    else: for replies, whose data is the user's own (an LM answer may well contain "sk-")."""
    if isinstance(value, dict):
        if _depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return {(scrub_known(k) if isinstance(k, str) else k): scrub_values(v, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        if _depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return [scrub_values(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_known(value)
    return value


# Pairs `"secret name": "value"` in text that is not JSON (a frame that failed to parse).
# The name is one of a fixed set of literals and the value cannot contain an unescaped
# quote, so each attempt stops at the next quote: linear in the text.
_SECRET_PAIR = _LazyPattern(
    r'("(?:' + "|".join(sorted((re.escape(n) for n in SECRET_NAMES), key=len, reverse=True))
    + r')"\s{0,64}:\s{0,64})"(?:[^"\\]|\\.)*"', re.I)


def scrub_unparsed(text: str) -> str:
    """Scrubs text that is not JSON: secret-named pairs, known values, key shapes, URL passwords."""
    text = _SECRET_PAIR.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    return scrub_text(text)


# -- every log line and every stray write to the console --------------------------------


class _ScrubbingStream:
    """A text stream that scrubs what is written before passing it on.

    Libraries print (LiteLLM in verbose mode) or hold their own handlers on sys.stderr;
    wrapping the stream catches what no logging filter sees.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub_text(text) if isinstance(text, str) else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _scrubbing_factory(make_record: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record still gets logged, as text
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = scrub_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub_text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return record

    factory.scrubs_secrets = True  # type: ignore[attr-defined]
    return factory


def install_output_scrubbing(streams: Iterable[str] = ("stdout", "stderr")) -> None:
    """Scrubs every log record of every library at creation, and what reaches sys.stdout
    and sys.stderr. Idempotent; call before logging is configured."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "scrubs_secrets", False):
        logging.setLogRecordFactory(_scrubbing_factory(current))
    for name in streams:
        stream = getattr(sys, name)
        if not isinstance(stream, _ScrubbingStream):
            setattr(sys, name, _ScrubbingStream(stream))
