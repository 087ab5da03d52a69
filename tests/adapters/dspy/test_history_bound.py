"""A worker keeps a bounded LM history: DSPy's default of 10,000 entries per LM, per predictor
and globally, each a whole prompt and response, would grow a long-lived worker by hundreds
of megabytes and slow every full garbage collection. Usage still counts every call."""

from __future__ import annotations

from bridge import Engine
from bridge.adapters.dspy.loader import HISTORY_KEPT, load_dspy
from openai_server import LocalOpenAIServer


def test_history_stays_bounded_while_every_call_is_counted(openai_server: LocalOpenAIServer) -> None:
    engine = Engine()
    try:
        def call(command: str, args: dict) -> dict:
            reply = engine.call(command, {**args, "session_id": "history"}, timeout=120)
            assert reply["success"], reply
            return reply["result"]

        call("configure_lm", {"model": "openai/gpt-4o-mini", "api_base": openai_server.base_url,
                              "api_key": "sk-history-test", "cache": False})
        call("create_program", {"id": "p", "signature": "question -> answer"})
        calls = HISTORY_KEPT + 44
        batch = call("batch_execute", {"program_id": "p", "num_threads": 8,
                                       "inputs": [{"question": f"q{i}"} for i in range(calls)]})
        assert batch["errors"] == 0 and batch["usage"]["lm_calls"] == calls
        usage = call("get_usage", {})
        assert usage["session"]["lm_calls"] == calls and usage["session"]["unpriced_calls"] == 0
        assert 0 < len(load_dspy().clients.base_lm.GLOBAL_HISTORY) <= HISTORY_KEPT
        # The program's own predictor keeps its calls' entries too, under the same bound.
        call("execute_program", {"program_id": "p", "inputs": {"question": "last"}})
        session = engine.sessions.peek("history")
        assert session is not None
        predictor = session.state["dspy"].programs["p"].program
        assert 0 < len(predictor.history) <= HISTORY_KEPT
    finally:
        engine.close()
