"""Test plugin: turns on LiteLLM's own debug logging (prompts, request bodies) inside a worker,
so the secrets test can prove those lines are scrubbed too."""

from __future__ import annotations

from typing import Any

from bridge import command


@command("enable_litellm_debug", scheduling="global")
def enable_litellm_debug(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Switches on LiteLLM's debug log through DSPy's own switch."""
    import dspy

    dspy.enable_litellm_logging()
    return {"status": "enabled"}


@command("echo_to_logs")
def echo_to_logs(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Repeats `text` the ways libraries do: a foreign logger with %-args, an exception
    traceback, print() and a raw write to sys.stderr."""
    import logging
    import sys

    text = str(args.get("text"))
    foreign = logging.getLogger("some_library.http")
    foreign.setLevel(logging.DEBUG)
    foreign.debug("request body: %s", {"prompt": text})
    try:
        raise RuntimeError(f"upstream said: {text}")
    except RuntimeError:
        foreign.exception("call failed")
    print(f"verbose: {text}")
    sys.stderr.write(f"raw: {text}\n")
    return {"status": "logged"}
