"""The built-in command sets; importing this package registers them."""

from . import core, programs  # noqa: F401
