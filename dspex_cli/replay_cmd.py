"""`dspex replay`: replays recorded transcripts and reports what changed, for people and CI.

Exit codes: 0 every reply matched, 1 a mismatch, 2 usage error, 3 an unreadable or
incompatible transcript (reported in one line, never a traceback). Unreadable wins over
mismatching: a transcript that cannot be checked is the more urgent news.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import orjson
import typer

from dspex_cli.exit_status import ExitStatus, UserError


@dataclass
class ReplayOptions:
    worker_argv: list[str] | None
    lm_mode: str
    ignore: list[str]
    update: bool
    reply_timeout: float


def expand_paths(arguments: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to replay, and (argument, problem) for arguments that name none."""
    found: list[str] = []
    problems: list[tuple[str, str]] = []
    for argument in arguments:
        if any(ch in argument for ch in "*?["):
            matches = sorted(m for m in glob.glob(argument, recursive=True) if os.path.isfile(m))
            if not matches:
                problems.append((argument, "no file matches this pattern"))
            found.extend(matches)
        elif os.path.isdir(argument):
            matches = sorted(str(p) for p in Path(argument).rglob("*.jsonl") if p.is_file())
            if not matches:
                problems.append((argument, "directory holds no transcripts (*.jsonl)"))
            found.extend(matches)
        elif not os.path.exists(argument):
            problems.append((argument, "no such file"))
        else:
            found.append(argument)
    unique = list(dict.fromkeys(found))
    return unique, problems


def replay_one(path: str, options: ReplayOptions) -> dict[str, Any]:
    """Replays one file; returns its result as a dict (picklable for -j)."""
    from bridge.replay import ReplayResult, WorkerStartFailed, replay_transcript
    from bridge.record.transcript import TranscriptError

    started = time.perf_counter()
    try:
        result = replay_transcript(path, worker_argv=options.worker_argv, lm_mode=options.lm_mode,
                                   ignore=options.ignore, update=options.update,
                                   reply_timeout=options.reply_timeout)
    except (TranscriptError, WorkerStartFailed) as exc:
        result = ReplayResult(path=path, error=str(exc), duration_s=time.perf_counter() - started)
    except (OSError, ValueError) as exc:
        result = ReplayResult(path=path, error=f"{path}: {type(exc).__name__}: {exc}",
                              duration_s=time.perf_counter() - started)
    return _jsonable(result.to_dict())


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS))


def exit_code_for(results: list[dict[str, Any]]) -> ExitStatus:
    if any(r["status"] == "error" for r in results):
        return ExitStatus.UNREADABLE
    if any(r["status"] == "fail" for r in results):
        return ExitStatus.MISMATCH
    return ExitStatus.OK


def unmatched_ignores(ignore: list[str], results: list[dict[str, Any]]) -> list[str]:
    """The --ignore paths that named nothing in any reply of the whole run (misspelt,
    or a field no reply has): an ignore that silently ignores nothing hides a mistake."""
    if not any(r.get("replies_compared") for r in results):
        return []  # nothing was compared, so nothing can be said about the paths
    matched = {text for r in results for text in r.get("ignore_matched") or ()}
    return [text for text in dict.fromkeys(ignore) if text not in matched]


def update_lines(results: list[dict[str, Any]]) -> list[str]:
    """What --update changed, one line per rewritten value (none when nothing changed)."""
    lines: list[str] = []
    for result in results:
        changes = result.get("updates") or []
        rerecorded = result.get("lm_calls_rerecorded") or 0
        if not changes and not rerecorded:
            continue
        lines.append(f"updated {result['path']}:")
        for m in changes:
            where = m["path"] or "(reply)"
            command = f" ({m['command']})" if m["command"] else ""
            before = "(absent)" if m["kind"] == "extra" else _short_json(m["expected"])
            after = "(absent)" if m["kind"] == "missing" else _short_json(m["actual"])
            lines.append(f"  request {m['request_id']}{command} {where}: {before} -> {after}")
        if rerecorded:
            lines.append(f"  cassette: {rerecorded} LM call(s) re-recorded from the live LM")
    return lines


