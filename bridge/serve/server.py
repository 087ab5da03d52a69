"""`dspex serve`: the port worker's lifecycle around the engine.

The main thread reads frames from fd 0 and hands them to the engine; handlers run on
the engine's pool; replies are written whole under one lock to the protocol fd, which
is a private duplicate of the original fd 1 (see stdio.py: fd 1 itself points at stderr,
so stray prints can never corrupt the stream). End of input, `shutdown`, SIGTERM and the death
of the parent all lead to a drained, prompt exit.
"""

from __future__ import annotations

import _signal  # the C module: `signal` builds its enums at import, a tenth of the start-up
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engine import Engine, EngineConfig
from ..errors import FrameTooLarge, ShuttingDown, TruncatedFrame
from ..wire.framing import FrameReader, Oversized, header, pack_many, unpack_length, write_all
from .config import ServeConfig

log = logging.getLogger("dspex.serve")

# End of input means the client is gone; in-flight work gets this long to finish.
EOF_GRACE_SECONDS = 0.5
# How long a worker that gets no request waits before it opens its control socket anyway.
CONTROL_START_DELAY = 0.5
# Bytes read from the port per system call: a pipe holds 64 KiB, so a read never returns
# more. (A fresh bytes object per read is cheaper for a lone ping than a reused buffer
# read with readv, and this size stays below malloc's mmap threshold.)
READ_CHUNK = 1 << 16
# The size of a read while requests come one at a time: its bytes object fits Python's
# small-object allocator (512 bytes with the object's header), where a 64 KiB one is taken
# from malloc and shrunk to what arrived, ~650 of a lone ping's ~25,000 instructions.
SMALL_READ = 448
# A read that brought at least this much means requests are coming in bursts (pipelined):
# the next read takes READ_CHUNK, so a burst is not cut into several reads, each with its own
# write of replies. A read of less (a lone request or two) goes back to SMALL_READ.
BURST_BYTES = 256
# The signals that drain the worker, by number (the reason a log line gives).
STOP_SIGNAL_NAMES = {_signal.SIGTERM: "SIGTERM", _signal.SIGINT: "SIGINT", _signal.SIGHUP: "SIGHUP"}
# How long exit() waits for the reader to finish the read it is handling.
EXIT_WAIT_FOR_READER = 1.0


class UnknownAdapter(ValueError):
    """`--adapters` named an adapter nobody provides."""


def choose_adapters(names: list[str] | None, entry_points: bool = False) -> list[Any]:
    """Fresh instances of the named adapters (all known ones for None), in that order;
    `entry_points` adds the `dspex.adapters` group's (ServeConfig.entry_point_adapters)."""
    from ..adapters import default_adapters

    known = default_adapters(entry_points=entry_points)
    if names is None:
        return known
    by_name = {adapter.name: adapter for adapter in known}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UnknownAdapter(f"unknown adapter {', '.join(map(repr, missing))} "
                             f"(known: {', '.join(sorted(by_name)) or 'none'})")
    return [by_name[name] for name in names]


def configure_logging(level: str) -> None:
    """Logs to stderr at `level` (ServeConfig.log_level); unknown names mean warning."""
    # Every record of every library (LiteLLM logs prompts at debug level) and every stray
    # write to the console pass the secret scrubber first.
    from ..redact import install_output_scrubbing

    install_output_scrubbing()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(asctime)s dspex[%(process)d] %(levelname)s %(name)s: %(message)s")


def load_plugins(names: list[str]) -> list[str]:
    """Imports plugin modules (ServeConfig.plugins: --plugin and DSPEX_PLUGINS); their
    @command decorators and register_adapter calls take effect on import."""
    loaded = []
    for name in names:
        if name not in loaded:
            importlib.import_module(name)
            loaded.append(name)
    return loaded


