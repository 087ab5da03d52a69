"""Who may reach a control socket: the private runtime directory and the peer check.

The socket lives in a 0700 directory and is itself 0600, and every peer's credentials
(SO_PEERCRED) are checked on accept. A peer must run as the worker's uid; root is also
let in, because root can read the worker's memory anyway and on-call engineers often
debug with sudo.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BridgeError

RUNTIME_SUBDIR = "dspex"
DISCOVERY_SUFFIX = ".json"
SOCKET_SUFFIX = ".sock"
# Linux's sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class ControlFailure(BridgeError):
    """A control request that cannot be answered; its error_type travels with it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class UnsafeRuntimeDir(ControlFailure):
    def __init__(self, message: str) -> None:
        super().__init__("unsafe_runtime_dir", message)


# -- the runtime directory ---------------------------------------------------------------


def runtime_dir() -> Path:
    """Where sockets and discovery files live: $XDG_RUNTIME_DIR/dspex, else a per-user temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / RUNTIME_SUBDIR
    return Path(tempfile.gettempdir()) / f"dspex-{os.getuid()}"


def check_private_dir(path: Path, uid: int | None = None) -> None:
    """Refuses a directory another user could control or read (a symlink, wrong owner, group/other bits)."""
    owner = os.getuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeRuntimeDir(f"runtime directory {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRuntimeDir(f"runtime directory {path} is not a plain directory")
    if info.st_uid != owner:
        raise UnsafeRuntimeDir(f"runtime directory {path} belongs to uid {info.st_uid}, not {owner}")
    if info.st_mode & 0o077:
        raise UnsafeRuntimeDir(f"runtime directory {path} has mode {stat.S_IMODE(info.st_mode):o}; "
                               "it must be 700")


def ensure_runtime_dir(path: Path | None = None) -> Path:
    """Creates the runtime directory 0700 if missing; verifies an existing one."""
    path = path or runtime_dir()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeRuntimeDir(f"cannot create runtime directory {path}: {exc.strerror}") from None
    check_private_dir(path)
    return path


# -- peers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(conn: socket.socket) -> PeerCredentials | None:
    """The connecting process's pid/uid/gid as the kernel saw them at connect(); None if unsupported."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, size))
    return PeerCredentials(pid, uid, gid)


def peer_allowed(peer_uid: int, worker_uid: int) -> bool:
    """The worker's own uid, or root (which can read the worker's memory anyway)."""
    return peer_uid == worker_uid or peer_uid == 0

