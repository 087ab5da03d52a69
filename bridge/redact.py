"""Keeps secrets out of replies, logs, errors, transcripts and inspect views.

Two complementary guards: key-based redaction of structures (any key that names a
secret), and value-based scrubbing of free text using every secret value the worker
has been given (an API key quoted inside an exception message is still caught).
"""

from __future__ import annotations

import re
import threading
from typing import Any

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"key|token|secret|password|authorization|credential", re.I)
# Keys that contain "key" but name no secret; redacting them would destroy useful data.
_NOT_SECRET = frozenset({"key", "keys", "cache_key", "sort_key", "primary_key", "key_name",
                         "input_keys", "output_keys", "max_tokens", "prompt_tokens",
                         "completion_tokens", "total_tokens", "tokens", "reasoning_tokens",
                         "cached_tokens", "prompt_tokens_details", "completion_tokens_details",
                         "max_completion_tokens", "token_count", "tokens_per_second"})
# Shapes of common provider keys, caught even if nobody registered them.
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|xox[abp]-[A-Za-z0-9\-]{10,}"
                         r"|gh[pous]_[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,})")

_known: set[str] = set()
_lock = threading.Lock()


def is_secret_key(name: str) -> bool:
    return name.lower() not in _NOT_SECRET and bool(_SECRET_KEY.search(name))


def remember_secret(value: Any) -> None:
    """Registers a secret value so free text that quotes it is scrubbed later."""
    if isinstance(value, str) and len(value) >= 4:
        with _lock:
            _known.add(value)


def known_secrets() -> tuple[str, ...]:
    """The secret values registered so far (the recorder's fast path checks raw bytes for them)."""
    with _lock:
        return tuple(_known)


def scrub_text(text: str) -> str:
    """Replaces known secret values and key-shaped tokens in free text."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of value with every secret-named key's value replaced, at any depth."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v is not None
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
