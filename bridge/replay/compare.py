"""Comparing replies for replay: ignore paths, what legitimately varies, generated ids.

A recorded reply and a replayed one are equal when they differ only in clocks, durations,
memory, worker identity, ids the worker generated, values scrubbed at recording time, or
paths the user said to ignore. `Comparer.merged` builds the reply `--update` records
under those same rules, so a re-recorded file changes only where the replies did.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from ..redact import REDACTED

# Keys whose values legitimately differ between runs: only their presence and kind
# (number, string, object...) are compared. Adapters add their own (DSPy: dspy_loaded).
_CORE_VARYING_KEYS = frozenset({
    "timestamp", "uptime", "execution_time", "duration", "duration_ms", "duration_s", "elapsed",
    "elapsed_ms", "latency", "latency_ms", "mean_latency_ms", "total_latency_ms", "memory_usage",
    "rss", "vms", "created_at", "created_at_epoch", "last_activity", "last_executed", "started_at",
    "worker_id", "pid", "inflight",
})
# Ids a worker generates: uuids, and what adapters make up (DSPy: program ids).
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _from_adapters() -> tuple[frozenset[str], re.Pattern[str]]:
    from ..adapters import default_adapters
    from ..jobs import GENERATED_JOB_ID

    adapters = default_adapters()
    keys = _CORE_VARYING_KEYS.union(*(adapter.replay_varying_keys() for adapter in adapters))
    patterns = [p.lstrip("^").rstrip("$") for p in (GENERATED_JOB_ID, *(
        pattern.pattern for adapter in adapters for pattern in adapter.generated_id_patterns()))]
    return keys, re.compile("|".join([*patterns, _UUID]))


VARYING_KEYS, GENERATED_ID = _from_adapters()
_GENERATED_FULL = re.compile(rf"^(?:{GENERATED_ID.pattern})$")


# -- ignore paths -----------------------------------------------------------------------

_ANY = object()
_ANY_INDEX = object()
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\*|-?\d+)\]")


def parse_ignore_path(text: str) -> tuple[str | None, tuple[Any, ...]]:
    """`[COMMAND:]result.outputs[*].name` → (command or None, path tokens); `*` matches any."""
    command = None
    spec = text.strip()
    head, sep, tail = spec.partition(":")
    if sep and re.fullmatch(r"[A-Za-z_][\w-]*", head):
        command, spec = head, tail
    if spec.startswith("$"):
        spec = spec[1:].lstrip(".")
    tokens: list[Any] = []
    position = 0
    for match in _SEGMENT.finditer(spec):
        if spec[position:match.start()].strip(".") != "":
            raise ValueError(f"cannot parse ignore path {text!r}")
        position = match.end()
        key, index = match.groups()
        if key is not None:
            tokens.append(_ANY if key == "*" else key)
        else:
            tokens.append(_ANY_INDEX if index == "*" else int(index))
    if spec[position:].strip(".") or not tokens:
        raise ValueError(f"cannot parse ignore path {text!r}")
    return command, tuple(tokens)


def _present(value: Any, tokens: tuple[Any, ...]) -> bool:
    """Whether an ignore path's tokens name something inside `value` (same wildcard rules
    as IgnoreRules.matches: `*` any object key, `[*]` any list element)."""
    if not tokens:
        return True
    token, rest = tokens[0], tokens[1:]
    if type(value) is dict:
        if token is _ANY:
            return any(_present(item, rest) for item in value.values())
        if type(token) is str and token in value:
            return _present(value[token], rest)
        return False
    if type(value) is list:
        if token is _ANY_INDEX:
            return any(_present(item, rest) for item in value)
        if type(token) is int and 0 <= token < len(value):
            return _present(value[token], rest)
    return False


class IgnoreRules:
    """Compiled ignore paths, looked up by path length so unrelated paths cost nothing.

    Rules named in `watched` (the ones a user typed) are also checked for whether they
    name anything at all, so that a misspelt `--ignore` is reported instead of silently
    ignoring nothing; `matched` holds those that did.
    """

    def __init__(self, paths: Iterable[str], watched: Iterable[str] = ()) -> None:
        self.by_length: dict[int, list[tuple[str | None, tuple[Any, ...]]]] = defaultdict(list)
        for text in paths:
            command, tokens = parse_ignore_path(text)
            self.by_length[len(tokens)].append((command, tokens))
        self.watching: dict[str, tuple[str | None, tuple[Any, ...]]] = {
            text: parse_ignore_path(text) for text in watched}
        self.matched: list[str] = []

    def note_reply(self, command: str | None, reply: Any) -> None:
        """Marks the watched rules that name something in `reply`; a rule stops being
        checked once it has matched, so this costs nothing after every rule has."""
        for text, (rule_command, tokens) in list(self.watching.items()):
            if (rule_command is None or rule_command == command) and _present(reply, tokens):
                del self.watching[text]
                self.matched.append(text)

    def __bool__(self) -> bool:
        return bool(self.by_length)

    def matches(self, command: str | None, path: tuple[Any, ...]) -> bool:
        for rule_command, tokens in self.by_length.get(len(path), ()):
            if rule_command is not None and rule_command != command:
                continue
            for token, part in zip(tokens, path):
                if token is _ANY:
                    if isinstance(part, int):
                        break
                elif token is _ANY_INDEX:
                    if not isinstance(part, int):
                        break
                elif token != part:
                    break
            else:
                return True
        return False


# -- comparing --------------------------------------------------------------------------


def format_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# Lists of things a worker holds (sessions, programs) come in creation order, which
# concurrent requests make vary; such lists are compared sorted by their identity key.
IDENTITY_KEYS = ("session_id", "program_id", "id")


def _align_by_identity(expected: list[Any], actual: list[Any]) -> tuple[list[Any], list[Any]]:
    if not expected or not actual:
        return expected, actual
    if type(expected[0]) is not dict:
        return expected, actual
    for key in IDENTITY_KEYS:
        if all(type(item) is dict and key in item for item in expected) and \
                all(type(item) is dict and key in item for item in actual):
            if [item[key] for item in expected] == [item[key] for item in actual]:
                return expected, actual  # already in the same order
            return (sorted(expected, key=lambda item: str(item[key])),
                    sorted(actual, key=lambda item: str(item[key])))
    return expected, actual


# The id of a reply the engine encoded: it always comes first.
_REPLY_ID = re.compile(rb'\{"id":(-?[0-9]{1,18}|"(?:[^"\\]|\\.)*")[,}]')


def reply_id(payload: bytes) -> Any:
    """A reply's id without decoding the whole reply (None if it has no usable one)."""
    match = _REPLY_ID.match(payload)
    if match is not None:
        token = match.group(1)
        return int(token) if token[0] != 34 else orjson.loads(token)
    try:
        reply = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    rid = reply.get("id") if type(reply) is dict else None
    return None if type(rid) in (dict, list) else rid


