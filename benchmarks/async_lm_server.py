"""An asyncio OpenAI-compatible chat server for the streaming benchmark.

tests/openai_server.py spends a thread per connection; 2,048 calls at once would measure
that server, not the worker. This one answers the same prompts the same way (it reuses
that module's answer_fields and render) on one event loop: `delay-N` in the model name
waits N ms without a thread, `"stream": true` sends server-sent events of 4 characters
each (`chunk-N`: N characters). Binds 127.0.0.1 only; prints its base URL on stdout.

    python benchmarks/async_lm_server.py [--port 0]
    python benchmarks/async_lm_server.py --self-test 2048   # the server alone, timed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from openai_server import answer_fields, render  # noqa: E402


def completion(request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model = str(request.get("model", ""))
    messages = request.get("messages") or []
    system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), "")
    user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    fmt, values = answer_fields(system, user)
    content = render(fmt, values)
    usage = {"prompt_tokens": 10, "completion_tokens": len(content.split()), "total_tokens": 10 + len(content.split())}
    return content, {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}], "usage": usage}


def sse(reply: dict[str, Any], content: str, size: int) -> bytes:
    base = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"], "model": reply["model"]}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                                      ).encode() + b"\n\n"

    parts = [event({"role": "assistant", "content": ""})]
    parts += [event({"content": content[i:i + size]}) for i in range(0, len(content), size)]
    parts.append(event({}, "stop"))
    parts.append(b"data: " + json.dumps({**base, "choices": [], "usage": reply["usage"]}).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            if lines[0].startswith("GET"):
                payload = json.dumps({"data": [{"id": "local-model", "object": "model"}]}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                await writer.drain()
                continue
            request = json.loads(body)
            model = str(request.get("model", ""))
            if m := re.search(r"delay-(\d+)", model):
                await asyncio.sleep(int(m.group(1)) / 1000)
            content, reply = completion(request)
            if request.get("stream") is True:
                size = int(m.group(1)) if (m := re.search(r"chunk-(\d+)", model)) else 4
                payload = sse(reply, content, size)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
            else:
                payload = json.dumps(reply).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def self_test(url: str, count: int, delay_ms: int) -> float:
    """`count` concurrent chat calls of `delay_ms` from raw asyncio sockets: the server alone."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    body = json.dumps({"model": f"openai/delay-{delay_ms}", "messages": [
        {"role": "system", "content": "Your output fields are:\n1. `answer` (str)\nAll interactions will be structured"},
        {"role": "user", "content": "[[ ## question ## ]]\nhello\n\nRespond with the corresponding output fields"}]}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - started


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--self-test", type=int, metavar="N", help="time N concurrent 200 ms calls against URL")
    parser.add_argument("--url", help="the server to self-test")
    args = parser.parse_args()
    if args.self_test:
        print(json.dumps({"calls": args.self_test, "seconds": asyncio.run(self_test(args.url, args.self_test, 200))}))
        return
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
