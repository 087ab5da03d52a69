"""Portable programs: a compiled program as a JSON document any worker can rebuild.

`export_program` turns a program of the session into a document (signature, program type
and the options that built it, DSPy's saved state with demos and instructions, the DSPy
version); `import_program` rebuilds it. The same state rides in `program_data`, so a pool
worker that never saw a compiled program rebuilds the compiled one, not the blank one.

DSPy's `load_state` trusts its input: it sets every key of a predictor's state as an
attribute and updates fields one by one, so a state that does not fit leaves a program
half-updated. Every state is therefore checked against the freshly built module first,
and only the keys DSPy itself writes are let through.
"""

from __future__ import annotations

from typing import Any

from ...context import Context
from ...errors import BridgeError
from ...registry import BUILDS_STATE, Arg, command
from .commands import COMMANDS, _check_program_room, _programs, build_record
from .errors import InvalidProgramState, ProgramExists, ProgramNotFound
from .json_values import to_json_safe
from .state import ProgramRecord

FORMAT = "dspex.program"
VERSION = 1
# Keys of a program's description that only report on it: everything else rebuilds it
# (whatever create_program was given: demos, options, tools, adapter, model, ...).
_REPORT_ONLY = frozenset({"program_id", "status", "signature", "program_type", "signature_class",
                          "field_mapping", "fallback_used", "signature_def", "state", "demos",
                          "compiled_from", "optimizer"})
# What DSPy 3.4's Predict.dump_state writes; load_state would set any other key as an attribute.
_PREDICTOR_KEYS = frozenset({"traces", "train", "demos", "signature", "lm", "fields"})
# Demo keys DSPy adds besides the signature's fields (bootstrapped demos are marked).
_DEMO_EXTRA_KEYS = frozenset({"augmented"})
MAX_DEMOS_PER_PREDICTOR = 1_000


def dspy_version() -> str:
    from .loader import load_dspy

    return str(load_dspy().__version__)


def _major(version: Any) -> str:
    return str(version).split(".", 1)[0]


def _predictors(module: Any) -> list[tuple[str, Any]]:
    return list(module.named_predictors())


def _is_single_predictor(module: Any) -> bool:
    # A bare Predict names itself "self" and dumps its own state, not a map of predictors.
    names = [name for name, _ in _predictors(module)]
    return names == ["self"]


def dump_program_state(module: Any) -> dict[str, Any]:
    """DSPy's saved state of a module, JSON-safe and without per-predictor LMs (an LM's
    state names where calls go; the worker's configured LM decides that)."""
    state = module.dump_state()
    if _is_single_predictor(module):
        state = {**state, "lm": None}
    else:
        state = {name: ({**value, "lm": None} if isinstance(value, dict) else value)
                 for name, value in state.items()}
    return to_json_safe(state)


