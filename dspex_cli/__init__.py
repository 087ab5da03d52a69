"""The `dspex` command line: serve, replay, inspect, repl."""
