"""A seeded generator of malformed and hostile input for `dspex serve`.

Each input is a byte string that leaves the stream in sync (filler completes any frame a
lying header left open), so inputs can be concatenated, split into random writes, and
replayed one by one to find the one that broke the worker. No input may reach the
network: every LM the fuzzer configures is `mock`, and `shutdown` is never sent.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any


from bridge import catalog

REGISTRY = catalog()  # every command a default worker serves

from .oracle import Expectations, ReferenceFramer, frame_expectations

# Commands the fuzzer may send: `shutdown` would end the run by design.
SAFE_COMMANDS = sorted(name for name in REGISTRY.names() if name != "shutdown")
# DSPy work costs milliseconds per request; lookups cost microseconds.
_HEAVY = {"create_program", "create_gemini_program", "execute_program", "execute_gemini_program",
          "configure_lm", "reset_state", "cleanup"}
SESSIONS = ["s1", "s2", "anonymous", "\u00e9\u00e8"]
PROGRAMS = ["p1", "p2", "p3"]
FIELD_NAMES = ["question", "answer", "self", "class", "__init__", "_x", "signature", "demos", "lm", "config",
               "instance", "reasoning", "json", "copy", "type", "id", "input", "keywords", "2x", "a-b", "caf\u00e9",
               "", " ", "x" * 200]
TYPES = ["string", "integer", "list<string>", "dict<string,integer>", "Literal['a','b']", "os.system",
         "list<" * 40 + "int" + ">" * 40, "union<integer|none>", "Optional[float]", "", "x" * 2000]


class Raw:
    """JSON text placed as is (numbers and strings Python cannot spell through json.dumps)."""

    def __init__(self, text: str) -> None:
        self.text = text


class Pairs:
    """A JSON object written from key-value pairs, so duplicate keys are possible."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def to_json(value: Any) -> str:
    """Serializes generator values; Raw and Pairs pass hostile text through."""
    import json

    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class FuzzInput:
    kind: str
    data: bytes
    expects: Expectations

    def describe(self, limit: int = 600) -> str:
        shown = self.data if len(self.data) <= limit else self.data[:limit] + b"..."
        return f"{self.kind} ({len(self.data)} bytes): {shown!r}"


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class Generator:
    """Makes inputs from one seed; the same seed always gives the same inputs."""

    def __init__(self, seed: int, max_frame_size: int) -> None:
        self.rng = random.Random(seed)
        self.max_frame_size = max_frame_size
        self.counter = 0
        self.kinds = [
            (30, self.request), (6, self.wrong_command), (6, self.wrong_args), (10, self.odd_id),
            (4, self.random_payload), (2, self.random_stream), (5, self.truncated), (4, self.header_longer),
            (3, self.header_shorter), (2, self.empty_frame), (2, self.oversized), (3, self.bad_utf8),
            (1, self.deep), (4, self.huge_numbers), (3, self.not_an_object), (2, self.duplicate_keys),
            (4, self.signature), (3, self.lm_config), (4, self.pipelined),
        ]
        self.weights = [w for w, _ in self.kinds]

    # -- values -------------------------------------------------------------------------

    def unique_id(self) -> Any:
        """A fresh id of a random JSON type: integers of every size, strings of every shape."""
        self.counter += 1
        n = self.counter
        rng = self.rng
        choice = rng.randrange(12)
        if choice < 4:
            return n
        if choice == 4:
            return -n
        if choice == 5:
            return rng.choice([2**63 - 1 - n, 2**64 + n, 10**30 + n, -(2**63) - n, 2**200 + n, 2**53 + n])
        if choice == 6:
            return f"{n}"
        if choice == 7:
            return f"{n}:{self.string()}"
        if choice == 8:
            return n + 0.5
        if choice == 9:
            return rng.choice([True, False])
        return rng.choice([f"id-{n}", f"\u2028{n}\u0000", f"{n}" + "x" * rng.randrange(2000)])

    def string(self) -> str:
        rng = self.rng
        return rng.choice([
            "", "\u0000", "\\", '"', "\ud83d\ude00", "\u202e", "\u2028", "\x7f\x01",
            "a" * rng.randrange(1, 3000), "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(1, 20))),
            "ping", "{\"id\": 7}", "%s%n", "../../etc/passwd", "sk-" + "a" * 40,
        ])

    def number(self) -> Any:
        return self.rng.choice([
            0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308,
            Raw("1e999"), Raw("-1e999"), Raw("1e-999"), Raw("123456789012345678901234567890.5e10"), Raw("-0"),
        ])

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        choice = rng.randrange(9 if depth < 3 else 5)
        if choice == 0:
            return None
        if choice == 1:
            return rng.choice([True, False])
        if choice == 2:
            return self.number()
        if choice in (3, 4):
            return self.string()
        if choice in (5, 6):
            return [self.value(depth + 1) for _ in range(rng.randrange(4))]
        return {self.string()[:30]: self.value(depth + 1) for _ in range(rng.randrange(4))}

    def args_for(self, name: str) -> Any:
        """Args of a command: each documented arg right, wrong-typed or missing."""
        rng = self.rng
        if name not in REGISTRY:
            return {self.string()[:20]: self.value()}
        args: dict[str, Any] = {}
        for arg in REGISTRY.get(name).args:
            roll = rng.random()
            if roll < 0.35:
                continue
            if roll < 0.65:
                args[arg.name] = self.value()
            else:
                args[arg.name] = self.plausible(arg.name)
        if name in ("configure_lm", "create_gemini_program") or "model" in args:
            # Anything but the mock would make the next execute reach for the network.
            args["model"] = "mock" if rng.random() < 0.8 else rng.choice([3, [], {}, True])
            args.pop("provider", None)
            args.pop("test_call", None)
        if "program_data" in args and isinstance(args["program_data"], dict):
            args["program_data"]["model"] = "mock"
        return args

    def plausible(self, arg: str) -> Any:
        rng = self.rng
        if arg in ("session_id",):
            return rng.choice(SESSIONS)
        if arg in ("program_id", "id"):
            return rng.choice(PROGRAMS)
        if arg == "signature":
            return self.hostile_signature()
        if arg == "inputs":
            return {rng.choice(FIELD_NAMES): self.value() for _ in range(rng.randrange(3))}
        if arg == "demos":
            return [{rng.choice(FIELD_NAMES): self.value()} for _ in range(rng.randrange(3))]
        if arg == "options":
            return rng.choice([{"temperature": self.number()}, [["n", 2]], {"api_base": "http://127.0.0.1:9/v1"},
                               {"mock_response": "forged"}, [1, 2], "x"])
        if arg == "program_type":
            return rng.choice(["predict", "chain_of_thought", "ChainOfThought", "react", "", 5])
        return self.value()

    def hostile_signature(self) -> Any:
        rng = self.rng
        if rng.random() < 0.3:
            names = [rng.choice(FIELD_NAMES) for _ in range(rng.randrange(1, 4))]
            return f"{', '.join(names[:-1] or ['question'])} -> {names[-1]}: {rng.choice(TYPES)}"
        def fields() -> Any:
            if rng.random() < 0.1:
                return self.value()
            return [{"name": rng.choice(FIELD_NAMES), "type": rng.choice(TYPES + [None, 5]),
                     "description": rng.choice(["", "d" * rng.randrange(20000), self.string()])}
                    for _ in range(rng.choice([0, 1, 2, 3, 150]))]
        return {"name": rng.choice(["QA", "", "x" * 500, self.string()]), "description": self.string(),
                "inputs": fields(), "outputs": fields()}

    def request_obj(self, command: Any = None, args: Any = None, request_id: Any = None) -> dict[str, Any]:
        rng = self.rng
        if command is None:
            heavy = rng.random() < 0.1
            command = rng.choice([c for c in SAFE_COMMANDS if (c in _HEAVY) == heavy])
        obj: dict[str, Any] = {"id": self.unique_id() if request_id is None else request_id, "command": command}
        if args is not None or rng.random() < 0.9:
            obj["args"] = args if args is not None else self.args_for(command if isinstance(command, str) else "")
        if rng.random() < 0.3:
            obj["timestamp"] = rng.choice(["2024-01-01T00:00:00Z", 5, None, self.string()])
        return obj

    def encoded(self, obj: Any) -> bytes:
        return to_json(obj).encode("utf-8", "surrogatepass")

    def fits(self, payload: bytes) -> bytes:
        # Only frames the worker will read: oversized ones have their own generator.
        return payload if len(payload) <= self.max_frame_size else self.encoded(self.request_obj("ping"))

    # -- kinds --------------------------------------------------------------------------

    def request(self) -> bytes:
        return frame(self.fits(self.encoded(self.request_obj())))

    def wrong_command(self) -> bytes:
        command = self.rng.choice([[], {}, ["ping"], {"ping": 1}, 0, 1.5, None, True, "", " ping", "PING",
                                   "x" * self.rng.randrange(1, 20000), "\u0000", Raw("1e999"), self.string()])
        return frame(self.fits(self.encoded(self.request_obj(command=command, args={}))))

    def wrong_args(self) -> bytes:
        args = self.rng.choice([[], "x", 1, True, Raw("1e999"), [{"session_id": "s1"}], None])
        command = self.rng.choice(SAFE_COMMANDS)
        return frame(self.encoded(Pairs([("id", self.unique_id()), ("command", command), ("args", args)])))

    def odd_id(self) -> bytes:
        rng = self.rng
        request_id = rng.choice([None, [], [1], {}, {"id": 1}, Raw("1e999"), Raw("-1e999"), Raw("1.0"),
                                 Raw("12345678901234567890123456789"), Raw("-9223372036854775809"),
                                 Raw('"\\ud800"'), self.unique_id(), self.unique_id()])
        if isinstance(request_id, Raw) and request_id.text.lstrip("-").isdigit():
            self.counter += 1
            request_id = Raw(request_id.text + str(self.counter))  # still unique
        pairs = [("command", "ping"), ("args", {})]
        if rng.random() < 0.9:
            pairs.insert(rng.randrange(3), ("id", request_id))
        return frame(self.encoded(Pairs(pairs)))

    def random_payload(self) -> bytes:
        size = self.rng.choice([1, 2, 5, 50, 500, self.max_frame_size])
        return frame(self.rng.randbytes(self.rng.randrange(size + 1)))

    def random_stream(self) -> bytes:
        # Unframed bytes; the sync step keeps only streams whose lengths are cheap to skip.
        return b"\0" + self.rng.randbytes(self.rng.randrange(1, 400))

    def truncated(self) -> bytes:
        payload = self.encoded(self.request_obj())[: self.max_frame_size]
        return frame(payload[: self.rng.randrange(len(payload))])

    def header_longer(self) -> bytes:
        payload = self.fits(self.encoded(self.request_obj()))
        extra = self.rng.randrange(1, 100)
        return struct.pack(">I", min(len(payload) + extra, self.max_frame_size)) + payload

    def header_shorter(self) -> bytes:
        payload = self.fits(self.encoded(self.request_obj()))
        cut = self.rng.randrange(len(payload))
        # What follows the short frame is read as the next frame: give it a small header.
        tail = struct.pack(">I", self.rng.randrange(0, 64)) + payload[cut:]
        return struct.pack(">I", cut) + payload[:cut] + tail

    def empty_frame(self) -> bytes:
        return frame(b"")

    def oversized(self) -> bytes:
        length = self.max_frame_size + self.rng.choice([1, 2, 100, self.max_frame_size])
        return struct.pack(">I", length) + self.encoded(self.request_obj("ping"))

    def bad_utf8(self) -> bytes:
        junk = self.rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"])
        obj = self.request_obj("ping", args={"x": "MARK"})
        payload = self.encoded(obj).replace(b"MARK", b"a" + junk + b"b")
        if self.rng.random() < 0.3:
            payload = payload.replace(b'"ping"', b'"pi' + junk + b'ng"')
        return frame(payload)

    def deep(self) -> bytes:
        depth = self.rng.choice([100, 500, 10_000])
        nested = Raw("[" * depth + "]" * depth) if self.rng.random() < 0.5 else \
            Raw('{"a":' * depth + "1" + "}" * depth)
        target = self.rng.choice(["args", "id", "command"])
        obj = self.request_obj("ping", args={"x": nested} if target == "args" else {})
        if target != "args":
            obj[target] = nested
        return frame(self.fits(self.encoded(obj)))

    def huge_numbers(self) -> bytes:
        obj = self.request_obj(self.rng.choice(["ping", "get_stats", "configure_lm"]),
                               args={"temperature": self.number(), "max_tokens": self.number(), "model": "mock",
                                     "x": [self.number() for _ in range(3)]})
        return frame(self.encoded(obj))

    def not_an_object(self) -> bytes:
        return frame(self.encoded(self.rng.choice([[], [{"id": 1, "command": "ping"}], "ping", 1, None, True,
                                                    Raw("1e999"), Raw(" "), Raw("{} {}")])))

    def duplicate_keys(self) -> bytes:
        rid = self.unique_id()
        pairs = [("id", rid), ("command", "ping"), ("command", self.rng.choice([[], "nope", "get_stats"])),
                 ("args", {}), ("args", self.rng.choice([[], {}, None]))]
        return frame(self.encoded(Pairs(pairs)))

    def signature(self) -> bytes:
        rng = self.rng
        command = rng.choice(["create_program", "create_program", "execute_program", "get_program_info"])
        args: dict[str, Any] = {"id": rng.choice(PROGRAMS), "program_id": rng.choice(PROGRAMS),
                                "session_id": rng.choice(SESSIONS), "signature": self.hostile_signature()}
        if command == "execute_program":
            args["inputs"] = self.plausible("inputs")
            if rng.random() < 0.3:
                args["program_data"] = {"signature": self.hostile_signature(), "program_type": "predict",
                                        "model": "mock"}
        if rng.random() < 0.3:
            args["demos"] = self.plausible("demos")
        return frame(self.fits(self.encoded(self.request_obj(command, args=args))))

    def lm_config(self) -> bytes:
        args = {key: self.value() for key in self.rng.sample(
            ["api_key", "api_base", "temperature", "max_tokens", "cache", "num_retries", "timeout", "extra"],
            self.rng.randrange(1, 5))}
        args["model"] = "mock"
        if self.rng.random() < 0.5:
            args["session_id"] = self.rng.choice(SESSIONS)
        return frame(self.encoded(self.request_obj("configure_lm", args=args)))

    def pipelined(self) -> bytes:
        return b"".join(self.request() for _ in range(self.rng.randrange(2, 8)))

    # -- inputs -------------------------------------------------------------------------

    def next_input(self) -> FuzzInput:
        """One input that leaves the stream in sync, with the replies it owes."""
        while True:
            kind = self.rng.choices(self.kinds, weights=self.weights)[0][1]
            data = kind()
            framer = ReferenceFramer(self.max_frame_size)
            frames = framer.feed(data)
            filler = framer.bytes_to_sync(self.rng.choice([b" ", b"\0"]))
            if filler is None:
                continue
            frames += framer.feed(filler)
            assert not framer.buffer and not framer.skip
            expects = Expectations()
            for payload in frames:
                if payload is not None:
                    expects.add(frame_expectations(payload))
            return FuzzInput(kind.__name__, data + filler, expects)
