"""The wire layer: frames (`framing`), their JSON (`codec`), the messages they carry
(`messages`: request checks, reply/error/event envelopes) and a worker client (`client`).

Nothing is imported here, so a part that needs only the framing does not load the rest.
"""
