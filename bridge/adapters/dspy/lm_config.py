"""`configure_lm` arguments → a validated `LMConfig` → a DSPy LM, without any call.

Secrets: the API key lives only in `LMConfig.api_key`. It is left out of `repr()`, of
`public_dict()` (what goes back to clients, logs and recordings) and of every exception
message this module raises, including messages that wrap DSPy's own errors.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_NUM_RETRIES", "LMConfig", "LMConfigError", "NO_KEY", "environment_key", "STARTUP_LM_ENV", "LazyLMHandle", "build_lm", "parse_lm_args",
           "startup_lm_config"]

# DSPy's own default, so an LM configured through DSPex retries exactly like `dspy.LM(...)`
# in the user's notebook. Clients with tight call timeouts can lower it per configure_lm.
DEFAULT_NUM_RETRIES = 3
MAX_NUM_RETRIES = 10
MAX_TOKENS_LIMIT = 10_000_000
MAX_TIMEOUT_S = 3_600.0

# Legacy DSPex names and common aliases → the provider prefix DSPy expects.
_PROVIDER_ALIASES = {
    "google": "gemini",
    "google_ai": "gemini",
    "googleai": "gemini",
    "gemini": "gemini",
    "openai": "openai",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "ollama": "ollama_chat",
    "ollama_chat": "ollama_chat",
    "mock": "mock",
}
# Bare model names DSPex users type, and the provider they belong to.
_MODEL_FAMILIES = (
    (re.compile(r"^(gpt-|o\d|chatgpt-|text-|davinci|babbage)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^(gemini|gemma)"), "gemini"),
)
_ENV_KEYS = {
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    # Local servers need no key; a stray OPENAI_API_KEY must not be picked up for them.
    "ollama_chat": (),
    "ollama": (),
    "mock": (),
}
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
# Sent as the key when a request names its own api_base but no api_key: an explicit value
# stops DSPy and LiteLLM from falling back to OPENAI_API_KEY & co., which would hand the
# worker's provider key to whatever address the request chose. Keyless local servers
# (vLLM, Ollama's OpenAI port) accept any key.
NO_KEY = "dspex-no-key"


class LMConfigError(ValueError):
    """Invalid `configure_lm` arguments, or an LM DSPy refuses to build."""

    error_type = "invalid_arguments"


@dataclass(repr=False)
class LMConfig:
    model: str
    provider: str
    temperature: float | None = None
    max_tokens: int | None = None
    api_base: str | None = None
    cache: bool = False
    num_retries: int = DEFAULT_NUM_RETRIES
    timeout: float | None = None
    api_key: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public_dict().items())
        return f"LMConfig({shown})"

    @property
    def is_mock(self) -> bool:
        return self.provider == "mock"

    def public_dict(self) -> dict[str, Any]:
        """Everything a client or a log may see: no key, and no password inside `api_base`."""
        return {
            "model": self.model,
            "provider": self.provider,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "api_base": _redact_url(self.api_base),
            "cache": self.cache,
            "num_retries": self.num_retries,
            "timeout": self.timeout,
            "api_key_set": bool(self.api_key),
        }


def _redact_url(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _describe(value: Any) -> str:
    # Echo a bad value so the user sees what went wrong, but never at length.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(args: Mapping[str, Any], key: str, *, integer: bool) -> float | int | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        # Some clients send numbers as strings; accept them, but only clean ones.
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise LMConfigError(f"'{key}' must be a number, got {_describe(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LMConfigError(f"'{key}' must be a number, got {type(value).__name__}")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise LMConfigError(f"'{key}' must be a whole number, got {_describe(value)}")
            value = int(value)
        return value
    if not math.isfinite(value):
        raise LMConfigError(f"'{key}' must be a finite number")
    return float(value)


def _optional_str(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LMConfigError(f"'{key}' must be a string, got {type(value).__name__}")
    return value.strip()


def _resolve_model(model: str | None, provider: str | None) -> tuple[str, str]:
    if provider is not None:
        provider = _PROVIDER_ALIASES.get(provider.lower(), provider.lower())
        if not _PROVIDER_NAME.match(provider):
            raise LMConfigError(f"'provider' must be a provider name such as openai or gemini, got {_describe(provider)}")
    if provider == "mock" or model == "mock" or (model or "").startswith("mock/"):
        return model or "mock", "mock"
    if not model:
        raise LMConfigError("'model' is required, e.g. \"openai/gpt-4o-mini\" or \"gemini/gemini-1.5-flash\"")
    if any(ch.isspace() for ch in model):
        raise LMConfigError(f"'model' must not contain whitespace, got {_describe(model)}")
    prefix, slash, rest = model.partition("/")
    if slash and not rest:
        raise LMConfigError(f"'model' {_describe(model)} has a provider prefix but no model name")
    if provider is not None:
        if slash and _PROVIDER_ALIASES.get(prefix.lower(), prefix.lower()) == provider:
            return f"{provider}/{rest}", provider
        # Legacy: provider "google" + model "gemini-1.5-flash"; also routers such as
        # provider "openrouter" + model "anthropic/claude-3.5-sonnet".
        return f"{provider}/{model}", provider
    if slash:
        if not prefix:
            raise LMConfigError(f"'model' {_describe(model)} has an empty provider prefix")
        canonical = _PROVIDER_ALIASES.get(prefix.lower(), prefix)
        # "google/..." is the legacy DSPex spelling; DSPy only knows "gemini/...".
        return (f"{canonical}/{rest}" if canonical == "gemini" else model), canonical
    for pattern, family in _MODEL_FAMILIES:
        if pattern.match(model.lower()):
            return f"{family}/{model}", family
    raise LMConfigError(
        f"Cannot tell the provider of model {_describe(model)}: write it as 'provider/model' "
        "(e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, gemini/gemini-1.5-flash, "
        "ollama_chat/llama3) or pass 'provider'"
    )


def _api_key_from_env(provider: str) -> str | None:
    names = _ENV_KEYS.get(provider, (f"{provider.upper().replace('-', '_')}_API_KEY",))
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def environment_key(args: Mapping[str, Any]) -> str | None:
    """The provider key the environment holds for configure_lm-style args, or None."""
    try:
        _, provider = _resolve_model(_optional_str(args, "model"), _optional_str(args, "provider"))
    except LMConfigError:
        return None
    return _api_key_from_env(provider)


def parse_lm_args(args: Mapping[str, Any] | None, *, env_key_for_api_base: bool = False) -> LMConfig:
    """Validates `configure_lm` arguments. Unknown keys are ignored, as the contract allows.

    Without `api_key` the provider's usual environment variable supplies the key, except
    when the arguments name their own `api_base`: then no key from the environment is used
    (the call carries NO_KEY), unless `env_key_for_api_base` says the arguments come from
    the operator (`dspex serve --lm`, DSPEX_LM_API_BASE), not from a request.
    """
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise LMConfigError(f"configure_lm arguments must be a map, not {type(args).__name__}")
    model = _optional_str(args, "model")
    provider = _optional_str(args, "provider")
    model, provider = _resolve_model(model, provider)

    temperature = _number(args, "temperature", integer=False)
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise LMConfigError(f"'temperature' must be between 0 and 2, got {temperature}")
    max_tokens = _number(args, "max_tokens", integer=True)
    if max_tokens is not None and not 0 < max_tokens <= MAX_TOKENS_LIMIT:
        raise LMConfigError(f"'max_tokens' must be a positive integer, got {max_tokens}")
    num_retries = _number(args, "num_retries", integer=True)
    if num_retries is None:
        num_retries = DEFAULT_NUM_RETRIES
    elif not 0 <= num_retries <= MAX_NUM_RETRIES:
        raise LMConfigError(f"'num_retries' must be between 0 and {MAX_NUM_RETRIES}, got {num_retries}")
    timeout = _number(args, "timeout", integer=False)
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_S:
        raise LMConfigError(f"'timeout' must be between 0 and {MAX_TIMEOUT_S:g} seconds, got {timeout}")

    cache = args.get("cache", False)
    if cache is None:
        cache = False
    if not isinstance(cache, bool):
        raise LMConfigError(f"'cache' must be true or false, got {type(cache).__name__}")

    api_base = _optional_str(args, "api_base") or _optional_str(args, "base_url")
    if api_base is not None:
        scheme = urlsplit(api_base).scheme
        if scheme not in ("http", "https") or not urlsplit(api_base).netloc:
            raise LMConfigError(f"'api_base' must be an http(s) URL, got {_describe(_redact_url(api_base))}")

    raw_key = args.get("api_key")
    if raw_key is not None and not isinstance(raw_key, str):
        # Type name only: a mistyped key is still a key.
        raise LMConfigError(f"'api_key' must be a string, got {type(raw_key).__name__}")
    api_key = raw_key.strip() if raw_key and raw_key.strip() else None
    if api_key is None and provider != "mock" and (api_base is None or env_key_for_api_base):
        api_key = _api_key_from_env(provider)

    return LMConfig(model=model, provider=provider, temperature=temperature, max_tokens=max_tokens,
                    api_base=api_base, cache=cache, num_retries=int(num_retries), timeout=timeout,
                    api_key=api_key)


def _scrub(text: str, config: LMConfig) -> str:
    if config.api_key:
        text = text.replace(config.api_key, "***")
    if config.api_base:
        redacted = _redact_url(config.api_base)
        if redacted != config.api_base:
            text = text.replace(config.api_base, redacted or "")
    return text


def build_lm(config: LMConfig) -> Any:
    """Builds the DSPy LM (or the mock LM) for `config`. Makes no request."""
    if config.is_mock:
        from bridge.adapters.dspy.mock_lm import make_mock_lm

        return make_mock_lm(config.model, temperature=config.temperature, max_tokens=config.max_tokens)
    from bridge.adapters.dspy.loader import load_dspy

    dspy = load_dspy()
    kwargs: dict[str, Any] = {"cache": config.cache, "num_retries": config.num_retries}
    # Only what the caller set: passing None would override provider defaults in some paths.
    if config.temperature is not None:
        kwargs["temperature"] = config.temperature
    if config.max_tokens is not None:
        kwargs["max_tokens"] = config.max_tokens
    if config.api_base is not None:
        kwargs["api_base"] = config.api_base
    if config.api_key is not None:
        kwargs["api_key"] = config.api_key
    elif config.api_base is not None:
        kwargs["api_key"] = NO_KEY
    if config.timeout is not None:
        kwargs["timeout"] = config.timeout
    try:
        return dspy.LM(config.model, **kwargs)
    except Exception as exc:
        # DSPy's message may quote its arguments; wrap it, scrubbed, and drop the chain
        # so a traceback printer cannot show the original either.
        raise LMConfigError(
            f"Cannot configure model {config.model!r}: {type(exc).__name__}: {_scrub(str(exc), config)}"
        ) from None


# The worker's own default LM (`dspex serve --lm MODEL`, DSPEX_LM): environment variable →
# the configure_lm argument it stands for. One table feeds parsing, `--help` and the docs.
STARTUP_LM_ENV = {
    "DSPEX_LM": "model",
    "DSPEX_LM_API_BASE": "api_base",
    "DSPEX_LM_TEMPERATURE": "temperature",
    "DSPEX_LM_MAX_TOKENS": "max_tokens",
    "DSPEX_LM_TIMEOUT": "timeout",
    "DSPEX_LM_NUM_RETRIES": "num_retries",
}


def startup_lm_config(model: str | None, environ: Mapping[str, str]) -> LMConfig | None:
    """The default LM a worker starts with: `model` (from --lm) or DSPEX_LM, with the other
    DSPEX_LM_* settings; None when neither names a model. The key comes from the provider's
    usual variable (OPENAI_API_KEY, GEMINI_API_KEY, ...), also with DSPEX_LM_API_BASE: the
    operator, not a request, chose that address. Raises LMConfigError naming the variable."""
    args: dict[str, Any] = {}
    for variable, name in STARTUP_LM_ENV.items():
        value = environ.get(variable, "").strip()
        if value:
            args[name] = value
    if model is not None and model.strip():
        args["model"] = model.strip()
    if not args.get("model"):
        if args:
            raise LMConfigError(f"{', '.join(v for v, n in STARTUP_LM_ENV.items() if n in args)} "
                                "given but no model: set DSPEX_LM or pass --lm MODEL")
        return None
    try:
        return parse_lm_args(args, env_key_for_api_base=True)
    except LMConfigError as exc:
        names = {name: variable for variable, name in STARTUP_LM_ENV.items()}
        text = str(exc)
        for name, variable in names.items():  # say which variable holds the bad value
            text = text.replace(f"'{name}'", f"{variable} ('{name}')" if name != "model" else "the model (--lm/DSPEX_LM)")
        raise LMConfigError(text) from None


class LazyLMHandle:
    """An LM handle whose DSPy LM is built on first use, so a worker's start-up never
    imports DSPy; stands in for sessions.LMHandle (same `lm`, `public`, `model`)."""

    def __init__(self, config: LMConfig, replay: Any = None) -> None:
        self.config = config
        self.public = config.public_dict()
        # Replay answers LM calls from a cassette: `replay()` returns that stand-in instead.
        self._replay = replay
        self._lm: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return str(self.public.get("model"))

    @property
    def lm(self) -> Any:
        if self._lm is None:
            with self._lock:
                if self._lm is None:
                    replayed = self._replay() if self._replay is not None else None
                    self._lm = replayed if replayed is not None else build_lm(self.config)
        return self._lm
