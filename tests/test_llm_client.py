"""ChatClient against a real local HTTP server: success, retries, give-ups, JSON-mode fallback and size limits.

Backoff sleeps are recorded instead of slept, so the whole file runs in about a second.
"""

from __future__ import annotations

import json
import socket

import pytest

from podisco.llm_client import ChatClient, LLMError, LLMSettings, llm_configured, settings_from_env
from tests.discovery.fake_llm_server import FakeLLMServer, drop, empty_choices, raw, reply, sleep, status

KEY_ENV = "PODISCO_TEST_LLM_KEY"
SECRET = "sk-test-secret-0123456789"
MESSAGES = [{"role": "system", "content": "You propose losses."}, {"role": "user", "content": "Go."}]


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def make_client(server: FakeLLMServer, sleeps: list[float], **overrides: object) -> ChatClient:
    settings = LLMSettings(base_url=server.base_url, model="test-model", api_key_env=KEY_ENV, **overrides)
    return ChatClient(settings, sleep=sleeps.append)


def test_success_counts_usage_and_sends_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    sleeps: list[float] = []
    with FakeLLMServer([reply('{"name": "a"}', 12, 7), reply("second", 3, 4)]) as server:
        client = make_client(server, sleeps, temperature=0.5, max_tokens=99)
        first = client.chat(MESSAGES)
        second = client.chat(MESSAGES)
    assert (first.text, first.prompt_tokens, first.completion_tokens) == ('{"name": "a"}', 12, 7)
    assert (first.attempts, first.finish_reason) == (1, "stop")
    assert first.latency_s >= 0 and second.text == "second"
    assert client.usage == {"requests": 2, "replies": 2, "prompt_tokens": 15, "completion_tokens": 11}
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json == {
        "model": "test-model",
        "messages": MESSAGES,
        "temperature": 0.5,
        "max_tokens": 99,
        "response_format": {"type": "json_object"},
    }
    assert sleeps == []


def test_no_key_means_no_authorization_header() -> None:
    with FakeLLMServer([reply("ok")]) as server:
        make_client(server, []).chat(MESSAGES)
    assert "authorization" not in server.requests[0].headers


def test_401_is_not_retried_and_never_shows_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}."}})
    sleeps: list[float] = []
    with FakeLLMServer([status(401, body), reply("never")]) as server, pytest.raises(LLMError) as caught:
        make_client(server, sleeps).chat(MESSAGES)
    message = str(caught.value)
    assert SECRET not in message
    assert "Incorrect API key provided: ***" in message
    assert "HTTP 401" in message and "1 attempt)" in message and server.base_url in message
    assert caught.value.status == 401 and len(server.requests) == 1 and sleeps == []


def test_404_is_not_retried() -> None:
    with (
        FakeLLMServer([status(404, '{"error": {"message": "The model `nope` does not exist"}}')]) as server,
        pytest.raises(LLMError, match="model `nope` does not exist"),
    ):
        make_client(server, []).chat(MESSAGES)
    assert len(server.requests) == 1


def test_429_honours_retry_after() -> None:
    sleeps: list[float] = []
    with FakeLLMServer([status(429, headers={"Retry-After": "7"}), reply("ok")]) as server:
        result = make_client(server, sleeps).chat(MESSAGES)
    assert result.text == "ok" and result.attempts == 2 and sleeps == [7.0]


def test_retry_after_is_capped() -> None:
    sleeps: list[float] = []
    with FakeLLMServer([status(429, headers={"Retry-After": "3600"}), reply("ok")]) as server:
        make_client(server, sleeps, max_backoff_s=5.0).chat(MESSAGES)
    assert sleeps == [5.0]


def test_server_errors_back_off_exponentially() -> None:
    sleeps: list[float] = []
    with FakeLLMServer([status(500), status(503), reply("ok")]) as server:
        client = make_client(server, sleeps, backoff_s=2.0)
        result = client.chat(MESSAGES)
    assert result.text == "ok" and result.attempts == 3
    assert len(sleeps) == 2 and 1.0 <= sleeps[0] <= 2.0 and 2.0 <= sleeps[1] <= 4.0
    assert client.usage["requests"] == 3 and client.usage["replies"] == 1


