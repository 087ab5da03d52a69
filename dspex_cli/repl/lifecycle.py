"""The console's meta-commands for DSPy's life cycle: evaluate, compile, jobs, export and
import, tools and metrics.

Data sets come from files (JSON Lines, CSV or a JSON list). Jobs are followed with a
progress line that Ctrl-C turns into `cancel_job`, so a compile started by mistake does
not keep spending LM calls after the console gave up on it.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from .meta_registry import MetaContext, meta
from .parsing import ParseError, parse_assignments, split_words

# How often a followed job is asked for its progress.
POLL_S = 0.25
PROGRAM_DOCUMENT = "dspex.program"


def read_dataset(path_text: str) -> list[dict[str, Any]]:
    """A dev or train set from a file: `.jsonl` (one object per line), `.csv` (a header
    row, every value a string) or `.json` (a list of objects)."""
    path = Path(path_text).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParseError(f"Cannot read {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows: list[Any] = list(csv.DictReader(text.splitlines()))
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"{path} is not valid {suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ParseError(f"{path} must hold a list of objects (one example each)")
    if not rows:
        raise ParseError(f"{path} holds no examples")
    return rows


def _split(argument: str, usage: str, positional: int, optional: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Positional words first, then key=value settings."""
    words = split_words(argument)
    plain = [w for w in words if "=" not in w]
    settings = parse_assignments([w for w in words if "=" in w]) if len(plain) < len(words) else {}
    if not positional <= len(plain) <= positional + optional:
        raise ParseError(f"usage: {usage}")
    return plain, settings


def _metric(settings: dict[str, Any]) -> Any:
    name = settings.pop("metric", None)
    field = settings.pop("field", None)
    if name is None:
        return None
    return {"metric": name, "field": field} if field else name


def _pause(seconds: float) -> None:
    """The wait between two looks at a followed job (where Ctrl-C lands, mostly)."""
    time.sleep(seconds)


def follow_job(ctx: MetaContext, job_id: str, label: str) -> dict[str, Any] | None:
    """Shows a job's progress until it ends; Ctrl-C cancels it. Returns its last view."""
    show = getattr(ctx.out, "progress", None)
    view: dict[str, Any] | None = None
    try:
        while True:
            reply = ctx.send("get_job", {"job_id": job_id}, show_reply=False)
            if not reply or not reply.get("success"):
                return None
            view = reply["result"]
            progress = view.get("progress") or {}
            running = view.get("status") == "running"
            if show is not None:
                show(label, int(progress.get("done") or 0), int(progress.get("total") or 0),
                     final=not running, note=_score_note(view))
            if not running:
                break
            _pause(POLL_S)
    except KeyboardInterrupt:
        ctx.out.notice(f"cancelling {job_id}")
        ctx.send("cancel_job", {"job_id": job_id})
        return None
    if view.get("status") == "succeeded":
        ctx.out.data("job", view.get("result") or {})
    else:
        ctx.fail(f"{label} {view.get('status')}: {view.get('error', '')}", None,
                 str(view.get("error_type") or view.get("status")))
    return view


def _score_note(view: dict[str, Any]) -> str:
    best = view.get("best_score")
    return "done" + (f", best score {best:.1f}" if isinstance(best, (int, float)) else "")


def _start_job(ctx: MetaContext, command: str, args: dict[str, Any], label: str) -> None:
    reply = ctx.send(command, {**args, "wait": False}, show_reply=False)
    if not reply or not reply.get("success"):
        return
    job_id = reply["result"].get("job_id")
    if not isinstance(job_id, str):
        ctx.out.data("job", reply["result"])
        return
    ctx.out.notice(f"{label} started as {job_id} (Ctrl-C cancels it)")
    follow_job(ctx, job_id, label)


@meta("eval", "PROGRAM FILE [metric=NAME] [field=F] [num_threads=N]", complete="program_then_file")
def eval_(ctx: MetaContext, argument: str) -> None:
    """Scores a program on a dev set file (JSONL, CSV or JSON) with a metric, as a job."""
    usage = ":eval PROGRAM FILE [metric=exact_match] [field=answer] [num_threads=4]"
    (program_id, path), settings = _split(argument, usage, 2)
    args: dict[str, Any] = {"program_id": program_id, "devset": read_dataset(path),
                            "metric": _metric(settings) or "exact_match", **settings}
    _start_job(ctx, "evaluate_program", args, f"evaluate {program_id}")


