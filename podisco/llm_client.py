"""A small OpenAI-compatible Chat Completions client on the standard library alone.

Discovery runs last hours and make hundreds of calls, so the client is built around failure: rate limits,
overloaded servers, timeouts, dropped connections and malformed bodies are retried with exponential backoff;
mistakes that a retry cannot fix (a bad key, a wrong URL or model) fail at once with the server's own message.
No SDK is needed, so any local server (vLLM, llama.cpp, Ollama) works with the same code.

Choices worth knowing:
- A reply larger than ``max_reply_bytes`` is not retried: it almost always means a misconfigured endpoint.
- Proxies (``HTTPS_PROXY``) are not used; ``http.client`` connects directly.
- ``usage["requests"]`` counts every HTTP request, failed ones included; ``usage["replies"]`` the successes.
- Structured output degrades step by step: a JSON schema (``response_format: json_schema``, which OpenAI, vLLM
  and llama.cpp accept) when the caller gives one, else JSON mode, else plain text. A 400 that names the
  response format drops one step, and the client remembers it for every later call.
- The API key is read at call time, never stored, and scrubbed from every error message.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podisco.errors import PodiscoError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class LLMSettings:
    """Where and how to ask; the defaults suit the OpenAI API, a local server needs only ``base_url``.

    A call makes at most ``1 + max_retries`` requests, plus one per response format the server rejects.
    ``max_tokens`` None leaves the length to the server; a small model that rambles needs a cap."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 1.0
    max_tokens: int | None = None
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    json_mode: bool = True
    max_reply_bytes: int = 4_000_000


@dataclass
class ChatReply:
    """The assistant's text plus what it cost; ``latency_s`` spans all attempts of this call; ``mode`` is the
    response format the answered request used (json_schema, json_object or text)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int
    finish_reason: str | None
    mode: str = "text"


class LLMError(PodiscoError):
    """The model could not be asked: says what went wrong, the URL, the HTTP status and the attempts made."""

    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 0) -> None:
        where = f"POST {url}" + (f", HTTP {status}" if status is not None else "")
        super().__init__(f"{message} ({where}, {attempts} attempt{'' if attempts == 1 else 's'})")
        self.url, self.status, self.attempts = url, status, attempts


class _Transient(Exception):
    """A failure worth retrying."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


class _TooLarge(Exception):
    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.detail, self.status = detail, status