def _predictor_states(module: Any, state: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, predictor, its state) for every predictor, or InvalidProgramState."""
    if not isinstance(state, dict):
        raise InvalidProgramState("'state' must be an object (DSPy's dump_state of the program)")
    predictors = _predictors(module)
    if _is_single_predictor(module):
        return [("self", predictors[0][1], state)]
    expected = [name for name, _ in predictors]
    if sorted(state) != sorted(expected):
        raise InvalidProgramState(
            f"the state's predictors ({', '.join(sorted(map(str, state))[:20]) or 'none'}) are not the "
            f"program's ({', '.join(expected)})")
    return [(name, predictor, state[name]) for name, predictor in predictors]


def _check_predictor_state(name: str, predictor: Any, state: Any) -> None:
    where = f"predictor {name!r}"
    if not isinstance(state, dict):
        raise InvalidProgramState(f"{where}: its state must be an object")
    unknown = sorted(str(key) for key in state if key not in _PREDICTOR_KEYS)
    if unknown:
        raise InvalidProgramState(f"{where}: unknown state keys {', '.join(unknown[:10])}")
    if state.get("lm") is not None:
        raise InvalidProgramState(f"{where}: a saved LM is not accepted (the worker's configured LM is used)")
    signature = state.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("instructions"), str):
        raise InvalidProgramState(f"{where}: 'signature' must hold 'instructions' (a string) and 'fields'")
    fields = signature.get("fields")
    field_names = list(predictor.signature.fields)
    if not isinstance(fields, list) or len(fields) != len(field_names):
        count = len(fields) if isinstance(fields, list) else "no"
        raise InvalidProgramState(f"{where}: the state has {count} fields, the signature has "
                                  f"{len(field_names)} ({', '.join(field_names)})")
    for index, item in enumerate(fields):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("prefix", "description")):
            raise InvalidProgramState(f"{where}: field {index} must have a string 'prefix' and 'description'")
        # DSPy writes `${name}` as the description of a field that has none: a different
        # name there means the state was saved from another signature.
        described = item["description"]
        if described.startswith("${") and described.endswith("}") and described[2:-1] != field_names[index]:
            raise InvalidProgramState(f"{where}: field {index} is {described[2:-1]!r} in the state, "
                                      f"{field_names[index]!r} in the signature")
    allowed = set(field_names) | _DEMO_EXTRA_KEYS
    for key in ("demos", "traces", "train"):
        value = state.get(key, [])
        if not isinstance(value, list) or len(value) > MAX_DEMOS_PER_PREDICTOR:
            raise InvalidProgramState(f"{where}: {key!r} must be a list of at most {MAX_DEMOS_PER_PREDICTOR}")
    for index, demo in enumerate(state.get("demos", [])):
        if not isinstance(demo, dict):
            raise InvalidProgramState(f"{where}: demo {index} must be an object")
        extra = sorted(str(key) for key in demo if key not in allowed)
        if extra:
            raise InvalidProgramState(f"{where}: demo {index} has fields the signature does not: "
                                      f"{', '.join(extra[:10])}")


def apply_program_state(module: Any, state: Any) -> None:
    """Checks `state` against `module` completely, then loads it (never half-way)."""
    checked = _predictor_states(module, state)
    for name, predictor, predictor_state in checked:
        _check_predictor_state(name, predictor, predictor_state)
    for _, predictor, predictor_state in checked:
        full = {"traces": [], "train": [], "demos": [], "lm": None, **predictor_state}
        try:
            predictor.load_state(full)
        except Exception as exc:  # checked above; anything left is still the document's fault
            raise InvalidProgramState(f"DSPy could not load the state: {type(exc).__name__}: {exc}") from None


def rebuild_args(description: dict[str, Any]) -> dict[str, Any]:
    """The create_program options of a program (what its description holds besides reports)."""
    return {key: value for key, value in description.items() if key not in _REPORT_ONLY}


def export_document(record: ProgramRecord) -> dict[str, Any]:
    """The portable document of a program."""
    return {"format": FORMAT, "version": VERSION, "signature": record.signature,
            "program_type": record.program_type, "options": to_json_safe(rebuild_args(record.description)),
            "state": dump_program_state(record.program), "dspy_version": dspy_version()}


def record_with_state(program_id: str, args: dict[str, Any], state: dict[str, Any] | None) -> ProgramRecord:
    """A program built as create_program builds it, then given `state`; its description
    (its program_data) carries the state so other workers rebuild the same program."""
    return build_record(program_id, {**args, "state": state})


def _parse_document(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise InvalidProgramState("'program' must be the object export_program returned")
    if document.get("format") != FORMAT:
        raise InvalidProgramState(f"not a program document: 'format' must be {FORMAT!r}")
    if document.get("version") != VERSION:
        raise InvalidProgramState(f"document version {str(document.get('version'))[:20]!r} is not supported "
                                  f"(this worker reads version {VERSION})")
    saved = document.get("dspy_version")
    if not isinstance(saved, str) or _major(saved) != _major(dspy_version()):
        raise InvalidProgramState(f"the document was saved with DSPy {str(saved)[:20]}, this worker runs "
                                  f"DSPy {dspy_version()}: the major versions differ")
    for key, kind in (("signature", (dict, str)), ("options", dict), ("state", dict)):
        if not isinstance(document.get(key), kind):
            raise InvalidProgramState(f"document key {key!r} is missing or of the wrong type")
    if not isinstance(document.get("program_type"), str):
        raise InvalidProgramState("document key 'program_type' must be a string")
    return document


def record_from_document(program_id: str, document: Any) -> ProgramRecord:
    document = _parse_document(document)
    args = {**document["options"], "signature": document["signature"], "program_type": document["program_type"]}
    try:
        return record_with_state(program_id, args, document["state"])
    except InvalidProgramState:
        raise
    except BridgeError as exc:  # a signature or option the document should not hold
        raise InvalidProgramState(f"the document does not build a program: {exc.message}") from None


@command("export_program", registry=COMMANDS, read_only=True, scheduling="read",
         args=(Arg("program_id", "string", required=True), Arg("session_id", "string")))
def export_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A program as a portable JSON document (signature, type, options, DSPy state, version)."""
    record = _programs(ctx).get(args["program_id"])
    if record is None:
        raise ProgramNotFound(args["program_id"])
    return {"program_id": record.program_id, "program": export_document(record)}


@command("import_program", registry=COMMANDS, tags={BUILDS_STATE},
         args=(Arg("program", "object", required=True, help="a document export_program returned"),
               Arg("program_id", "string", help="the id here (generated when absent)"),
               Arg("session_id", "string")))
def import_program(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Rebuilds a program from an export_program document; refuses a state that does not fit."""
    import uuid

    program_id = args.get("program_id") or f"program_{uuid.uuid4().hex[:12]}"
    programs = _programs(ctx)
    if program_id in programs:
        raise ProgramExists(program_id)
    record = record_from_document(program_id, args["program"])
    _check_program_room(ctx)
    if programs.setdefault(program_id, record) is not record:
        raise ProgramExists(program_id)
    record.description["status"] = "imported"
    ctx.engine.publish("program_created", {"session_id": ctx.session_id, "program_id": program_id})
    return dict(record.description)
