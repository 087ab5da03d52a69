"""The benchmark's floor: the least a Python port worker can do per request.

Reads a 4-byte big-endian length and the frame, decodes it with orjson, builds a ping-like
reply, encodes it and writes it back. No threads, no validation, no state: whatever
`dspex serve` costs beyond this is the price of being a real worker.
"""

import os
import sys
import time

import orjson


def main() -> None:
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        request = orjson.loads(stdin.read(int.from_bytes(header, "big")))
        reply = orjson.dumps({"id": request.get("id"), "success": True,
                              "result": {"status": "ok", "timestamp": time.time()},
                              "timestamp": time.time()})
        os.write(1, len(reply).to_bytes(4, "big") + reply)


if __name__ == "__main__":
    main()
