"""The transcript writer process (`python -m bridge.record.writer PATH [WORKER_PID]`).

It reads the worker's pipe records, gathers while the worker is busy, and formats,
scrubs and writes in the worker's pauses, at idle CPU priority, so recording costs the
worker one write per 20 ms (see docs/recordings.md and docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time

from .records import RECORD, RecordDecoder
from .scrubbing import BatchFormatter, Group
from .transcript import TranscriptWriter

log = logging.getLogger("dspex.record")

# The writer formats once the worker has sent nothing for this long...
QUIET_SECONDS = 0.1
# ...or once this much waits, whatever the traffic (about 100,000 pings and replies).
BACKLOG_LIMIT = 32 << 20
# Formatted per step, between looks at the pipe (and the clock): about 3,000 pings and replies.
FORMAT_STEP = 1 << 20
# Once the worker is gone (its pipe closed, or the parent-death signal), the writer has this
# long to write its backlog; a signal while the worker lives gives WRITER_TERM_SECONDS (the
# worker is draining and will close the pipe). Past either, the writer writes an end line
# marked incomplete and exits: it never outlives its worker for long.
WRITER_GRACE_SECONDS = 5.0
WRITER_TERM_SECONDS = 60.0
# prctl(2) option: the signal this process gets when its parent (thread) dies.
_PR_SET_PDEATHSIG = 1


class WriterDeadline:
    """When the writer must stop, however much is left: never, until shortened."""

    def __init__(self) -> None:
        self.at = float("inf")

    def shorten(self, seconds: float) -> None:
        self.at = min(self.at, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()


def _format_records(pending: bytearray, start: int, decoder: RecordDecoder, writer: TranscriptWriter) -> int:
    """Formats and writes the whole records in pending[start:] up to about FORMAT_STEP
    bytes, with one write and one flush; returns where the first unformatted record starts."""
    header_size = RECORD.size
    unpack_header = RECORD.unpack_from
    decode = decoder.decode
    groups: list[Group] = []
    end = len(pending)
    limit = start + FORMAT_STEP
    with memoryview(pending) as view:  # one copy per record body, not two
        while end - start >= header_size and start < limit:
            code, offset_ms, length = unpack_header(pending, start)
            body_start = start + header_size
            if end - body_start < length:
                break
            start = body_start + length
            try:
                groups += decode(code, offset_ms, bytes(view[body_start:start]))
            except ValueError as exc:  # orjson's errors among them: one bad record, not the rest
                log.error("skipped an unreadable %r record in the recording pipe: %s", code, exc)
    data = decoder.formatter.format(groups)
    if data:
        writer.write_lines([data])
    return start


def _die_with_worker(worker_pid: int | None, deadline: WriterDeadline) -> None:
    """Signals end the writer soon instead of being ignored: the worker decides when
    recording ends (by closing the pipe), so a signal sent to the whole process group only
    starts a long grace while the worker lives, a short one once it is gone. On Linux the
    worker's death itself sends SIGTERM (PR_SET_PDEATHSIG)."""

    def worker_alive() -> bool:
        return worker_pid is None or os.getppid() == worker_pid

    def on_signal(signum: int, frame: object) -> None:
        deadline.shorten(WRITER_TERM_SECONDS if worker_alive() else WRITER_GRACE_SECONDS)
        # A backstop for a step that never returns: the default SIGALRM action ends the process.
        signal.setitimer(signal.ITIMER_REAL, max(deadline.remaining(), 0.0) + WRITER_GRACE_SECONDS)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not worker_alive():  # it died before the signal was armed
        on_signal(signal.SIGTERM, None)


def run_writer_process(path: str, fd: int = 0, worker_pid: int | None = None) -> int:
    """The writer process (`python -m bridge.record.writer PATH [WORKER_PID]`): its settings,
    then the loop."""
    deadline = WriterDeadline()
    _die_with_worker(worker_pid, deadline)
    # Transcripts may trail by milliseconds; the worker and its client may not wait. Where
    # the OS allows, the writer only runs on otherwise idle CPU time.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    try:
        write_transcript(path, fd, deadline)
    except OSError as exc:  # the disk is full or gone: say so in one line, as the worker does
        log.error("transcript %s: writing stopped: %s", path, exc)
        return 1
    return 0


def write_transcript(path: str, fd: int, deadline: WriterDeadline | None = None) -> None:
    """Reads records from the worker's pipe `fd` until it closes; appends their lines to `path`.

    Lines are written and flushed in steps once the worker pauses, so the file trails a
    busy worker by up to BACKLOG_LIMIT and an idle one by QUIET_SECONDS; whatever the
    worker sent is written before this returns, even if the worker was killed, unless
    `deadline` passes first. The transcript always ends with an end line saying whether it
    is complete (see RecordDecoder.end_line).
    """
    deadline = deadline or WriterDeadline()
    writer = TranscriptWriter(path, {}, append=True)
    formatter = BatchFormatter(writer)
    decoder = RecordDecoder(formatter)
    pending = bytearray()  # records read from the pipe, not yet formatted, from `start` on
    start = 0
    pipe_open = True
    quiet = False  # the worker has sent nothing for QUIET_SECONDS: format until it does
    partial = False  # the last step found only part of a record: the rest must be read first
    cut_short: str | None = None
    watch = select.poll()
    watch.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        if deadline.remaining() <= 0:
            cut_short = "the transcript writer ran out of time before writing everything"
            break
        waiting = len(pending) - start
        if pipe_open and (waiting == 0 or partial or waiting < BACKLOG_LIMIT):
            # While the worker is busy, only gather: formatting then would take CPU time
            # from the worker and its client even at idle priority (measured in
            # docs/benchmarks.md), so it waits for a pause or a full backlog. Nothing to
            # format: wait for data, but look at the clock now and then.
            must_read = waiting == 0 or partial
            wait_ms = min(1000.0, max(deadline.remaining(), 0.0) * 1000) if must_read \
                else (0 if quiet else QUIET_SECONDS * 1000)
            if watch.poll(wait_ms):
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    pipe_open = False
                    deadline.shorten(WRITER_GRACE_SECONDS)  # the worker is done or gone
                else:
                    if start > len(pending) // 2:  # drop what is done before the buffer grows
                        del pending[:start]
                        start = 0
                    pending += chunk
                    quiet = quiet and partial  # completing a record is not new traffic
                partial = False
                continue
            if must_read:
                continue
        if not pipe_open and (waiting == 0 or partial):
            break  # all written, or the worker was cut off mid-record and the rest never comes
        quiet = True
        done = _format_records(pending, start, decoder, writer)
        partial = done == start
        start = done
    writer.close(decoder.end_line(cut_short))


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s dspex-recorder[%(process)d] %(levelname)s %(name)s: %(message)s")
    raise SystemExit(run_writer_process(sys.argv[1], 0, int(sys.argv[2]) if len(sys.argv) > 2 else None))


__all__ = ["BACKLOG_LIMIT", "QUIET_SECONDS", "WriterDeadline", "run_writer_process", "write_transcript"]
