"""`dspex serve`: the port worker.

- `stdio`: the one stdout guard (fd 1 belongs to the protocol; run it before anything else).
- `config`: the one reader of `dspex serve`'s options and `DSPEX_*` variables, into `ServeConfig`.
- `server`: the read loop, the reply writer and the ways a worker ends.

Deliberately empty of imports: `bridge.serve.stdio` must be importable before the engine
and its libraries are, so the guard can run first.
"""
