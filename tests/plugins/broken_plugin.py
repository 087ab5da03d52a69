"""A plugin that fails on import, so the worker must refuse to start with a clear message."""

raise RuntimeError("this plugin is broken on purpose")
