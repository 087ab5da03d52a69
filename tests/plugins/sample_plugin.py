"""A plugin used by the serve tests: misbehaving commands a real plugin might contain."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bridge import Arg, Context, command
from bridge.errors import BridgeError


class QuotaExceeded(BridgeError):
    error_type = "quota_exceeded"


@command("sample_echo", scheduling="read", args=(Arg("text", "string", required=True),))
def sample_echo(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Echoes text back with the request's session."""
    return {"text": args["text"], "session_id": ctx.session_id, "plugin": __name__}


@command("sample_unserializable", scheduling="read")
def sample_unserializable(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Returns a value JSON cannot hold."""
    return {"value": object()}


@command("sample_not_a_dict", scheduling="read")
def sample_not_a_dict(args: dict[str, Any], ctx: Context) -> Any:
    """Returns a list where an object is required."""
    return [1, 2, 3]


@command("sample_print", scheduling="read")
def sample_print(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Writes to stdout three ways; none of it may reach the protocol channel."""
    print("PRINTED-BY-PLUGIN")
    sys.stdout.write("SYS-STDOUT-BY-PLUGIN\n")
    sys.stdout.flush()
    os.write(1, b"OS-WRITE-1-BY-PLUGIN\n")
    return {"printed": True}


@command("sample_quota", scheduling="read")
def sample_quota(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Fails with a plugin-defined error type."""
    raise QuotaExceeded("Quota exceeded for this session")


@command("sample_crash", scheduling="read")
def sample_crash(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Fails with an unexpected exception."""
    raise RuntimeError("plugin bug")


@command("sample_sleep", scheduling="read", args=(Arg("ms", "integer", required=True),))
def sample_sleep(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Blocks its thread like a stuck network call (it does not watch ctx.cancel)."""
    time.sleep(args["ms"] / 1000)
    return {"slept_ms": args["ms"]}
