"""What counts as a secret (exact names, known values, key shapes, URL passwords) and what
never does (user data), plus the end-to-end promise of issue 10.1: a program whose outputs
are named like secrets keeps them in the reply and the transcript, and replay notices a change."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from bridge import redact as R
from bridge.errors import LimitExceeded
from bridge.replay import replay_transcript
from fixtures import ok


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "Authorization", "x-api-key", "password", "client_secret",
                                  "access_token", "token"])
def test_secret_names_are_exact(name: str) -> None:
    assert R.is_secret_key(name)


@pytest.mark.parametrize("name", ["keywords", "key_points", "monkey", "turkey", "tokens", "max_tokens",
                                  "prompt_tokens", "my_secret_santa", "passwords_changed", "key", "tokenizer"])
def test_names_that_merely_contain_a_secret_word_are_not_secrets(name: str) -> None:
    assert not R.is_secret_key(name)
    assert R.redact({name: "kept"}) == {name: "kept"}


def test_user_data_is_never_redacted_by_name_but_known_values_are_scrubbed_everywhere() -> None:
    R.remember_secret("sk-live-planted-value-000111")
    frame = {"command": "execute_program", "args": {
        "api_key": "anything", "headers": {"Authorization": "Bearer x"},
        "inputs": {"password": "user's own field", "token": "t", "note": "key sk-live-planted-value-000111"},
        "demos": [{"api_key": "demo data"}]}}
    cleaned = R.redact(frame)["args"]
    assert cleaned["api_key"] == R.REDACTED and cleaned["headers"]["Authorization"] == R.REDACTED
    assert cleaned["inputs"]["password"] == "user's own field" and cleaned["inputs"]["token"] == "t"
    assert cleaned["inputs"]["note"] == f"key {R.REDACTED}"
    assert cleaned["demos"] == [{"api_key": "demo data"}]


@pytest.mark.parametrize("url, shown", [
    ("http://user:PW-secret@host:8080/v1", f"http://user:{R.REDACTED}@host:8080/v1"),
    ("see https://a:b:c@h/x and ftp://u:p@h", f"see https://a:{R.REDACTED}@h/x and ftp://u:{R.REDACTED}@h"),
    ("http://user@host/v1 http://host:80/v1", "http://user@host/v1 http://host:80/v1"),
    ('"api_base": "http://u:pw123@127.0.0.1:9/v1"', f'"api_base": "http://u:{R.REDACTED}@127.0.0.1:9/v1"'),
])
def test_url_passwords_are_masked(url: str, shown: str) -> None:
    assert R.scrub_text(url) == shown


def test_unparsed_frames_lose_secret_pairs_and_keep_the_rest() -> None:
    text = '{"id": 4, "args": {"API_KEY": "abc\\"def", "keywords": "kept", "password" : "pw"'
    cleaned = R.scrub_unparsed(text)
    assert "abc" not in cleaned and '"pw"' not in cleaned and '"keywords": "kept"' in cleaned


@pytest.mark.parametrize("hostile", [
    '"' + "key" * 300_000, '"api_key": "' + "\\" * 600_000, "a" * 900_000 + "://", "://" * 300_000,
    '"password"' + " " * 900_000, "sk-" * 300_000, "Bearer " * 150_000, "http://" + "u:" * 400_000,
])
def test_every_scan_is_linear_on_hostile_text(hostile: str) -> None:
    # A hang bound, not a speed target: the quadratic scans this replaces took minutes here.
    started = time.monotonic()
    R.scrub_unparsed(hostile)
    R.scrub_text(hostile)
    R.redact({"value": hostile, "api_base": hostile})
    assert time.monotonic() - started < 5


def test_known_secrets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "_known", set())
    monkeypatch.setattr(R, "MAX_KNOWN_SECRETS", 3)
    for i in range(3):
        R.remember_secret(f"secret-number-{i}")
    R.remember_secret("secret-number-0")  # one already known costs nothing
    with pytest.raises(LimitExceeded):
        R.remember_secret("secret-number-3")


def test_environment_secrets_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "_known", set())
    count = R.remember_environment_secrets({"OPENAI_API_KEY": "env-key-value-1234", "HOME": "/root",
                                            "GITHUB_TOKEN": "ghp-ish-value-5678", "PATH": "/bin"})
    assert count == 2
    assert R.scrub_text("env-key-value-1234 ghp-ish-value-5678 /root") == f"{R.REDACTED} {R.REDACTED} /root"


def _outputs_program(worker, lm_args) -> dict:
    assert ok(worker.request("configure_lm", lm_args))
    ok(worker.request("create_program", {"id": "tagger", "signature": {
        "inputs": [{"name": "text", "type": "string"}],
        "outputs": [{"name": "keywords", "type": "list<string>"}, {"name": "tokens", "type": "integer"},
                    {"name": "key_points", "type": "string"}]}}))
    return ok(worker.request("execute_program", {"program_id": "tagger", "inputs": {"text": "secret keys matter"}},
                             timeout=60))


def test_outputs_named_like_secrets_survive_recording_and_replay_catches_a_change(
        spawn_worker, lm_args, tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    worker = spawn_worker("--record", str(path), "--no-control")
    outputs = _outputs_program(worker, lm_args)["outputs"]
    assert outputs["keywords"] == ["text=secret", "keys", "matter"] and outputs["tokens"] == len("secret keys matter")
    assert worker.close() == 0

    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    replies = [line["frame"] for line in lines if line.get("type") == "frame" and line.get("dir") == "out"
               and isinstance(line.get("frame"), dict)]
    recorded = next(r["result"]["outputs"] for r in replies if "outputs" in r.get("result", {}))
    assert recorded == outputs  # what was recorded is what was sent
    assert lm_args["api_key"].encode() not in path.read_bytes()
    assert replay_transcript(str(path)).ok

    # Change the recorded LM answer for `keywords`: the replayed reply differs, replay fails.
    text = path.read_text()
    changed = text.replace('[\\"text=secret\\", \\"keys\\", \\"matter\\"]', '[\\"REGRESSION\\", \\"x\\"]')
    assert changed != text
    path.write_text(changed)
    result = replay_transcript(str(path))
    assert not result.ok
    assert any("keywords" in str(m.to_dict()) for m in result.mismatches)


def test_structures_nested_past_the_recursion_limit_raise_one_clear_error() -> None:
    from bridge.control import public

    deep = orjson.loads(b"[" * 1000 + b"]" * 1000)
    for walk in (R.redact, R.scrub_values):
        with pytest.raises(R.TooDeep):
            walk({"args": deep})
    assert public({"args": deep}) == R.TOO_DEEP  # inspect shows a marker
    R.remember_config_secrets(deep)  # returns quietly


def test_a_secret_in_the_id_is_echoed_exactly_and_short_values_are_no_secrets(spawn_worker) -> None:
    worker = spawn_worker("--no-warm", "--no-control")
    key = "%s%n-long-enough-key"
    assert worker.request("configure_lm", {"model": "mock", "api_key": key})["success"]
    reply = worker.request("configure_lm", {"model": "mock", "session_id": "s1"}, request_id=f"x:{key}")
    assert reply["id"] == f"x:{key}" and reply["success"]
    R.remember_secret("abc")
    assert R.scrub_text("abc") == "abc"
