"""A local OpenAI-compatible chat server for tests and benchmarks.

It answers `POST /v1/chat/completions` in the format the prompt asks for (DSPy's
ChatAdapter, JSONAdapter or XMLAdapter), computing each output from the request itself
(so a test cannot pass on a canned answer). ReAct prompts get a deterministic agent: each
tool the prompt lists is called once, in order, then `finish`; the final answer is computed
from the inputs plus the observations of the trajectory. It sleeps
when the model name asks for it (`delay-200` waits 200 ms) so concurrency can be measured.
`drip-300` sends the reply body one byte every 300 ms (a server that is alive but never
done, for total-deadline tests); `echo-headers` repeats the Authorization header in every
answer. A request with `"stream": true` gets server-sent events in OpenAI's
`chat.completion.chunk` format, the content cut into pieces of 4 characters (`chunk-N`
in the model name: N characters; `gap-N`: N ms between pieces), ending with a usage chunk
when `stream_options.include_usage` asks and `data: [DONE]`. `server.abandoned` counts
streams whose client went away before the end. Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:  # run as a module of the suite, or as a script (benchmarks start it that way)
    from learnable_task import learned_value
except ImportError:  # pragma: no cover
    from tests.learnable_task import learned_value

OUTPUT_FIELD = re.compile(r"^\d+\. `(?P<name>\w+)` \((?P<type>[^)]*)\)", re.M)
# Every adapter ends its last user message with an instruction that is not part of the last input.
RESPOND_MARKER = "\n\nRespond with "
INPUT_BLOCK = re.compile(r"\[\[ ## (?P<name>\w+) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## |\Z)", re.S)
XML_BLOCK = re.compile(r"<(?P<name>\w+)>\n(?P<value>.*?)\n</(?P=name)>", re.S)
# ReAct lists its tools in the instructions: "(1) search, whose description is <desc>..</desc>. It takes arguments {...}."
TOOL_LINE = re.compile(r"^\s*\(\d+\) (?P<name>\w+)(?:, whose description is <desc>(?s:.*?)</desc>)?\. "
                       r"It takes arguments (?P<args>\{[^\n]*\})\.[ \t]*$", re.M)
TRAJECTORY_ENTRY = re.compile(r"(?:\[\[ ## |<)(?P<kind>tool_name|tool_args|observation|thought)_(?P<index>\d+)"
                              r"(?: ## \]\]|>)\n(?P<value>.*?)(?=\n\n\[\[ ## |\n</|\Z)", re.S)


def _output_fields(system: str) -> list[tuple[str, str]]:
    """Reads the output fields and their types from the adapter's system message (the
    chat, JSON and XML adapters all list them the same way)."""
    _, _, tail = system.partition("Your output fields are:")
    section, _, _ = tail.partition("All interactions will be structured")
    return [(m["name"], m["type"]) for m in OUTPUT_FIELD.finditer(section)]


def _value_for(name: str, type_text: str, inputs: dict[str, str]) -> str:
    """Derives an answer from the inputs so tests can check it was computed, not canned."""
    joined = " | ".join(f"{k}={v}" for k, v in sorted(inputs.items()))
    t = type_text.lower()
    if t == "int":
        return str(sum(len(v) for v in inputs.values()))
    if t == "float":
        return str(len(joined) / 4)
    if t == "bool":
        return "true" if len(joined) % 2 == 0 else "false"
    if t.startswith("list"):
        return json.dumps([w for w in joined.split()[:3]])
    if t.startswith("dict"):
        return json.dumps({"length": str(len(joined))})
    if name == "reasoning":
        return f"Thinking about {joined}."
    return f"{name} for {joined}"


def value_for(name: str, type_text: str, inputs: dict[str, str]) -> str:
    """What the server answers for an output field (tests compute their expectations with it)."""
    return _value_for(name, type_text, inputs)


def _typed(value: str, type_text: str) -> Any:
    """A field's answer as the JSON value JSONAdapter expects (numbers as numbers, lists as lists)."""
    t = type_text.lower()
    if t in ("int", "float", "bool") or t.startswith(("list", "dict")):
        return json.loads(value)
    return value