def junit_xml(results: list[dict[str, Any]], elapsed: float) -> bytes:
    """A JUnit report: one testcase per transcript (what CI servers display)."""
    import xml.etree.ElementTree as ET

    failures = sum(1 for r in results if r["status"] == "fail")
    errors = sum(1 for r in results if r["status"] == "error")
    suite = ET.Element("testsuite", name="dspex-replay", tests=str(len(results)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{elapsed:.3f}")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="dspex.replay", name=result["path"],
                             time=f"{result['duration_s']:.3f}")
        if result["status"] == "error":
            element = ET.SubElement(case, "error", message=result["error"] or "error", type="unreadable")
            element.text = result["error"]
        elif result["status"] == "fail":
            mismatches = result["mismatches"]
            element = ET.SubElement(case, "failure", type="mismatch",
                                    message=f"{len(mismatches)} mismatch(es)")
            element.text = "\n".join(
                f"request {m['request_id']} ({m['command']}) {m['path'] or '(reply)'}: "
                f"expected {_short(m['expected'], 200)} actual {_short(m['actual'], 200)}"
                for m in mismatches)
        out = ET.SubElement(case, "system-out")
        out.text = f"frames={result['frames']} requests={result['requests']} " \
                   f"replies_compared={result['replies_compared']} lm_calls={result['lm_calls_served']}"
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=repr).decode()
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[:width - 1] + "…"


def _short_json(value: Any, width: int = 300) -> str:
    """JSON, so that 1 and "1" look different; cut to `width`."""
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= width else text[:width - 1] + "…"


def render_results(results: list[dict[str, Any]], elapsed: float, console: Any) -> None:
    """A diff per failing transcript, one line per error, then the summary table."""
    from rich.markup import escape
    from rich.table import Table

    labels = {"missing": "(absent now)", "extra": "(absent in recording)"}
    for result in results:
        if result["status"] != "fail":
            continue
        # A heading line, not console.rule: off a terminal the console is very wide.
        console.print(f"[bold red]── {escape(result['path'])} ──[/]")
        shown = result["mismatches"][:50]
        for m in shown:
            where = escape(m["path"] or "(reply)")
            command = f" ({escape(m['command'])})" if m["command"] else ""
            console.print(f"[bold]request {escape(str(m['request_id']))}[/]{command} [cyan]{where}[/]"
                          + (" [yellow]LM call not in the cassette[/]" if m["kind"] == "lm_miss" else ""))
            expected = labels["extra"] if m["kind"] == "extra" else _short_json(m["expected"])
            actual = labels["missing"] if m["kind"] == "missing" else _short_json(m["actual"])
            console.print(f"  [red]- expected {escape(expected)}[/]", overflow="fold")
            console.print(f"  [green]+ actual   {escape(actual)}[/]", overflow="fold")
        if len(result["mismatches"]) > len(shown):
            console.print(f"… and {len(result['mismatches']) - len(shown)} more (use --json for all)")
    summary = Table(title="replay summary", header_style="bold")
    for column in ("transcript", "status", "frames", "requests", "mismatches", "time"):
        summary.add_column(column, justify="right" if column in ("frames", "requests", "mismatches", "time")
                           else "left", overflow="fold")
    colours = {"pass": "green", "fail": "red", "error": "bold red"}
    for result in results:
        status = result["status"] + (" (updated)" if result.get("updated") else "")
        summary.add_row(escape(result["path"]), f"[{colours[result['status']]}]{status}[/]",
                        str(result["frames"]), str(result["requests"]), str(len(result["mismatches"])),
                        f"{result['duration_s']:.2f}s")
    console.print(summary)
    passed = sum(r["status"] == "pass" for r in results)
    failed = sum(r["status"] == "fail" for r in results)
    errors = sum(r["status"] == "error" for r in results)
    console.print(f"{passed} passed, {failed} failed, {errors} unreadable in {elapsed:.2f}s")


def run_replays(paths: list[str], options: ReplayOptions, jobs: int, progress: bool) -> list[dict[str, Any]]:
    """Replays every path (in `jobs` processes when > 1), in the order given."""
    from contextlib import nullcontext

    bar: Any = nullcontext()
    task = None
    if progress:
        from dspex_cli.console import make_console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=make_console(stderr=True), transient=True)
    results: dict[str, dict[str, Any]] = {}
    with bar:
        if progress:
            task = bar.add_task("replay", total=len(paths))
        if jobs <= 1 or len(paths) <= 1:
            for path in paths:
                results[path] = replay_one(path, options)
                if task is not None:
                    bar.advance(task)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(paths)), mp_context=context) as pool:
                futures = {pool.submit(replay_one, path, options): path for path in paths}
                for future in as_completed(futures):
                    path = futures[future]
                    try:
                        results[path] = future.result()
                    except Exception as exc:  # a crashed child process
                        results[path] = _problem_result(path, f"replay process failed: {exc}")
                    if task is not None:
                        bar.advance(task)
    return [results[path] for path in paths]