class ChatClient:
    """Posts chat messages and returns the first choice's text; thread-safe, so proposers may share one."""

    def __init__(self, settings: LLMSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        parts = urllib.parse.urlsplit(settings.base_url)
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise LLMError("base_url must be an http:// or https:// URL with a valid host and port", url=self.url)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, port
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._lock = threading.Lock()
        self.rejected_formats: set[str] = set()  # response formats this endpoint answered with a 400
        self.usage: dict[str, int] = {"requests": 0, "replies": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def response_mode(self, schema: dict | None = None) -> str:
        """The format the next request asks for: the most structured one the endpoint has not refused."""
        wanted = (["json_schema"] if schema is not None else []) + (["json_object"] if self.settings.json_mode else [])
        return next((mode for mode in wanted if mode not in self.rejected_formats), "text")

    def chat(self, messages: list[dict[str, str]], schema: dict | None = None) -> ChatReply:
        """Send ``messages``; retry transient faults with backoff, raise LLMError on the rest or when out of tries.

        ``schema`` (a JSON Schema of the reply object) asks for structured output where the endpoint has it."""
        s = self.settings
        start = time.monotonic()
        attempts = retries = 0
        while True:
            mode = self.response_mode(schema)
            attempts += 1
            with self._lock:
                self.usage["requests"] += 1
            try:
                status, headers, body = self._post(self._payload(messages, mode, schema))
                if status == 200:
                    text, finish, prompt_tokens, completion_tokens = _parse_reply(body)
                    break
                if status in RETRY_STATUSES:
                    message = _server_message(body) or http.client.responses.get(status, "")
                    raise _Transient(f"server busy or failing: {message}", status, _retry_after(headers))
                message = _server_message(body)
                lowered = message.lower()
                refused_format = any(word in lowered for word in ("response_format", "json", "schema"))
                if status == 400 and mode != "text" and refused_format:
                    self.rejected_formats.add(mode)  # this format is unsupported: ask once more, one step plainer
                    continue
                raise self._error(f"the server refused the request: {message or '(empty body)'}", status, attempts)
            except _TooLarge as exc:
                raise self._error(
                    f"reply larger than {s.max_reply_bytes} bytes{exc.detail}", exc.status, attempts
                ) from None
            except _Transient as exc:
                failure: _Transient = exc
            except TimeoutError:
                failure = _Transient(f"no reply within timeout_s={s.timeout_s}")
            except (OSError, http.client.HTTPException) as exc:
                failure = _Transient(f"connection failed: {type(exc).__name__}: {exc}")
            if retries >= s.max_retries:
                raise self._error(f"{failure.reason}; gave up after {retries} retries", failure.status, attempts)
            self._sleep(self._delay(retries, failure.retry_after))
            retries += 1
        with self._lock:
            self.usage["replies"] += 1
            self.usage["prompt_tokens"] += prompt_tokens
            self.usage["completion_tokens"] += completion_tokens
        return ChatReply(text, prompt_tokens, completion_tokens, time.monotonic() - start, attempts, finish, mode)

    def _payload(self, messages: list[dict[str, str]], mode: str, schema: dict | None) -> bytes:
        s = self.settings
        payload: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": s.temperature}
        if s.max_tokens is not None:
            payload["max_tokens"] = s.max_tokens
        if mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "strict": True, "schema": schema},
            }
        elif mode == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return json.dumps(payload).encode("utf-8")

    def _post(self, payload: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One HTTP request on a fresh connection; reads at most max_reply_bytes of the body."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "podisco"}
        key = os.environ.get(self.settings.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.settings.timeout_s)
        response: http.client.HTTPResponse | None = None
        try:
            conn.request("POST", self._path, body=payload, headers=headers)
            response = conn.getresponse()
            limit = self.settings.max_reply_bytes
            declared = response.getheader("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _TooLarge(f" (Content-Length {declared})", response.status)
            body = response.read(limit + 1)
            if len(body) > limit:
                raise _TooLarge("", response.status)
            if response.length:  # the server closed before sending all it announced
                raise http.client.IncompleteRead(body, response.length)
            return response.status, response.headers, body
        finally:
            if response is not None:
                response.close()  # a body left unread would keep the socket open
            conn.close()

    def _delay(self, retry: int, retry_after: float | None) -> float:
        s = self.settings
        if retry_after is not None:
            return min(retry_after, s.max_backoff_s)
        return min(s.backoff_s * 2**retry, s.max_backoff_s) * random.uniform(0.5, 1.0)

    def _error(self, message: str, status: int | None, attempts: int) -> LLMError:
        key = os.environ.get(self.settings.api_key_env)
        if key:
            message = message.replace(key, "***")
        return LLMError(message, url=self.url, status=status, attempts=attempts)


def _parse_reply(body: bytes) -> tuple[str, str | None, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) from a 200 body; a malformed one is transient."""
    raw = body.decode("utf-8", errors="replace")
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise _Transient(f"reply is not JSON ({exc}): {raw[:200]!r}", 200) from None
    if not isinstance(reply, dict):
        raise _Transient(f"reply is JSON but not an object: {raw[:200]!r}", 200)
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        detail = f": {_server_message(body)}" if "error" in reply else ""
        raise _Transient(f"reply has no choices{detail}", 200)
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # some servers send content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict)) or None
    finish = choice.get("finish_reason")
    if not isinstance(content, str):
        refusal = f", refusal={message['refusal']!r}" if message.get("refusal") else ""
        raise _Transient(f"reply's first choice has no content (finish_reason={finish!r}{refusal})", 200)
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    finish = finish if isinstance(finish, str) else None
    return content, finish, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _server_message(body: bytes) -> str:
    """The error text a server put in its body (OpenAI's ``{"error": {"message": ...}}`` or plain text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"].strip()[:500]
    return (error if isinstance(error, str) else text).strip()[:500]


def _retry_after(headers: http.client.HTTPMessage) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def settings_from_env(model: str | None = None, base_url: str | None = None) -> LLMSettings:
    """Settings from arguments, else ``PODISCO_LLM_MODEL`` / ``PODISCO_LLM_BASE_URL``, else the defaults."""
    defaults = LLMSettings()
    return LLMSettings(
        base_url=base_url or os.environ.get("PODISCO_LLM_BASE_URL") or defaults.base_url,
        model=model or os.environ.get("PODISCO_LLM_MODEL") or defaults.model,
    )


def llm_configured(settings: LLMSettings) -> bool:
    """Whether a call can plausibly succeed: a local server needs no key, a remote one does."""
    if os.environ.get(settings.api_key_env):
        return True
    host = (urllib.parse.urlsplit(settings.base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
