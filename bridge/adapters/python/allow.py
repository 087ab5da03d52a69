"""The allow-list of the Python adapter and the resolution of targets within it.

Security model (docs/adapters.md says the same for users):

- Nothing is imported unless the allow-list covers it: an entry `math` covers the module
  `math` only; `json.*` covers `json` and every module under it; an entry naming a module
  attribute exactly (`builtins.open`) covers that one object.
- Every name of a target or method is checked before anything is looked up: dotted
  identifiers only, no part starting with `_` (no dunders, no privates).
- Every object reached, step by step, is checked by what it *is*, not by the name it was
  reached through: a module must itself be covered (`statistics.sys` is `sys`, refused);
  a class or function must have its home (`__module__`) covered, or be its covered
  module's own code (a submodule, `json.JSONDecoder` lives in `json.decoder`, or its C
  accelerator, `functools.reduce` lives in `_functools`). So re-exports of other
  modules (`statistics.sqrt` is `math.sqrt`) need that module allowed too.
- The builtins that run or reach arbitrary code (`eval`, `getattr`, `open`, ...) are refused
  wherever they turn up, unless the allow-list names them exactly (`builtins.open`).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import re
import types
from collections.abc import Iterable
from typing import Any

from .errors import NotAllowed

# Shown in every refusal caused by an empty allow-list.
HOW_TO_ENABLE = ("The Python adapter is off: start the worker with `dspex serve --allow MODULE` "
                 "(repeatable; `pkg.*` for a package and its submodules) or DSPEX_ALLOW=math,json")

# Builtins that evaluate code, open files or reach any attribute by a computed name.
DANGEROUS_BUILTIN_NAMES = ("eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr",
                           "globals", "locals", "vars", "breakpoint", "input", "help", "exit", "quit")
_DANGEROUS = {id(getattr(builtins, name)): f"builtins.{name}"
              for name in DANGEROUS_BUILTIN_NAMES if hasattr(builtins, name)}

# str.format reads attributes named inside the format string, dunders included
# ("{0.__init__.__globals__}"): it would print what rule 2 hides.
_FORMAT_NAMES = ("format", "format_map")
_FORMATTERS = {id(str.format), id(str.format_map)}

MAX_TARGET_LENGTH = 300
_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\.\*)?")
# Types whose values are plain data: reaching one as an attribute reaches nothing else.
_PLAIN_TYPES = (str, bytes, int, float, complex, bool, type(None), list, tuple, dict, set, frozenset)


class AllowList:
    """Parsed `--allow` / DSPEX_ALLOW entries: exact modules, `pkg.*` prefixes, exact names."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.exact: set[str] = set()
        self.prefixes: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if not _ENTRY.fullmatch(entry):
                raise ValueError(f"not a module name or pkg.* prefix: {entry!r}")
            if entry.endswith(".*"):
                self.prefixes.add(entry[:-2])
            else:
                self.exact.add(entry)

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def entries(self) -> list[str]:
        return sorted(self.exact | {f"{prefix}.*" for prefix in self.prefixes})

    def covers(self, name: str) -> bool:
        """Whether a module (or exact dotted name) is in the list."""
        if name in self.exact:
            return True
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.prefixes)

    def trusts_home(self, home: str) -> bool:
        """Whether code living in module `home` may be handed out: a covered module, a
        submodule of one, or the C accelerator of one (`_functools` of `functools`)."""
        if self.covers(home):
            return True
        for module in self.exact:
            if home.startswith(module + "."):
                return True
            parent, _, last = module.rpartition(".")
            if home == (f"{parent}._{last}" if parent else f"_{last}"):
                return True
        return False


def check_name(name: Any, what: str = "target") -> list[str]:
    """The parts of a dotted name, refused unless every part is a public identifier."""
    if not isinstance(name, str) or not name:
        raise NotAllowed(f"The {what} must be a dotted name such as \"math.sqrt\"")
    if len(name) > MAX_TARGET_LENGTH:
        raise NotAllowed(f"The {what} is longer than {MAX_TARGET_LENGTH} characters")
    parts = name.split(".")
    for part in parts:
        if part.startswith("_"):
            raise NotAllowed(f"{name}: names starting with '_' are never reachable ({part!r})")
        if not _PART.fullmatch(part):
            raise NotAllowed(f"{name}: {part!r} is not a Python identifier")
    return parts


