"""configure_lm argument parsing, secret handling, and a real DSPy LM over local HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.adapters.dspy.lm_config import NO_KEY, DEFAULT_NUM_RETRIES, LMConfig, LMConfigError, build_lm, parse_lm_args
from bridge.adapters.dspy.signatures import build_dspy_signature, parse_signature

try:  # conftest puts tests/ on sys.path; reuse its module rather than load a second copy
    from openai_server import LocalOpenAIServer
except ImportError:
    from tests.openai_server import LocalOpenAIServer  # type: ignore[no-redef]

from fixtures import ROOT  # noqa: E402
SECRET = "sk-test-123-do-not-leak"
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY")


@pytest.fixture(autouse=True)
def _no_keys_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    srv = LocalOpenAIServer().start()
    yield srv
    srv.shutdown()
    srv.server_close()


# ----------------------------------------------------------------- model names

@pytest.mark.parametrize(
    ("args", "model", "provider"),
    [
        ({"model": "openai/gpt-4o-mini"}, "openai/gpt-4o-mini", "openai"),
        ({"model": "anthropic/claude-3-5-haiku-latest"}, "anthropic/claude-3-5-haiku-latest", "anthropic"),
        ({"model": "gemini/gemini-1.5-flash"}, "gemini/gemini-1.5-flash", "gemini"),
        ({"model": "ollama_chat/llama3"}, "ollama_chat/llama3", "ollama_chat"),
        ({"provider": "google", "model": "gemini-1.5-flash"}, "gemini/gemini-1.5-flash", "gemini"),
        ({"provider": "Google", "model": "gemini/gemini-1.5-flash"}, "gemini/gemini-1.5-flash", "gemini"),
        ({"provider": "openai", "model": "gpt-4o-mini"}, "openai/gpt-4o-mini", "openai"),
        ({"provider": "anthropic", "model": "claude-3-opus"}, "anthropic/claude-3-opus", "anthropic"),
        ({"provider": "gemini", "model": "gemini-2.0-flash"}, "gemini/gemini-2.0-flash", "gemini"),
        ({"provider": "ollama", "model": "llama3"}, "ollama_chat/llama3", "ollama_chat"),
        ({"provider": "openrouter", "model": "anthropic/claude-3.5-sonnet"},
         "openrouter/anthropic/claude-3.5-sonnet", "openrouter"),
        ({"model": "google/gemini-1.5-pro"}, "gemini/gemini-1.5-pro", "gemini"),
        ({"model": "gpt-4o"}, "openai/gpt-4o", "openai"),
        ({"model": "claude-3-5-sonnet-latest"}, "anthropic/claude-3-5-sonnet-latest", "anthropic"),
        ({"model": "gemini-1.5-flash"}, "gemini/gemini-1.5-flash", "gemini"),
        ({"model": "groq/llama-3.1-8b-instant"}, "groq/llama-3.1-8b-instant", "groq"),
        ({"model": "mock"}, "mock", "mock"),
        ({"provider": "mock"}, "mock", "mock"),
        ({"provider": "mock", "model": "anything"}, "anything", "mock"),
    ],
)
def test_model_resolution(args: dict[str, Any], model: str, provider: str) -> None:
    config = parse_lm_args(args)
    assert (config.model, config.provider) == (model, provider)


def test_defaults() -> None:
    config = parse_lm_args({"model": "openai/gpt-4o-mini"})
    assert config == LMConfig(model="openai/gpt-4o-mini", provider="openai")
    assert config.cache is False
    assert config.num_retries == DEFAULT_NUM_RETRIES == 3
    assert config.temperature is None and config.max_tokens is None and config.timeout is None
    assert config.api_key is None


def test_numbers_are_validated_and_numeric_strings_accepted() -> None:
    config = parse_lm_args({"model": "openai/x", "temperature": "0.7", "max_tokens": 256.0,
                            "timeout": 30, "num_retries": "1", "cache": True})
    assert (config.temperature, config.max_tokens, config.timeout, config.num_retries, config.cache) == \
        (0.7, 256, 30.0, 1, True)
    assert type(config.temperature) is float and type(config.max_tokens) is int


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "'model' is required"),
        ({"model": ""}, "'model' is required"),
        ({"model": 5}, "'model' must be a string"),
        ({"model": "llama3"}, "provider/model"),
        ({"model": "openai/"}, "no model name"),
        ({"model": "open ai/gpt"}, "whitespace"),
        ({"model": "openai/x", "provider": "bad provider!"}, "'provider'"),
        ({"model": "openai/x", "temperature": 2.5}, "'temperature'"),
        ({"model": "openai/x", "temperature": -0.1}, "'temperature'"),
        ({"model": "openai/x", "temperature": True}, "'temperature'"),
        ({"model": "openai/x", "temperature": "hot"}, "'temperature'"),
        ({"model": "openai/x", "temperature": float("nan")}, "'temperature'"),
        ({"model": "openai/x", "max_tokens": 0}, "'max_tokens'"),
        ({"model": "openai/x", "max_tokens": 10.5}, "'max_tokens'"),
        ({"model": "openai/x", "max_tokens": [1]}, "'max_tokens'"),
        ({"model": "openai/x", "num_retries": -1}, "'num_retries'"),
        ({"model": "openai/x", "timeout": 0}, "'timeout'"),
        ({"model": "openai/x", "cache": "yes"}, "'cache'"),
        ({"model": "openai/x", "api_base": "ftp://host/v1"}, "'api_base'"),
        ({"model": "openai/x", "api_base": "localhost:8000"}, "'api_base'"),
        ({"model": "openai/x", "api_key": 12345}, "'api_key' must be a string"),
    ],
)
def test_invalid_arguments(args: dict[str, Any], fragment: str) -> None:
    with pytest.raises(LMConfigError) as info:
        parse_lm_args(args)
    assert fragment in str(info.value)
    assert info.value.error_type == "invalid_arguments"
    assert isinstance(info.value, ValueError)


def test_non_map_arguments() -> None:
    with pytest.raises(LMConfigError):
        parse_lm_args(["openai/x"])  # type: ignore[arg-type]
    assert parse_lm_args({"provider": "mock"}).is_mock


# ---------------------------------------------------------------------- secrets

def test_api_key_from_args_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert parse_lm_args({"model": "openai/x", "api_key": SECRET}).api_key == SECRET
    assert parse_lm_args({"model": "openai/x"}).api_key == "sk-from-env"
    assert parse_lm_args({"model": "openai/x", "api_key": ""}).api_key == "sk-from-env"


@pytest.mark.parametrize(
    ("model", "env", "expected"),
    [
        ("gemini/gemini-1.5-flash", {"GEMINI_API_KEY": "g1", "GOOGLE_API_KEY": "g2"}, "g1"),
        ("gemini/gemini-1.5-flash", {"GOOGLE_API_KEY": "g2"}, "g2"),
        ("anthropic/claude-3-haiku", {"ANTHROPIC_API_KEY": "a1", "OPENAI_API_KEY": "o1"}, "a1"),
        ("groq/llama3", {"GROQ_API_KEY": "q1"}, "q1"),
        ("ollama_chat/llama3", {"OPENAI_API_KEY": "o1"}, None),
        ("mock", {"OPENAI_API_KEY": "o1"}, None),
        ("openai/x", {}, None),
    ],
)
def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch, model: str, env: dict[str, str],
                                  expected: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert parse_lm_args({"model": model}).api_key == expected


def test_secret_is_not_in_repr_or_public_dict() -> None:
    config = parse_lm_args({"model": "openai/x", "api_key": SECRET,
                            "api_base": "http://user:hunter2@127.0.0.1:9/v1", "temperature": 0})
    public = config.public_dict()
    text = repr(config) + str(config) + json.dumps(public)
    assert SECRET not in text and "hunter2" not in text
    assert "api_key" not in public
    assert public["api_key_set"] is True
    assert public["api_base"] == "http://***@127.0.0.1:9/v1"
    assert public == {"model": "openai/x", "provider": "openai", "temperature": 0.0, "max_tokens": None,
                      "api_base": "http://***@127.0.0.1:9/v1", "cache": False, "num_retries": 3,
                      "timeout": None, "api_key_set": True}
    assert parse_lm_args({"model": "openai/x", "api_base": "http://127.0.0.1:9/v1"}).public_dict()["api_base"] == \
        "http://127.0.0.1:9/v1"


def test_errors_never_contain_the_key() -> None:
    for args in ({"model": "openai/x", "api_key": SECRET, "temperature": 9},
                 {"model": "", "api_key": SECRET},
                 {"model": "openai/x", "api_key": SECRET, "api_base": "nope"},
                 {"model": "no-provider-" + "x", "api_key": SECRET}):
        with pytest.raises(LMConfigError) as info:
            parse_lm_args(args)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_dspy_rejection_is_wrapped_without_the_key() -> None:
    # DSPy refuses reasoning models with temperature != 1 at construction time.
    config = parse_lm_args({"model": "openai/o3", "temperature": 0.2, "api_key": SECRET})
    with pytest.raises(LMConfigError) as info:
        build_lm(config)
    assert "openai/o3" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ------------------------------------------------------------------- build_lm

def test_build_lm_passes_settings_and_makes_no_call(server: LocalOpenAIServer) -> None:
    import dspy

    before = len(server.requests)
    config = parse_lm_args({"model": "openai/local", "api_base": server.base_url, "api_key": SECRET,
                            "temperature": 0.3, "max_tokens": 64, "timeout": 20, "num_retries": 1})
    lm = build_lm(config)
    assert isinstance(lm, dspy.LM)
    assert lm.model == "openai/local"
    assert lm.cache is False and lm.num_retries == 1
    assert lm.kwargs["temperature"] == 0.3 and lm.kwargs["max_tokens"] == 64
    assert len(server.requests) == before


def test_build_mock_lm() -> None:
    import dspy

    lm = build_lm(parse_lm_args({"model": "mock", "temperature": 0.1}))
    assert isinstance(lm, dspy.BaseLM) and type(lm).__name__ == "MockLM"
    assert lm.kwargs["temperature"] == 0.1


def test_predict_over_local_openai_server(server: LocalOpenAIServer) -> None:
    import dspy

    lm = build_lm(parse_lm_args({"model": "openai/local", "api_base": server.base_url, "api_key": "sk-test-123"}))
    predict = dspy.Predict(build_dspy_signature(parse_signature("question -> answer: int")))
    answers = {}
    for question in ("What is six times seven?", "Why?"):
        start = len(server.requests)
        with dspy.context(lm=lm):
            answers[question] = predict(question=question).answer
        assert len(server.requests) == start + 1
        request = server.requests[-1]
        assert request["authorization"] == "Bearer sk-test-123"
        assert request["body"]["model"] == "local"
    # the server answers an int field with the total length of the inputs
    assert answers == {"What is six times seven?": len("What is six times seven?"), "Why?": len("Why?")}
    assert all(type(a) is int for a in answers.values())


def test_typed_outputs_over_local_openai_server(server: LocalOpenAIServer) -> None:
    import dspy

    lm = build_lm(parse_lm_args({"model": "openai/local", "api_base": server.base_url, "api_key": "sk-x"}))
    sig = build_dspy_signature(parse_signature("question, context -> answer: int, words: list[str], score: float"))
    with dspy.context(lm=lm):
        p = dspy.ChainOfThought(sig)(question="abc", context="de")
    assert p.answer == 5
    joined = "context=de | question=abc"
    assert p.words == joined.split()[:3]
    assert p.score == len(joined) / 4
    assert p.reasoning == f"Thinking about {joined}."


def test_own_api_base_without_key_never_gets_the_environment_key(server: LocalOpenAIServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A request naming its own api_base but no api_key must not send OPENAI_API_KEY there:
    the call carries NO_KEY (keyless local servers accept it)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-must-stay-home")
    config = parse_lm_args({"model": "openai/local", "api_base": server.base_url, "num_retries": 0})
    assert config.api_key is None and config.public_dict()["api_key_set"] is False
    before = len(server.requests)
    build_lm(config)("hello")
    sent = server.requests[before:]
    assert [r["authorization"] for r in sent] == [f"Bearer {NO_KEY}"]
    # Without an api_base the provider's own address gets the environment key, as before.
    assert parse_lm_args({"model": "openai/local"}).api_key == "sk-env-secret-must-stay-home"
    # The operator's own configuration (dspex serve --lm) may pair the two.
    assert parse_lm_args({"model": "openai/local", "api_base": server.base_url},
                         env_key_for_api_base=True).api_key == "sk-env-secret-must-stay-home"


def test_modules_do_not_import_dspy() -> None:
    code = ("import sys, bridge.adapters.dspy.lm_config, bridge.adapters.dspy.signatures, "
            "bridge.adapters.dspy.mock_lm, bridge.adapters.dspy.loader, bridge.adapters.dspy\n"
            "bridge.Engine().close()\n"
            "cfg = bridge.adapters.dspy.lm_config.parse_lm_args({'model': 'openai/x', 'temperature': 0.5})\n"
            "assert not [m for m in sys.modules if m == 'dspy' or m.startswith(('dspy.', 'litellm'))]\n"
            "assert not [m for m in sys.modules if m.startswith(('typer', 'rich', 'prompt_toolkit'))]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
