"""Recording a worker's conversation as a transcript.

- `recorder`: the taps on the engine, the pending deque and the forwarding thread
  (`start_recording`, `Recorder`);
- `records`: the pipe's record format between the worker and its writer process;
- `spawn`: how the worker starts the writer process;
- `writer`: the writer process itself (`python -m bridge.record.writer`);
- `scrubbing`: the marker test and the careful path that keep secrets out of the file;
- `transcript`: the transcript format, its entries and `TranscriptWriter`;
- `reader`: reading transcripts, streaming (`read_transcript`, `summarize`).

Nothing is imported here: the writer process must load only what it uses, and run as
`__main__` without this package having imported it first.
"""