class Server:
    """Owns the read loop, the reply writer and the ways a worker ends."""

    def __init__(self, config: ServeConfig, protocol_fd: int, input_fd: int = 0) -> None:
        self.config = config
        self.protocol_fd = protocol_fd
        self.input_fd = input_fd
        self.engine = Engine(EngineConfig(mode=config.mode, worker_id=config.worker_id,
                                          max_concurrency=config.max_concurrency, argv=config.argv,
                                          background_commands=True),
                             adapters=choose_adapters(config.adapters, config.entry_point_adapters))
        self.engine.on_shutdown = lambda: self.begin_drain("shutdown command")
        for adapter in self.engine.adapters:
            options = config.adapter_options.get(adapter.name)
            if options:
                adapter.configure_from_serve(options)
        self._write_lock = threading.Lock()
        self._exit_lock = threading.Lock()
        self._first_answered = threading.Event()
        self._draining = False
        self._signals = 0
        self.exit_hooks: list[Callable[[], None]] = []
        self._parent = config.parent_pid or os.getppid()
        # Reply payloads produced on the reader thread while it works through one read (a
        # burst of pipelined pings) are collected here and written with a single syscall.
        self._batch: list[bytes] | None = None
        self._reader_ident = 0
        # The reader's handshake with exit(), instead of a lock taken for every read (a
        # lock costs a lone ping a tenth of its time): `_handling` while the reader works
        # through one read, `_exiting` once exit() has begun. With the interpreter's
        # ordering of attribute writes, each side writes its own flag and then reads the
        # other's, so a batch in the making (a shutdown reply among pipelined frames) is
        # written before the exit hooks run, and nothing is written after them.
        self._handling = False
        self._exiting = False
        # Observers of the byte streams (the recorder): called once per read and once per
        # write, so their cost does not grow with frames. The kind says what `data` is:
        # b"i"/b"o" one frame's payload, b"I"/b"O" framed bytes as they crossed the pipe.
        self.stream_taps: list[Callable[[bytes, bytes, float], None]] = []

    def send(self, payload: bytes) -> None:
        """Writes one reply frame whole; concurrent replies never interleave."""
        batch = self._batch
        if batch is not None and threading.get_ident() == self._reader_ident:
            batch.append(payload)
            return
        self._write_frame(payload)

    def _write_frame(self, payload: bytes) -> None:
        """One reply frame, header and payload in one write. The reply channel of a
        request that arrived alone: no batch can be open for it (see run)."""
        data = header(len(payload)) + payload
        lock = self._write_lock
        try:
            # acquire/release rather than `with`: the context manager protocol costs a
            # lone ping three times as much.
            lock.acquire()
            try:
                if self.stream_taps:  # inside the lock: the stream is recorded in write order
                    now = time.monotonic()
                    for tap in self.stream_taps:
                        tap(b"o", payload, now)
                # A pipe takes a small write whole; only a partial write needs the loop.
                written = os.write(self.protocol_fd, data)
                if written != len(data):
                    write_all(self.protocol_fd, data[written:])
            finally:
                lock.release()
        except OSError as exc:  # the reader of our replies is gone
            log.warning("cannot write reply (%s); exiting", exc)
            self.exit(0)

    def _write(self, data: bytes) -> None:
        """Several framed replies (a batch) in one write."""
        try:
            with self._write_lock:
                if self.stream_taps:
                    now = time.monotonic()
                    for tap in self.stream_taps:
                        tap(b"O", data, now)
                written = os.write(self.protocol_fd, data)
                if written != len(data):
                    write_all(self.protocol_fd, data[written:])
        except OSError as exc:
            log.warning("cannot write reply (%s); exiting", exc)
            self.exit(0)

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch:
            self._write(pack_many(batch))

    def run(self) -> int:
        self._reader_ident = threading.get_ident()
        self._install_signals()
        self._start_extras()
        # The adapters' commands load once the first reply is out (bridge.command_loading):
        # a pool's init ping never waits for them. A worker that cannot load them cannot serve.
        self.engine.load_commands_in_background(self._first_answered, CONTROL_START_DELAY,
                                                on_failure=lambda exc: self.exit(1))
        threading.Thread(target=self._watch_parent, name="dspex-parent-watch", daemon=True).start()
        reader = FrameReader(self.config.max_frame_size)
        warm = self.config.warm
        first_answered = False
        engine = self.engine
        write_frame = self._write_frame
        limit = reader.max_frame_size
        input_fd = self.input_fd
        size = SMALL_READ
        while True:
            try:
                data = os.read(input_fd, size)
            except OSError as exc:
                log.warning("reading input failed: %s", exc)
                data = b""
            if not data:
                break
            count = len(data)
            size = READ_CHUNK if count >= BURST_BYTES else SMALL_READ
            taps = self.stream_taps
            # Marked busy before anything is handled, then checked: exit() marks itself
            # first and then waits while the reader is busy (see exit), so either this
            # read is never handled or exit waits until its replies are written.
            self._handling = True
            if self._exiting:
                self._handling = False
                self._exit_lock.acquire()  # exit() holds it until the process ends
            if count > 4 and not reader.pending and unpack_length(data)[0] == count - 4 <= limit:
                # The read holds exactly one whole frame (a lone request, e.g. a health
                # ping): skip the incremental parser, a sizeable share of a ping's cost.
                # No batch is open, so replies go straight to the pipe (write_frame).
                payload = data[4:]
                if taps:
                    now = time.monotonic()
                    for tap in taps:
                        tap(b"i", payload, now)
                engine.submit_frame(payload, write_frame)
            else:
                if taps:  # before dispatch: no reply may be recorded ahead of its request
                    now = time.monotonic()
                    for tap in taps:
                        tap(b"I", data, now)
                skipped = reader.oversized
                frames = reader.feed(data)
                self._batch = []
                try:
                    self._dispatch(frames, limit, reader.oversized != skipped)
                finally:
                    self._flush_batch()
            self._handling = False
            if not first_answered:
                # Adapters warm up (DSPy imports in the background) and the control socket
                # opens only after the first request is answered, so the first ping never
                # waits for them.
                first_answered = True
                self._first_answered.set()
                if warm:
                    engine.warm()
        if reader.pending:
            engine._protocol_error(TruncatedFrame(
                f"Input ended inside a frame ({reader.pending} bytes unread)"))
        log.info("end of input; finishing in-flight work")
        self.finish(EOF_GRACE_SECONDS, "input ended")
        return 0

    def _dispatch(self, frames: list[bytes | Oversized], limit: int, oversized: bool) -> None:
        engine = self.engine
        send = self.send
        # Inline replies are made on this thread before submit_frame returns: straight into
        # the batch (see Engine.submit_frame). The batch list is fixed for this read.
        batch_append = self._batch.append  # type: ignore[union-attr]
        if not oversized:  # the common case: no marker to look for among the frames
            for frame in frames:
                engine.submit_frame(frame, send, batch_append)  # type: ignore[arg-type]
            return
        for frame in frames:
            if isinstance(frame, Oversized):
                engine._protocol_error(FrameTooLarge(
                    f"Frame of {frame.length} bytes exceeds the limit of {limit}; skipped"))
            else:
                engine.submit_frame(frame, send, batch_append)

    def finish(self, grace: float, reason: str) -> None:
        """Gives in-flight work `grace` seconds, answers whatever is left with an error
        reply (each request exactly once, before the exit), then exits."""
        engine = self.engine
        if not engine.wait_idle(grace):
            answered = engine.fail_unfinished(ShuttingDown(
                f"Worker is shutting down ({reason}): request not finished within {grace:g} s"))
            log.warning("%s: answered %d unfinished request(s) with shutting_down and cancelled them",
                        reason, answered)
            engine.cancel_all()
        self.exit(0)

    def begin_drain(self, reason: str) -> None:
        """Stops taking new work and exits once in-flight work is done."""
        if self._draining:
            return
        self._draining = True
        self.engine.shutting_down.set()
        log.info("draining (%s)", reason)
        threading.Thread(target=self.finish, args=(self.config.drain_timeout, reason),
                         name="dspex-drain", daemon=True).start()

    def exit(self, code: int) -> None:
        """Leaves at once, without waiting for pool threads stuck in LM calls."""
        with self._exit_lock:
            self._exiting = True
            if threading.get_ident() != self._reader_ident:
                deadline = time.monotonic() + EXIT_WAIT_FOR_READER
                while self._handling and time.monotonic() < deadline:
                    time.sleep(0.001)
            if not self._handling or threading.get_ident() == self._reader_ident:
                self._flush_batch()  # replies already made must not be lost
            for hook in self.exit_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("exit hook failed")
            logging.shutdown()
            os._exit(code)

    def _install_signals(self) -> None:
        def on_signal(signum: int, frame: object) -> None:
            self._signals += 1
            if self._signals > 1:
                os._exit(1)  # the second signal means now
            self.begin_drain(STOP_SIGNAL_NAMES.get(signum, f"signal {signum}"))

        for number in STOP_SIGNAL_NAMES:
            _signal.signal(number, on_signal)

    def _watch_parent(self) -> None:
        """Exits when the parent dies, even if our stdin was inherited elsewhere."""
        while True:
            time.sleep(0.5)
            if os.getppid() != self._parent:
                log.warning("parent process %d is gone; exiting", self._parent)
                self.finish(EOF_GRACE_SECONDS, "parent died")

    def _start_extras(self) -> None:
        """Recording and the control socket, when enabled (see their own modules)."""
        cassette = self.config.replay_cassette
        if cassette:  # `dspex replay --worker` answers this worker's LM calls from a cassette
            from ..replay import install_cassette
            install_cassette(self.engine, cassette)
        record = self.config.record
        if record:
            from ..record.recorder import start_recording
            self.exit_hooks.append(start_recording(self.engine, record, ignore=self.config.record_ignore,
                                                   stream_taps=self.stream_taps))
        if self.config.metrics:
            from ..control.metrics import start_metrics_server
            try:
                stop, bound = start_metrics_server(self.engine, self.config.metrics)
                self.engine.metrics_address = f"{bound[0]}:{bound[1]}"  # type: ignore[attr-defined]
                self.exit_hooks.append(stop)
            except OSError as exc:  # a taken port must not stop the port worker
                log.warning("metrics disabled: cannot listen on %s: %s", self.config.metrics, exc.strerror or exc)
        if self.config.control != "off":
            threading.Thread(target=self._start_control, name="dspex-control-start", daemon=True).start()

    def _start_control(self) -> None:
        """Opens the control socket once the first request is answered, or after
        CONTROL_START_DELAY if none comes: importing and binding it took a sixth of the
        time to the first reply, which a pool's init ping should not wait for."""
        self._first_answered.wait(CONTROL_START_DELAY)
        # Under the exit lock: a worker that exits meanwhile either never opens the socket
        # or runs its exit hook (which removes it) after it is open, never neither.
        with self._exit_lock:
            try:
                from ..control import start_control_server
            except ImportError:
                return
            self.exit_hooks.append(start_control_server(self.engine, read_only=self.config.control == "read-only"))