def _split_trajectory(user: str, xml: bool) -> tuple[str, str | None]:
    """The user message before ReAct's `trajectory` input, and the trajectory itself."""
    header = "<trajectory>\n" if xml else "[[ ## trajectory ## ]]\n"
    if header not in user:
        return user, None
    head, _, trajectory = user.partition(header)
    return head, trajectory


def _trajectory_steps(trajectory: str) -> dict[str, dict[int, str]]:
    steps: dict[str, dict[int, str]] = {}
    for m in TRAJECTORY_ENTRY.finditer(trajectory):
        steps.setdefault(m["kind"], {})[int(m["index"])] = m["value"].strip()
    return steps


def _tool_args(schema: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """Arguments for a tool, derived from the inputs: a string gets the first input's text."""
    text = next(iter(inputs.values()), "")
    args: dict[str, Any] = {}
    for name, spec in schema.items():
        kind = (spec or {}).get("type") if isinstance(spec, dict) else None
        if kind == "integer":
            args[name] = len(text)
        elif kind == "number":
            args[name] = len(text) / 2
        elif kind == "boolean":
            args[name] = len(text) % 2 == 0
        elif kind == "array":
            args[name] = text.split()[:2]
        else:
            args[name] = text
    return args


def react_step(system: str, inputs: dict[str, str], trajectory: str) -> dict[str, Any]:
    """ReAct's next move: each listed tool once, in the order listed, then `finish`."""
    import ast

    tools = [(m["name"], ast.literal_eval(m["args"])) for m in TOOL_LINE.finditer(system)]
    called = len(_trajectory_steps(trajectory).get("tool_name", {}))
    real = [tool for tool in tools if tool[0] != "finish"]
    if called < len(real):
        name, schema = real[called]
        return {"next_thought": f"Step {called}: I will call {name}.", "next_tool_name": name,
                "next_tool_args": _tool_args(schema, inputs)}
    return {"next_thought": f"Step {called}: I have what I need.", "next_tool_name": "finish",
            "next_tool_args": {}}


def observations_of(trajectory: str) -> str:
    """The tool results a trajectory holds, joined: the final answer is computed from them."""
    observed = _trajectory_steps(trajectory).get("observation", {})
    return " ; ".join(observed[index] for index in sorted(observed))


def answer_fields(system: str, user: str, extra_inputs: dict[str, str] | None = None,
                  learned: Callable[[str, dict[str, str]], str | None] | None = None) -> tuple[str, dict[str, Any]]:
    """The adapter format a prompt asks for ("chat", "json" or "xml") and each output field's
    answer; `learned(name, inputs)` may answer a field instead (the learnable task)."""
    fmt = "json" if "Respond with a JSON object" in user else "xml" if "wrapped in XML tags" in user else "chat"
    user = user.split(RESPOND_MARKER, 1)[0]
    head, trajectory = _split_trajectory(user, fmt == "xml")
    pattern = XML_BLOCK if fmt == "xml" else INPUT_BLOCK
    inputs = {m["name"]: m["value"].strip() for m in pattern.finditer(head)}
    inputs.update(extra_inputs or {})
    fields = _output_fields(system) or [("answer", "str")]
    names = [name for name, _ in fields]
    if trajectory is not None and "next_tool_name" in names:
        return fmt, react_step(system, inputs, trajectory)
    if trajectory is not None:
        inputs["observations"] = observations_of(trajectory)
    values = {}
    for name, type_text in fields:
        taught = learned(name, inputs) if learned is not None else None
        values[name] = taught if taught is not None else _typed(_value_for(name, type_text, inputs), type_text)
    return fmt, values


def render(fmt: str, values: dict[str, Any]) -> str:
    """The answer in the shape the prompt's adapter parses."""
    if fmt == "json":
        return json.dumps(values)

    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    if fmt == "xml":
        return "\n\n".join(f"<{name}>\n{text(value)}\n</{name}>" for name, value in values.items())
    parts = [f"[[ ## {name} ## ]]\n{text(value)}" for name, value in values.items()]
    return "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this, Nagle's algorithm adds ~40 ms stalls per request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stderr
        pass

    def do_GET(self) -> None:
        body = json.dumps({"data": [{"id": "local-model", "object": "model"}]}).encode()
        self._send(200, body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw)
        except ValueError:
            self._send(400, b'{"error":{"message":"bad json"}}')
            return
        self.server.requests.append({"path": self.path, "body": request,  # type: ignore[attr-defined]
                                     "authorization": self.headers.get("authorization")})
        model = str(request.get("model", ""))
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.in_flight += 1  # type: ignore[attr-defined]
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)  # type: ignore[attr-defined]
        try:
            self._answer(raw, request, model)
        finally:
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.in_flight -= 1  # type: ignore[attr-defined]

    def _answer(self, raw: bytes, request: dict[str, Any], model: str) -> None:
        if m := re.search(r"delay-(\d+)", model):
            time.sleep(int(m.group(1)) / 1000)
            if self._client_gone():
                self.server.abandoned += 1  # type: ignore[attr-defined]
                self.close_connection = True
                return
        if "fail-500" in model:
            self._send(500, b'{"error":{"message":"internal failure for tests"}}')
            return
        messages = request.get("messages") or []
        system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), "")
        last_user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        # "echo-headers": a misbehaving LM that repeats the request's credentials.
        extra = {"authorization": str(self.headers.get("authorization"))} if "echo-headers" in model else {}
        fmt, values = answer_fields(system, last_user, extra,
                                    lambda name, inputs: learned_value(model, name, messages, system, inputs))
        # JSONAdapter (GEPA's proposer uses it) may ask for a JSON object in response_format only.
        if fmt == "chat" and (request.get("response_format") or "Outputs will be a JSON object" in system):
            fmt = "json"
        content = render(fmt, values)
        digest = hashlib.sha256(raw).hexdigest()[:12]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(content.split())
        reply = {
            "id": f"chatcmpl-{digest}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if request.get("stream") is True:
            self._stream(reply, model, bool((request.get("stream_options") or {}).get("include_usage")))
            return
        body = json.dumps(reply).encode()
        if m := re.search(r"drip-(\d+)", model):
            self._drip(body, int(m.group(1)) / 1000)
            return
        self._send(200, body)

    def _client_gone(self) -> bool:
        """Whether the client closed its end while we slept (it gave up on the call)."""
        import select
        import socket

        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, reply: dict[str, Any], model: str, include_usage: bool) -> None:
        """The reply as server-sent events, one `chat.completion.chunk` per piece of content."""
        size = int(m.group(1)) if (m := re.search(r"chunk-(\d+)", model)) else 4
        gap = int(m.group(1)) / 1000 if (m := re.search(r"gap-(\d+)", model)) else 0.0
        content = reply["choices"][0]["message"]["content"]
        base = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"], "model": model}

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        pieces = [content[i:i + max(1, size)] for i in range(0, len(content), max(1, size))]
        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": piece}) for piece in pieces]
        events.append(event({}, "stop"))
        if include_usage:
            events.append(b"data: " + json.dumps({**base, "choices": [], "usage": reply["usage"]}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for index, data in enumerate(events):
                # Chunked transfer encoding: each event leaves as soon as it is written.
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if gap and 0 < index < len(events) - 2:
                    time.sleep(gap)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.server.streams_finished += 1  # type: ignore[attr-defined]
        except OSError:  # the client went away mid-stream (a cancel, a deadline)
            self.server.abandoned += 1  # type: ignore[attr-defined]
            self.close_connection = True

    def _drip(self, body: bytes, interval: float) -> None:
        """Headers at once, then the body byte by byte: every read succeeds, none finishes."""
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            for index in range(len(body)):
                self.wfile.write(body[index:index + 1])
                self.wfile.flush()
                time.sleep(interval)
        except OSError:  # the client gave up: what a deadline is for
            pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LocalOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of 32+ concurrent calls must not be refused by a short listen backlog.
    request_queue_size = 256

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.requests: list[dict[str, Any]] = []
        self.streams_finished = 0
        # Calls being answered now, and the most at once (concurrency tests read it).
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.abandoned = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a deadline, a worker that exited) is expected; other errors print.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> "LocalOpenAIServer":
        threading.Thread(target=self.serve_forever, name="openai-test-server", daemon=True).start()
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = LocalOpenAIServer(args.port)
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
