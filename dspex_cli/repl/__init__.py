"""`dspex repl`: an interactive console (and a line-oriented pipe) for the bridge engine.

Nothing heavy is imported here: `dspex repl` must show its first prompt fast, so
prompt_toolkit, rich and DSPy are imported by the modules that need them, when needed.
"""
