"""dspex's engine: the DSPy side of Elixir applications.

Plugins import `command` from here to register their own handlers. Importing this
package is cheap: DSPy is loaded only when a command needs it.
"""

from .adapter import Adapter
from .adapters import register_adapter
from .catalog import catalog
from .engine import Context, Engine, EngineConfig
from .errors import BridgeError
from .registry import REGISTRY, Arg, command

__version__ = "0.1.0"

__all__ = ["Adapter", "Arg", "BridgeError", "Context", "Engine", "EngineConfig", "REGISTRY", "__version__", "catalog",
           "command", "register_adapter"]
