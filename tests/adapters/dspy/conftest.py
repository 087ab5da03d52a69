"""Workers with the sample tools plugin, shared by the DSPy adapter's tool tests (a module
that needs another kind of `worker` defines its own, which pytest then uses instead)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fixtures import sample_tools_worker


def _model_of(request: pytest.FixtureRequest, suffix: str) -> str:
    """A model name of the test module's own, so its requests can be picked out at the server."""
    return f"openai/{request.module.__name__.removeprefix('test_')}-{suffix}"


@pytest.fixture
def worker(spawn_worker: Any, openai_server: Any, request: pytest.FixtureRequest) -> Any:
    """A fresh worker per test, its LM a model name of the test's own."""
    return sample_tools_worker(spawn_worker, openai_server, _model_of(request, uuid.uuid4().hex[:8]))


@pytest.fixture(scope="module")
def refusing_worker(module_spawn: Any, openai_server: Any, request: pytest.FixtureRequest) -> Any:
    """One worker for a module's refusals (parametrised bad requests): a refusal creates
    nothing, so they need not each pay a worker's start and DSPy's import."""
    return sample_tools_worker(module_spawn, openai_server, _model_of(request, "refusals"))
