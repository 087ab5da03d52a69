"""The control socket of a live worker, for `dspex inspect` and `dspex repl --attach`.

- `security`: the private runtime directory and the peer-credential check;
- `present`: making state safe and small enough to show (redaction, cutting, describing
  frames and LM calls);
- `views`: the read-only views, in a `ViewRegistry`;
- `streams`: rates and subscriptions;
- `server`: the socket server (`ControlServer`, `start_control_server`);
- `client`: the client side (`ControlClient`, discovery of running workers).
"""

from __future__ import annotations

from .present import cut, describe_frame, describe_lm_call, public, snapshot
from .security import (DISCOVERY_SUFFIX, SOCKET_SUFFIX, ControlFailure, UnsafeRuntimeDir, check_private_dir,
                       ensure_runtime_dir, peer_allowed, peer_credentials, runtime_dir)
from .server import ControlServer, build_views, start_control_server
from .views import CORE_VIEWS, ViewRegistry, known_views

__all__ = ["CORE_VIEWS", "ControlFailure", "ControlServer", "DISCOVERY_SUFFIX", "SOCKET_SUFFIX", "UnsafeRuntimeDir",
           "ViewRegistry", "build_views", "check_private_dir", "cut", "describe_frame", "describe_lm_call",
           "ensure_runtime_dir", "known_views", "peer_allowed", "peer_credentials", "public", "runtime_dir",
           "snapshot", "start_control_server"]