def test_timeout_then_success() -> None:
    sleeps: list[float] = []
    with FakeLLMServer([sleep(1.0, then=reply("late")), reply("ok")]) as server:
        result = make_client(server, sleeps, timeout_s=0.3).chat(MESSAGES)
    assert result.text == "ok" and result.attempts == 2 and len(sleeps) == 1


def test_timeout_gives_up_with_a_clear_message() -> None:
    with (
        FakeLLMServer([sleep(1.0)]) as server,
        pytest.raises(LLMError, match=r"no reply within timeout_s=0\.2.*2 attempts"),
    ):
        make_client(server, [], timeout_s=0.2, max_retries=1).chat(MESSAGES)


@pytest.mark.parametrize(
    "fault",
    [drop(), raw(b'{"choices": [', content_length=500)],
    ids=["dropped-connection", "body-cut-short"],
)
def test_connection_faults_are_retried(fault: object) -> None:
    sleeps: list[float] = []
    with FakeLLMServer([fault, reply("ok")]) as server:
        result = make_client(server, sleeps).chat(MESSAGES)
    assert result.text == "ok" and result.attempts == 2 and len(sleeps) == 1


def test_connection_refused_gives_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=1)
    with pytest.raises(LLMError, match="connection failed"):
        ChatClient(settings, sleep=lambda s: None).chat(MESSAGES)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502 Bad Gateway</html>", "reply is not JSON"),
        (b'{"choices": [{"message": {"role": "assistant", "content": "hel', "reply is not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"error": {"message": "upstream overloaded"}}', "no choices: upstream overloaded"),
    ],
    ids=["html", "truncated", "list", "error-in-200"],
)
def test_malformed_bodies_are_retried_then_fail(body: bytes, problem: str) -> None:
    sleeps: list[float] = []
    with FakeLLMServer([raw(body)]) as server, pytest.raises(LLMError, match=problem) as caught:
        make_client(server, sleeps, max_retries=2).chat(MESSAGES)
    assert caught.value.attempts == 3 and len(server.requests) == 3 and len(sleeps) == 2
    assert "gave up after 2 retries" in str(caught.value)


def test_empty_choices_and_null_content() -> None:
    with FakeLLMServer([empty_choices(), reply(None, finish_reason="content_filter"), reply("ok")]) as server:
        result = make_client(server, []).chat(MESSAGES)
    assert result.text == "ok" and result.attempts == 3
    with FakeLLMServer([empty_choices()]) as server, pytest.raises(LLMError, match="reply has no choices"):
        make_client(server, [], max_retries=1).chat(MESSAGES)
    with (
        FakeLLMServer([reply(None, finish_reason="content_filter")]) as server,
        pytest.raises(LLMError, match="no content \\(finish_reason='content_filter'\\)"),
    ):
        make_client(server, [], max_retries=0).chat(MESSAGES)


def test_bad_utf8_is_replaced_and_missing_usage_counts_zero() -> None:
    body = b'{"choices": [{"message": {"role": "assistant", "content": "caf\xe9 \xff ok"}, "finish_reason": null}]}'
    with FakeLLMServer([raw(body)]) as server:
        client = make_client(server, [])
        result = client.chat(MESSAGES)
    assert result.text == "caf\ufffd \ufffd ok"
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (0, 0, None)
    assert client.usage["prompt_tokens"] == 0


def test_json_mode_falls_back_once_and_remembers() -> None:
    refusal = status(400, '{"error": {"message": "response_format json_object is not supported"}}')
    with FakeLLMServer([refusal, reply("one"), reply("two")]) as server:
        client = make_client(server, [])
        assert client.chat(MESSAGES).attempts == 2
        client.chat(MESSAGES)
    sent = [r.json for r in server.requests]
    assert sent[0]["response_format"] == {"type": "json_object"}
    assert "response_format" not in sent[1] and "response_format" not in sent[2]
    assert client.rejected_formats == {"json_object"}


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_schema_first_then_json_mode_then_text_remembered() -> None:
    """An endpoint without structured output: schema -> JSON mode -> plain text, each step once per client."""
    with FakeLLMServer([reply('{"name": "a"}')], formats=()) as server:
        client = make_client(server, [])
        first = client.chat(MESSAGES, schema=SCHEMA)
        second = client.chat(MESSAGES, schema=SCHEMA)
    kinds = [(r.json.get("response_format") or {}).get("type") for r in server.requests]
    assert kinds == ["json_schema", "json_object", None, None]
    assert (first.mode, first.attempts, second.mode, second.attempts) == ("text", 3, "text", 1)
    assert client.rejected_formats == {"json_schema", "json_object"}


