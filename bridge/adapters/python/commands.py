"""The Python adapter's commands: python.call, python.get, python.refs, python.release.

Calls and gets run concurrently (scheduling "read", like execute_program): a slow call
never holds up a ping or the session's other calls. Release waits for the session's
earlier requests, so a reference is not dropped under a call still using it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import InvalidArguments
from ...registry import Arg, Registry, command
from .allow import public_attribute, resolve
from .errors import NotAllowed, PythonCallFailed
from .refs import RefTable, resolve_args, to_reply

if TYPE_CHECKING:
    from ...engine import Context
    from . import PythonAdapter

COMMANDS = Registry()

_TARGET_HELP = 'a dotted name ("math.sqrt") or a reference {"ref": "r-…"}'


def _adapter(ctx: Context) -> PythonAdapter:
    adapter: PythonAdapter = ctx.engine.adapter("python")  # type: ignore[assignment]
    adapter.require_enabled()
    return adapter


def _table(ctx: Context, adapter: PythonAdapter) -> RefTable:
    return ctx.session.slot(adapter).refs  # type: ignore[no-any-return]


def _reach(args: dict[str, Any], ctx: Context, name_key: str) -> tuple[PythonAdapter, RefTable, Any, str]:
    """What a request reaches: the target, then its attribute `args[name_key]` if given;
    with the adapter, the session's references and how to name it in messages."""
    adapter = _adapter(ctx)
    table = _table(ctx, adapter)
    target, shown = _target(args, ctx, adapter, table)
    name = args.get(name_key)
    if name is not None:
        target = public_attribute(target, name, adapter.allow, shown)
        shown = f"{shown}.{name}"
    return adapter, table, target, shown


def _target(args: dict[str, Any], ctx: Context, adapter: PythonAdapter, table: RefTable) -> tuple[Any, str]:
    """The object a request's target names, and how to name it in messages."""
    target = args.get("target")
    if isinstance(target, dict):
        if set(target) != {"ref"}:
            raise InvalidArguments('a target object must be {"ref": "r-…"} and nothing else')
        ref = table.get(target["ref"], ctx.session_id)
        return ref.value, ref.ref_id
    if isinstance(target, str):
        return resolve(target, adapter.allow), target
    raise InvalidArguments(f"'target' must be {_TARGET_HELP}")


@command("python.call", registry=COMMANDS, scheduling="read", args=(
    Arg("target", "string|object", required=True, help=_TARGET_HELP),
    Arg("method", "string", help="call this method of the target instead of the target itself"),
    Arg("args", "array", help='positional arguments; {"ref": "r-…"} stands for a referenced object'),
    Arg("kwargs", "object", help="keyword arguments, likewise"),
    Arg("session_id", "string", help="the session that holds the references"),
))
def python_call(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Calls an allowed function, class or method; a result that is not JSON comes back as a reference."""
    adapter, table, target, shown = _reach(args, ctx, "method")
    if not callable(target):
        raise InvalidArguments(f"{shown} is a {type(target).__qualname__}, which cannot be called "
                               "(python.get reads attributes)")
    positional = resolve_args(args.get("args") or [], table, ctx.session_id)
    keywords = resolve_args(args.get("kwargs") or {}, table, ctx.session_id)
    try:
        result = target(*positional, **keywords)
    except NotAllowed:
        raise
    except Exception as exc:
        raise PythonCallFailed(f"{shown} raised {type(exc).__name__}: {exc}",
                               details={"exception": type(exc).__name__}) from None
    return to_reply(result, table, adapter.allow, shown)


@command("python.get", registry=COMMANDS, scheduling="read", read_only=True, args=(
    Arg("target", "string|object", required=True, help=_TARGET_HELP),
    Arg("attribute", "string", help="an attribute of the target (needed for a reference)"),
    Arg("session_id", "string"),
))
def python_get(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Reads an attribute of an allowed module or of a reference."""
    adapter, table, target, shown = _reach(args, ctx, "attribute")
    return to_reply(target, table, adapter.allow, shown)


@command("python.refs", registry=COMMANDS, scheduling="read", read_only=True,
         args=(Arg("session_id", "string"),))
def python_refs(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The references a session holds, with type and repr."""
    adapter = _adapter(ctx)
    refs = _table(ctx, adapter).listing()
    return {"session_id": ctx.session_id, "refs": refs, "count": len(refs)}


@command("python.release", registry=COMMANDS, args=(
    Arg("refs", "array", help='reference ids ("r-…") to drop'),
    Arg("all", "boolean", help="drop every reference of the session"),
    Arg("session_id", "string"),
))
def python_release(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drops references of a session (named ones, or all)."""
    adapter = _adapter(ctx)
    wanted = args.get("refs")
    if args.get("all"):
        ids = None
    elif isinstance(wanted, list) and all(isinstance(item, str) for item in wanted):
        ids = wanted
    else:
        raise InvalidArguments("python.release: give 'refs' (a list of \"r-…\" ids) or 'all': true")
    released, unknown = _table(ctx, adapter).release(ids)
    return {"session_id": ctx.session_id, "released": released, "unknown": unknown}

