"""A local OpenAI-compatible chat server for tests and benchmarks.

It answers `POST /v1/chat/completions` in DSPy's ChatAdapter format, computing each
output from the request itself (so a test cannot pass on a canned answer), and sleeps
when the model name asks for it (`delay-200` waits 200 ms) so concurrency can be measured.
`drip-300` sends the reply body one byte every 300 ms (a server that is alive but never
done, for total-deadline tests); `echo-headers` repeats the Authorization header in every
answer. Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
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
RESPOND_MARKER = "\n\nRespond with the corresponding output fields"
INPUT_BLOCK = re.compile(r"\[\[ ## (?P<name>\w+) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## |\Z)", re.S)


def _output_fields(system: str) -> list[tuple[str, str]]:
    """Reads the output fields and their types from ChatAdapter's system message."""
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
        if m := re.search(r"delay-(\d+)", model):
            time.sleep(int(m.group(1)) / 1000)
        if "fail-500" in model:
            self._send(500, b'{"error":{"message":"internal failure for tests"}}')
            return
        messages = request.get("messages") or []
        system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), "")
        last_user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        # ChatAdapter ends the message with an instruction that is not part of the last input.
        last_user = last_user.split(RESPOND_MARKER, 1)[0]
        inputs = {m["name"]: m["value"].strip() for m in INPUT_BLOCK.finditer(last_user)}
        if "echo-headers" in model:  # a misbehaving LM that repeats the request's credentials
            inputs["authorization"] = str(self.headers.get("authorization"))
        fields = _output_fields(system) or [("answer", "str")]
        values = {name: learned_value(model, name, messages, system, inputs) or _value_for(name, type_text, inputs)
                  for name, type_text in fields}
        # JSONAdapter (GEPA's proposer uses it) asks for a JSON object, in response_format or in words.
        if request.get("response_format") or "Outputs will be a JSON object" in system:
            content = json.dumps(values)
        else:
            content = "\n\n".join(f"[[ ## {name} ## ]]\n{value}" for name, value in values.items()) \
                + "\n\n[[ ## completed ## ]]"
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
        body = json.dumps(reply).encode()
        if m := re.search(r"drip-(\d+)", model):
            self._drip(body, int(m.group(1)) / 1000)
            return
        self._send(200, body)

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
