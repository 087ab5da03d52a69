"""The one stdout guard of `dspex serve`.

Frames are the only bytes a port worker may write to its original fd 1: a stray
`print()` in DSPy, a library or user code would corrupt the stream for the client. So the
protocol gets a private duplicate of fd 1, and fd 1 itself is pointed at stderr. From then
on print(), sys.stdout and even os.write(1, ...) land on stderr.
"""

from __future__ import annotations

import os

__all__ = ["protect_stdout"]


def protect_stdout() -> int:
    """Moves the protocol channel off fd 1 and points fd 1 at stderr; returns the protocol fd.

    Call it before any library that might write is imported. The returned fd is not
    inherited by child processes (a subprocess writing to it would corrupt the frames).
    """
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    os.set_inheritable(protocol_fd, False)
    return protocol_fd