def test_schema_is_sent_as_openai_json_schema() -> None:
    with FakeLLMServer([reply('{"name": "a"}')]) as server:
        result = make_client(server, [], max_tokens=256).chat(MESSAGES, schema=SCHEMA)
    sent = server.requests[0].json
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "strict": True, "schema": SCHEMA},
    }
    assert sent["max_tokens"] == 256 and (result.mode, result.attempts) == ("json_schema", 1)


def test_endpoint_with_json_mode_only_keeps_json_mode() -> None:
    with FakeLLMServer([reply("{}")], formats=("json_object",)) as server:
        client = make_client(server, [])
        assert client.chat(MESSAGES, schema=SCHEMA).mode == "json_object"
        assert client.chat(MESSAGES, schema=SCHEMA).mode == "json_object"
    assert len(server.requests) == 3 and client.rejected_formats == {"json_schema"}


def test_other_400_is_not_a_json_mode_problem() -> None:
    with (
        FakeLLMServer([status(400, '{"error": {"message": "messages must not be empty"}}')]) as server,
        pytest.raises(LLMError, match="HTTP 400"),
    ):
        make_client(server, []).chat(MESSAGES)
    assert len(server.requests) == 1


def test_json_mode_off_sends_no_response_format() -> None:
    with FakeLLMServer([reply("ok")]) as server:
        make_client(server, [], json_mode=False).chat(MESSAGES)
    assert "response_format" not in server.requests[0].json


def test_large_replies_within_and_over_the_limit() -> None:
    big = "x" * 1_000_000
    with FakeLLMServer([reply(big)]) as server:
        assert make_client(server, []).chat(MESSAGES).text == big
        with pytest.raises(LLMError, match="reply larger than 500000 bytes") as caught:
            make_client(server, [], max_reply_bytes=500_000).chat(MESSAGES)
    assert caught.value.attempts == 1 and len(server.requests) == 2


def test_large_reply_without_content_length_is_cut_at_the_limit() -> None:
    body = json.dumps({"choices": [{"message": {"content": "y" * 2000}}]}).encode()
    with (
        FakeLLMServer([raw(body, content_length=-1)]) as server,
        pytest.raises(LLMError, match="reply larger than 1000 bytes"),
    ):
        make_client(server, [], max_reply_bytes=1000).chat(MESSAGES)


def test_the_default_callable_drives_a_conversation() -> None:
    def answer(request: dict) -> object:
        return reply(f"you said {request['messages'][-1]['content']}")

    with FakeLLMServer([status(503)], default=answer) as server:
        client = make_client(server, [])
        assert client.chat(MESSAGES).text == "you said Go."
        assert client.chat([{"role": "user", "content": "again"}]).text == "you said again"


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://example.com/v1", "http://localhost:port/v1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(LLMError, match="http:// or https://"):
        ChatClient(LLMSettings(base_url=url))


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODISCO_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("PODISCO_LLM_MODEL", raising=False)
    assert settings_from_env() == LLMSettings()
    monkeypatch.setenv("PODISCO_LLM_BASE_URL", "http://localhost:8000/v1")
    monkeypatch.setenv("PODISCO_LLM_MODEL", "qwen")
    assert (settings_from_env().base_url, settings_from_env().model) == ("http://localhost:8000/v1", "qwen")
    assert settings_from_env(model="m", base_url="http://x/v1").model == "m"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:8000/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
    ],
)
def test_llm_configured_without_key(url: str, expected: bool) -> None:
    assert llm_configured(LLMSettings(base_url=url, api_key_env=KEY_ENV)) is expected


def test_llm_configured_with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    assert llm_configured(LLMSettings(api_key_env=KEY_ENV))