@meta("compile", "PROGRAM OPTIMIZER TRAINFILE [valset=FILE] [metric=NAME] [new=ID] [seed=N] [option=value ...]",
      complete="program_then_optimizer")
def compile_(ctx: MetaContext, argument: str) -> None:
    """Compiles a program with an optimizer on a train set file, as a job (Ctrl-C cancels)."""
    usage = ":compile PROGRAM OPTIMIZER TRAINFILE [valset=FILE] [metric=NAME] [new=ID] [seed=N] [option=value ...]"
    (program_id, optimizer, path), settings = _split(argument, usage, 3)
    args: dict[str, Any] = {"program_id": program_id, "optimizer": optimizer, "trainset": read_dataset(path),
                            "metric": _metric(settings) or "exact_match"}
    if "valset" in settings:
        args["valset"] = read_dataset(str(settings.pop("valset")))
    if "new" in settings:
        args["new_program_id"] = str(settings.pop("new"))
    if "seed" in settings:
        args["seed"] = settings.pop("seed")
    if settings:  # the rest are the optimizer's own options, checked by the worker
        args["options"] = settings
    _start_job(ctx, "compile_program", args, f"compile {program_id} with {optimizer}")


@meta("jobs", "[JOB_ID | cancel JOB_ID]")
def jobs(ctx: MetaContext, argument: str) -> None:
    """Lists this session's jobs, shows one, or cancels one."""
    words = split_words(argument)
    if not words:
        ctx.send("list_jobs", {})
    elif words[0] == "cancel" and len(words) == 2:
        ctx.send("cancel_job", {"job_id": words[1]})
    elif len(words) == 1:
        ctx.send("get_job", {"job_id": words[0]})
    else:
        raise ParseError("usage: :jobs [JOB_ID | cancel JOB_ID]")


@meta("export", "PROGRAM [FILE]", complete="program_then_file")
def export(ctx: MetaContext, argument: str) -> None:
    """Writes a program (compiled state included) as a portable JSON document."""
    (program_id, *rest), _ = _split(argument, ":export PROGRAM [FILE]", 1, 1)
    path = Path(rest[0] if rest else f"{program_id}.json").expanduser()
    save_document(ctx, program_id, path)


def save_document(ctx: MetaContext, program_id: str, path: Path) -> None:
    reply = ctx.send("export_program", {"program_id": program_id}, show_reply=False)
    if not reply or not reply.get("success"):
        return
    document = reply["result"].get("program")
    if not isinstance(document, dict):
        raise ParseError(f"The worker returned no program document for {program_id}")
    try:
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ParseError(f"Cannot write {path}: {exc.strerror or exc}") from None
    ctx.out.info(f"saved {program_id} to {path}", {"saved": str(path), "program_id": program_id})


@meta("import", "FILE [PROGRAM]", complete="file")
def import_(ctx: MetaContext, argument: str) -> None:
    """Rebuilds a program from a document written by :export (or :save)."""
    (path, *rest), _ = _split(argument, ":import FILE [PROGRAM]", 1, 1)
    load_document(ctx, Path(path).expanduser(), rest[0] if rest else None)


def read_json(path: Path) -> Any:
    """A JSON file's value; an unreadable or broken file is a console error that says which."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ParseError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ParseError(f"{path} is not JSON: {exc}") from None


def load_document(ctx: MetaContext, path: Path, program_id: str | None, document: Any = None) -> None:
    """Sends import_program for the document in `path` (already read, when given)."""
    if document is None:
        document = read_json(path)
    if not isinstance(document, dict) or document.get("format") != PROGRAM_DOCUMENT:
        raise ParseError(f"{path} holds no program document", "load files written by :export or :save")
    args: dict[str, Any] = {"program": document}
    if program_id:
        args["program_id"] = program_id
    # import_program carries the creates_program tag: the console learns the id from its reply.
    ctx.send("import_program", args, show_reply=True)


@meta("tools", "")
def tools(ctx: MetaContext, argument: str) -> None:
    """Lists the tools plugins registered (what ReAct programs may use)."""
    ctx.send("list_tools", {})


@meta("metrics", "")
def metrics(ctx: MetaContext, argument: str) -> None:
    """Lists the metrics :eval and :compile may name."""
    ctx.send("list_metrics", {})
