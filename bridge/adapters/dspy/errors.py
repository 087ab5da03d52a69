"""The DSPy adapter's errors, each with a stable `error_type` (see docs/protocol.md)."""

from __future__ import annotations

from ...errors import BridgeError


class UnknownMetric(BridgeError):
    """A metric name that no built-in, plugin or client metric has (metrics.resolve_metric)."""

    error_type = "unknown_metric"


class ProgramNotFound(BridgeError):
    error_type = "program_not_found"

    def __init__(self, program_id: str) -> None:
        super().__init__(f"Program not found: {program_id}")


class ProgramExists(BridgeError):
    error_type = "program_exists"

    def __init__(self, program_id: str) -> None:
        super().__init__(f"Program with ID '{program_id}' already exists")


class InvalidInputs(BridgeError):
    """Inputs that do not match the program's signature (missing or unknown fields)."""

    error_type = "invalid_inputs"


class InvalidSignature(BridgeError):
    error_type = "invalid_signature"


class LMNotConfigured(BridgeError):
    error_type = "lm_not_configured"

    def __init__(self) -> None:
        # "No LM is loaded." is the text DSPy itself uses and clients match on.
        super().__init__("No LM is loaded. Send configure_lm first (model \"mock\" works offline).")


class LMCallFailed(BridgeError):
    error_type = "lm_error"


class ExecutionFailed(BridgeError):
    error_type = "execution_error"


class DSPyUnavailable(BridgeError):
    error_type = "dspy_unavailable"


class Unsupported(BridgeError):
    """A feature this worker cannot serve here (ProgramOfThought without its Deno runtime)."""

    error_type = "unsupported"


class InvalidProgramState(BridgeError):
    """A program document or saved state that does not fit its signature (or DSPy version)."""

    error_type = "invalid_program_state"


class UnknownOptimizer(BridgeError):
    error_type = "unknown_optimizer"


class CompileFailed(BridgeError):
    """The optimizer itself raised while compiling."""

    error_type = "compile_error"


class TooManyErrors(BridgeError):
    """An evaluation stopped because `max_errors` examples failed (DSPy's rule)."""

    error_type = "too_many_errors"


ERROR_TYPES: tuple[type[BridgeError], ...] = (
    ProgramNotFound, ProgramExists, InvalidInputs, InvalidSignature, LMNotConfigured, LMCallFailed,
    ExecutionFailed, DSPyUnavailable, Unsupported, InvalidProgramState, UnknownOptimizer, CompileFailed,
    TooManyErrors, UnknownMetric)
