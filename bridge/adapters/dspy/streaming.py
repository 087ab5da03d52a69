"""Streamed execution: `chunk` and `status` events while a program runs, then its reply.

DSPy's `streamify` with one `StreamListener` per string output field turns the LM's
server-sent chunks into per-field deltas; each becomes `{"field", "delta"}`. Status
messages (a module began, a tool call started or ended) are sent straight from a DSPy
callback as `{"message"}`: DSPy's own status path hops through a new event loop on a new
thread per message, which the lane does not need.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .loader import load_dspy

if TYPE_CHECKING:
    from ...twoway import RequestContext

# Types whose deltas join to exactly the final value; other fields arrive whole in the reply.
_STRING_TYPES = frozenset({"string", "str"})


def streamed_fields(spec: Any, names: list[str]) -> list[str]:
    """The output fields to listen to: string fields, and `reasoning` (always text)."""
    types = {field.name: field.type_text.lower() for field in spec.outputs}
    return [name for name in names if name == "reasoning" or types.get(name, "string") in _STRING_TYPES]


def _listeners(dspy: Any, program: Any, fields: list[str]) -> list[Any]:
    """A listener per field whose predictor is unambiguous (ReAct: its extract step; a
    field two predictors share, as in best_of_n, is not streamed: the reply carries it)."""
    from dspy.streaming.streaming_listener import find_predictor_for_stream_listeners

    kept = []
    for name in fields:
        listener = dspy.streaming.StreamListener(name)
        try:
            find_predictor_for_stream_listeners(program, [listener])
        except ValueError:
            continue
        kept.append(listener)
    return kept


@functools.cache
def _status_callback_class() -> type:
    dspy = load_dspy()

    class StatusEvents(dspy.utils.callback.BaseCallback):  # type: ignore[misc, name-defined]
        """Sends `status` events for module starts and tool calls of one request."""

        def __init__(self, ctx: RequestContext) -> None:
            self.ctx = ctx

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.ctx.emit("status", {"message": f"{type(instance).__name__} started"})

        def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            if getattr(instance, "name", None) != "finish":
                self.ctx.emit("status", {"message": f"Calling tool {instance.name}",
                                         "tool": instance.name, "phase": "start"})

        def on_tool_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
            if outputs == "Completed.":  # ReAct's `finish` tool
                return
            self.ctx.emit("status", {"message": "Tool call finished" if exception is None
                                     else f"Tool call failed: {type(exception).__name__}", "phase": "end"})

    return StatusEvents


@functools.cache
def _silent_provider() -> Any:
    """A status provider that says nothing, so streamify's own status path stays quiet."""
    dspy = load_dspy()

    class Silent(dspy.streaming.StatusMessageProvider):  # type: ignore[misc, name-defined]
        def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> None:
            return None

        def tool_end_status_message(self, outputs: Any) -> None:
            return None

    return Silent()


def status_callback(ctx: RequestContext) -> Any:
    """The DSPy callback that sends this request's `status` events."""
    return _status_callback_class()(ctx)


class JSONStringDeltas:
    """Turns the deltas of a JSON string literal (what DSPy's listener yields under the JSON
    adapter: quotes and escapes included) into deltas of the string's value, so they join
    to exactly the final value. An escape split across two deltas waits for its second half."""

    def __init__(self) -> None:
        self.raw = ""
        self.emitted = 0
        self.closed = False

    def feed(self, delta: str) -> str:
        if self.closed:
            return ""
        self.raw += delta
        body = self.raw.lstrip()
        if not body.startswith('"'):
            return ""
        body = body[1:]
        cut, index = len(body), 0
        while index < len(body):
            char = body[index]
            if char == '"':
                cut, self.closed = index, True
                break
            if char == "\\":
                width = 6 if body[index + 1:index + 2] == "u" else 2
                if index + width > len(body):
                    cut = index
                    break
                index += width
                continue
            index += 1
        import json

        try:
            value = json.loads('"' + body[:cut] + '"')
        except ValueError:
            return ""
        fresh, self.emitted = value[self.emitted:], len(value)
        return fresh


async def run_streamed(program: Any, kwargs: dict[str, Any], fields: list[str], ctx: RequestContext,
                       native_async: bool = True, json_strings: bool = False) -> Any:
    """Runs `program` streamed (inside the caller's dspy.context) and returns its Prediction,
    sending a `chunk` event for every non-empty delta of the listened fields. Under the JSON
    adapter (`json_strings`) the deltas are decoded out of their JSON string literals."""
    dspy = load_dspy()
    decoders: dict[tuple[str, str], JSONStringDeltas] = {}
    streamer = dspy.streamify(program, status_message_provider=_silent_provider(),
                              stream_listeners=_listeners(dspy, program, fields),
                              is_async_program=native_async)
    prediction = None
    async for value in streamer(**kwargs):
        if isinstance(value, dspy.Prediction):
            prediction = value
        elif isinstance(value, dspy.streaming.StreamResponse):
            delta = value.chunk
            if json_strings:
                key = (value.predict_name, value.signature_field_name)
                delta = decoders.setdefault(key, JSONStringDeltas()).feed(delta)
            if delta:
                ctx.emit("chunk", {"field": value.signature_field_name, "delta": delta})
    return prediction