_ABSENT = object()
_dumps = orjson.dumps


class Comparer:
    """Compares replies; learns recorded→replayed generated ids on the way."""

    def __init__(self, ignore: IgnoreRules) -> None:
        self.ignore = ignore if ignore else None
        self.aliases: dict[str, str] = {}

    def compare(self, expected: Any, actual: Any, command: str | None) -> list[tuple[str, Any, Any, str]]:
        found: list[tuple[str, Any, Any, str]] = []
        self._walk(expected, actual, (), command, found)
        return found

    def _strings_equal(self, expected: str, actual: str) -> bool:
        if _GENERATED_FULL.match(expected) and _GENERATED_FULL.match(actual):
            self.aliases.setdefault(expected, actual)
            return True
        if GENERATED_ID.search(expected):
            return GENERATED_ID.sub("<id>", expected) == GENERATED_ID.sub("<id>", actual)
        return False

    def _walk(self, expected: Any, actual: Any, path: tuple[Any, ...], command: str | None,
              found: list[tuple[str, Any, Any, str]]) -> None:
        kind = type(expected)
        if kind is type(actual) and kind is not dict and kind is not list and expected == actual:
            return
        ignore = self.ignore
        if kind is dict and type(actual) is dict:
            if len(expected) == len(actual) and self._same_but_varying(expected, actual):
                return
            for key, value in expected.items():
                other = actual.get(key, _ABSENT)
                value_type = type(value)
                if value_type is type(other):
                    # Fast path: equal, and equal once serialised (which also tells 1
                    # from 1.0 and true), so an unchanged subtree costs one C call.
                    if value == other and (
                            (value_type is not dict and value_type is not list) or _dumps(value) == _dumps(other)):
                        continue
                    if key in VARYING_KEYS:
                        continue  # same type, so same kind: all that is compared here
                elif key in VARYING_KEYS and other is not _ABSENT and _kind(value) == _kind(other):
                    continue
                child = (*path, key)
                if ignore is not None and ignore.matches(command, child):
                    continue
                if other is _ABSENT:
                    found.append((format_path(child), value, None, "missing"))
                elif key in VARYING_KEYS:
                    found.append((format_path(child), value, other, "value"))
                else:
                    self._walk(value, other, child, command, found)
            if len(actual) != len(expected) or actual.keys() != expected.keys():
                for key, other in actual.items():
                    if key not in expected:
                        child = (*path, key)
                        if not (ignore is not None and ignore.matches(command, child)):
                            found.append((format_path(child), None, other, "extra"))
            return
        if kind is list and type(actual) is list:
            expected, actual = _align_by_identity(expected, actual)
            for index, (value, other) in enumerate(zip(expected, actual)):
                child = (*path, index)
                if ignore is not None and ignore.matches(command, child):
                    continue
                self._walk(value, other, child, command, found)
            if len(expected) != len(actual):
                found.append((format_path((*path, "length")), len(expected), len(actual), "value"))
            return
        if type(expected) is str:
            if expected == REDACTED:  # scrubbed when recorded: nothing left to compare with
                return
            if type(actual) is str and self._strings_equal(expected, actual):
                return
        if expected == actual and _kind(expected) == _kind(actual) and type(expected) is type(actual):
            return
        found.append((format_path(path), expected, actual, "value"))

    @staticmethod
    def _same_but_varying(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
        """Whether two objects are equal apart from varying values, in a few C-level
        calls (the usual case); False sends the caller through the key-by-key walk."""
        varying = VARYING_KEYS.intersection(expected)
        if not varying:
            return expected == actual and _dumps(expected) == _dumps(actual)
        expected_rest = dict(expected)
        actual_rest = dict(actual)
        for key in varying:
            value = expected_rest.pop(key)
            other = actual_rest.pop(key, _ABSENT)
            if type(value) is not type(other) and (other is _ABSENT or _kind(value) != _kind(other)):
                return False
        return expected_rest == actual_rest and _dumps(expected_rest) == _dumps(actual_rest)

    def _differs(self, expected: Any, actual: Any, path: tuple[Any, ...], command: str | None) -> bool:
        found: list[tuple[str, Any, Any, str]] = []
        self._walk(expected, actual, path, command, found)
        return bool(found)

    def _ignored(self, command: str | None, path: tuple[Any, ...]) -> bool:
        return self.ignore is not None and self.ignore.matches(command, path)

    def merged(self, expected: Any, actual: Any, command: str | None, path: tuple[Any, ...] = ()) -> Any:
        """The reply `--update` records: the new value where it really differs, the
        recorded one wherever the comparison accepts both (clocks, generated ids, ignored
        paths), so that a re-recorded file changes only where the replies changed."""
        if type(expected) is dict and type(actual) is dict:
            out: dict[str, Any] = {}
            for key, value in expected.items():
                child = (*path, key)
                if key in actual:
                    other = actual[key]
                    # Compared as a one-key object so VARYING_KEYS and ignore rules apply.
                    differs = self._differs({key: value}, {key: other}, path, command)
                    out[key] = self.merged(value, other, command, child) if differs else value
                elif self._ignored(command, child):
                    out[key] = value
            for key, other in actual.items():
                if key not in expected and not self._ignored(command, (*path, key)):
                    out[key] = self.restore_ids(other)
            return out
        if type(expected) is list and type(actual) is list and len(expected) == len(actual):
            if _align_by_identity(expected, actual)[0] is expected:  # same order: element by element
                merged_list = []
                for index, (value, other) in enumerate(zip(expected, actual)):
                    child = (*path, index)
                    keep = self._ignored(command, child) or not self._differs(value, other, child, command)
                    merged_list.append(value if keep else self.merged(value, other, command, child))
                return merged_list
        return self.restore_ids(actual)

    def restore_ids(self, value: Any) -> Any:
        """A replayed value with this replay's generated ids turned back into the recorded ones."""
        if not self.aliases:
            return value
        recorded = {new: old for old, new in self.aliases.items()}
        return _substitute_ids(value, recorded)

    def rewrite(self, value: Any) -> Any:
        """A request with recorded generated ids replaced by the ones this replay produced."""
        if not self.aliases:
            return value
        if isinstance(value, str):
            return self.aliases.get(value, value)
        if isinstance(value, dict):
            return {k: self.rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.rewrite(v) for v in value]
        return value


def _substitute_ids(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value in mapping:
            return mapping[value]
        return GENERATED_ID.sub(lambda found: mapping.get(found.group(0), found.group(0)), value)
    if isinstance(value, dict):
        return {k: _substitute_ids(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_ids(v, mapping) for v in value]
    return value


__all__ = ["GENERATED_ID", "VARYING_KEYS", "Comparer", "IgnoreRules", "format_path", "parse_ignore_path",
           "reply_id"]