def _problem_result(path: str, message: str) -> dict[str, Any]:
    """The result of a path that could not be replayed at all, shaped like ReplayResult.to_dict."""
    from bridge.replay import ReplayResult

    result = ReplayResult(path=path, error=f"{path}: {message}", target="")
    return _jsonable(result.to_dict())


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        paths: list[str] = typer.Argument(..., metavar="PATH",
                                          help="transcripts: files, directories (*.jsonl inside) or globs"),
        worker: Optional[str] = typer.Option(None, "--worker", metavar="CMD",
                                             help='replay through a worker command, e.g. "dspex serve" '
                                                  '({args} = the recorded worker arguments)'),
        lm: str = typer.Option("cassette", "--lm", metavar="cassette|live",
                               help="answer LM calls from the cassette (default, offline) or call the LM"),
        ignore: list[str] = typer.Option([], "--ignore", metavar="PATH",
                                         help="JSON path not to compare, e.g. result.outputs.reasoning "
                                              "or execute_program:result.usage (repeatable)"),
        json_output: bool = typer.Option(False, "--json", help="print results as JSON on stdout"),
        junit: Optional[Path] = typer.Option(None, "--junit", metavar="FILE", help="write a JUnit XML report"),
        jobs: int = typer.Option(1, "--jobs", "-j", metavar="N", help="replay N transcripts in parallel processes"),
        update: bool = typer.Option(False, "--update", help="rewrite recorded replies with the ones seen now"),
        timeout: float = typer.Option(30.0, "--timeout", metavar="SECONDS", help="wait this long for each reply"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="only the summary line"),
    ) -> None:
        """Replay recorded sessions and compare every reply (exit 0 match, 1 mismatch, 3 unreadable)."""
        from dspex_cli.console import make_console

        def usage(message: str) -> None:
            raise UserError(message)

        if lm not in ("cassette", "live"):
            usage(f"--lm must be 'cassette' or 'live', not {lm!r}")
        if jobs < 1:
            usage("-j/--jobs must be at least 1")
        if timeout <= 0:
            usage("--timeout must be positive")
        from bridge.replay import parse_ignore_path

        for pattern in ignore:
            try:
                parse_ignore_path(pattern)
            except ValueError as exc:
                usage(str(exc))
        worker_argv = None
        if worker is not None:
            try:
                worker_argv = shlex.split(worker)
            except ValueError as exc:
                usage(f"cannot parse --worker command: {exc}")
            if not worker_argv:
                usage("--worker needs a command")
            if shutil.which(worker_argv[0]) is None:
                usage(f"--worker: command not found: {worker_argv[0]}")
        files, problems = expand_paths(paths)
        options = ReplayOptions(worker_argv, lm, list(ignore), update, timeout)
        started = time.perf_counter()
        progress = len(files) > 1 and sys.stderr.isatty() and not quiet
        results = [_problem_result(arg, message) for arg, message in problems]
        results += run_replays(files, options, jobs, progress)
        elapsed = time.perf_counter() - started
        code = exit_code_for(results)
        unmatched = unmatched_ignores(list(ignore), results)
        for text in unmatched:
            print(f"dspex replay: warning: --ignore {text} matched nothing in any reply of this run",
                  file=sys.stderr)
        if junit is not None:
            try:
                junit.write_bytes(junit_xml(results, elapsed))
            except OSError as exc:
                usage(f"cannot write {junit}: {exc.strerror or exc}")
        if json_output:
            document = {"exit_code": int(code), "elapsed_s": round(elapsed, 6),
                        "summary": {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "error")},
                        "unmatched_ignores": unmatched, "transcripts": results}
            sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
            for result in results:
                if result["status"] == "error":
                    print(f"dspex replay: {result['error']}", file=sys.stderr)
        elif quiet:
            for result in results:
                if result["status"] == "error":
                    print(f"dspex replay: {result['error']}", file=sys.stderr)
            passed = sum(r["status"] == "pass" for r in results)
            print(f"{passed}/{len(results)} transcripts match")
        else:
            for line in update_lines(results):
                print(line)
            render_results(results, elapsed, make_console())
            for result in results:
                if result["status"] == "error":
                    print(f"dspex replay: {result['error']}", file=sys.stderr)
        raise typer.Exit(int(code))