def _home_of(value: Any) -> str | None:
    """The module a class or function belongs to (a builtin function: the module it is bound to)."""
    if isinstance(value, types.BuiltinFunctionType) and isinstance(value.__self__, types.ModuleType):
        return value.__self__.__name__
    if isinstance(value, types.MethodType):
        return getattr(value.__func__, "__module__", None)
    home = getattr(value, "__module__", None)
    return home if isinstance(home, str) else None


def check_reached(value: Any, allow: AllowList, shown: str, exact_name: str | None = None) -> Any:
    """Refuses a value that would lead outside the allow-list; returns it otherwise.

    `exact_name` is the dotted name it was reached by, when there is one: an exact entry
    (`builtins.open`) admits that object and nothing else.
    """
    if exact_name is not None and exact_name in allow.exact:
        return value
    dangerous = _DANGEROUS.get(id(value))
    if dangerous is not None and getattr(builtins, dangerous.split(".")[1], None) is value:
        raise NotAllowed(f"{shown} is {dangerous}, refused unless the allow-list names it exactly")
    if id(value) in _FORMATTERS or (isinstance(value, types.BuiltinFunctionType)
                                    and isinstance(value.__self__, str) and value.__name__ in _FORMAT_NAMES):
        raise NotAllowed(f"{shown} is str.{value.__name__}, refused: a format string reaches any attribute")
    if isinstance(value, types.ModuleType):
        if not allow.covers(value.__name__):
            raise NotAllowed(f"{shown} is the module {value.__name__}, which is not in the allow-list")
        return value
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, types.BuiltinFunctionType) and not isinstance(value.__self__, (types.ModuleType, type(None))):
        # A method of a builtin kind of value (dict.get, list.count): allowed when the value
        # itself is plain data or of a trusted class.
        owner = type(value.__self__)
        if isinstance(value.__self__, _PLAIN_TYPES) or allow.trusts_home(getattr(owner, "__module__", "")):
            return value
        raise NotAllowed(f"{shown} is a method of a {owner.__qualname__}, which is not in the allow-list")
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        home = _home_of(value)
        if home is None or not allow.trusts_home(home):
            raise NotAllowed(f"{shown} comes from module {home or '(unknown)'}, which is not in the allow-list")
        return value
    # Any other object: its class must be one the allow-list trusts.
    home = getattr(type(value), "__module__", None)
    if not isinstance(home, str) or not allow.trusts_home(home):
        raise NotAllowed(f"{shown} is a {type(value).__qualname__} of module {home}, which is not in the allow-list")
    return value


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def resolve(target: str, allow: AllowList) -> Any:
    """The object a dotted target names, imported and reached only within the allow-list."""
    if not allow:
        raise NotAllowed(HOW_TO_ENABLE)
    parts = check_name(target)
    # The longest covered prefix that is a module (or an exact entry's module) is imported.
    start = None
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        exact_container = end < len(parts) and ".".join(parts[:end + 1]) in allow.exact
        if (allow.covers(name) or exact_container) and _importable(name):
            start = end
            break
    if start is None:
        raise NotAllowed(f"{target}: no module of it is in the allow-list ({', '.join(allow.entries())})")
    module_name = ".".join(parts[:start])
    value: Any = importlib.import_module(module_name)
    if allow.covers(module_name):
        value = check_reached(value, allow, module_name, module_name)
    for index in range(start, len(parts)):
        reached = ".".join(parts[:index + 1])
        try:
            value = getattr(value, parts[index])
        except AttributeError:
            raise NotAllowed(f"{target}: {reached} does not exist") from None
        value = check_reached(value, allow, reached, reached)
    return value


def public_attribute(owner: Any, name: Any, allow: AllowList, shown: str) -> Any:
    """`owner.name` for one public name, checked like every step of a target."""
    check_name(name, "method or attribute name")
    if "." in name:
        raise NotAllowed(f"{name}: one attribute name, not a dotted path")
    try:
        value = getattr(owner, name)
    except AttributeError:
        raise NotAllowed(f"{shown} has no attribute {name!r}") from None
    return check_reached(value, allow, f"{shown}.{name}")
