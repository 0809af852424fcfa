"""A scripted OpenAI-compatible server on 127.0.0.1, so client and discovery-loop tests cross a real socket.

Each POST to ``/v1/chat/completions`` consumes one step of the script; a step is an action (``reply``,
``status``, ``sleep``, ``drop``, ``raw``, ``empty_choices``) or a callable ``(request_json) -> action``. When the
script is used up the server asks ``default(request_json)`` if given, else repeats the last step.

Like a real endpoint, it checks the request first: a malformed ``response_format``, ``max_tokens`` or
``temperature`` is answered with a 400 (not consuming a step), as is a response format not in ``formats``
(default: both json_schema and json_object), with the message llama.cpp-style servers send::

    with FakeLLMServer([status(429, headers={"Retry-After": "2"}), reply('{"name": "x"}')]) as server:
        client = ChatClient(LLMSettings(base_url=server.base_url))
        ...
        assert server.requests[0].json["model"] == "gpt-4o"
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    content: str | None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str | None = "stop"
    usage: bool = True


@dataclass(frozen=True)
class Status:
    code: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    seconds: float
    then: Action


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Raw:
    body: bytes
    status: int = 200
    content_length: int | None = None  # more than len(body) cuts the body short; -1 sends no Content-Length


@dataclass(frozen=True)
class EmptyChoices:
    pass


Action = Reply | Status | Sleep | Drop | Raw | EmptyChoices
Step = Action | Callable[[Any], Action]


def reply(
    content: str | None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str | None = "stop",
    usage: bool = True,
) -> Reply:
    """A normal completion; ``content=None`` sends a null content, ``usage=False`` omits the usage block."""
    return Reply(content, prompt_tokens, completion_tokens, finish_reason, usage)


def status(code: int, body: str | None = None, headers: dict[str, str] | None = None) -> Status:
    """An HTTP status with an OpenAI-style error body unless ``body`` is given."""
    if body is None:
        body = json.dumps({"error": {"message": f"fake server says {code}", "type": "fake", "code": code}})
    return Status(code, body, dict(headers or {}))


def sleep(seconds: float, then: Action | None = None) -> Sleep:
    """Wait, then act (default: a reply of ``{}``); a client with a shorter timeout gives up first."""
    return Sleep(seconds, then if then is not None else reply("{}"))


def drop() -> Drop:
    """Close the connection without sending a status line."""
    return Drop()


def raw(body: bytes, status: int = 200, content_length: int | None = None) -> Raw:
    """Send these exact bytes as the body (truncated JSON, bad UTF-8, huge replies).

    ``content_length`` larger than the body announces bytes never sent; -1 leaves the header out, so the body
    ends when the connection closes."""
    return Raw(body, status, content_length)


def empty_choices() -> EmptyChoices:
    """A 200 reply whose ``choices`` list is empty."""
    return EmptyChoices()


@dataclass
class RecordedRequest:
    """One request as the server saw it; header names are lower-case."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # None when the body was not JSON


class FakeLLMServer:
    """A real ThreadingHTTPServer on an ephemeral port in a daemon thread; use it as a context manager."""

    def __init__(
        self,
        script: Sequence[Step] = (),
        default: Callable[[Any], Action] | None = None,
        formats: Sequence[str] = ("json_schema", "json_object"),
    ) -> None:
        self.script = list(script)
        self.default = default
        self.formats = tuple(formats)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first (use it in a with block)"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeLLMServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are sleeping
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record_and_choose(self, request: RecordedRequest) -> Action:
        with self._lock:
            self.requests.append(request)
            if self._next < len(self.script):
                step: Step | None = self.script[self._next]
                self._next += 1
            elif self.default is not None:
                step = self.default
            else:
                step = self.script[-1] if self.script else None
        if step is None:
            return status(500, json.dumps({"error": {"message": "fake server has no script"}}))
        if isinstance(step, Action):
            return step
        return step(request.json)


def _request_problem(request: Any, formats: Sequence[str]) -> str | None:
    """What a strict OpenAI-compatible server would refuse in this request, or None."""
    if not isinstance(request, dict):
        return None  # scripts test what the client does with odd bodies; the client never sends one
    max_tokens = request.get("max_tokens")
    if "max_tokens" in request and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return f"max_tokens must be a positive integer, got {max_tokens!r}"
    temperature = request.get("temperature")
    if "temperature" in request and not (isinstance(temperature, int | float) and 0 <= temperature <= 2):
        return f"temperature must be a number in [0, 2], got {temperature!r}"
    if "response_format" not in request:
        return None
    fmt = request["response_format"]
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema", "text"):
        return f"response_format.type must be text, json_object or json_schema, got {fmt!r}"
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("schema"), dict)):
            return "response_format json_schema needs json_schema.name and json_schema.schema (an object)"
    if kind != "text" and kind not in formats:
        return f"response_format {kind} is not supported"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client gave up (timeouts are tested on purpose); report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            return
        fake = self.server.fake
        problem = _request_problem(parsed, fake.formats)
        if problem is not None:
            with fake._lock:
                fake.requests.append(RecordedRequest(self.path, headers, body, parsed))
            self._send(400, json.dumps({"error": {"message": problem, "type": "invalid_request_error"}}).encode())
            return
        action = fake._record_and_choose(RecordedRequest(self.path, headers, body, parsed))
        while isinstance(action, Sleep):
            if fake._stopping.wait(action.seconds):
                return
            action = action.then
        self._act(action, parsed)

    def _act(self, action: Action, request_json: Any) -> None:
        model = request_json.get("model", "fake") if isinstance(request_json, dict) else "fake"
        if isinstance(action, Drop):
            self.close_connection = True
        elif isinstance(action, Raw):
            self._send(action.status, action.body, action.content_length)
        elif isinstance(action, Status):
            self._send(action.code, action.body.encode("utf-8"), headers=action.headers)
        elif isinstance(action, EmptyChoices):
            self._send(200, json.dumps({"id": "fake", "object": "chat.completion", "choices": []}).encode())
        elif isinstance(action, Reply):
            message = {"role": "assistant", "content": action.content}
            reply_json: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": action.finish_reason}],
            }
            if action.usage:
                total = action.prompt_tokens + action.completion_tokens
                reply_json["usage"] = {
                    "prompt_tokens": action.prompt_tokens,
                    "completion_tokens": action.completion_tokens,
                    "total_tokens": total,
                }
            self._send(200, json.dumps(reply_json).encode("utf-8"))
        else:
            raise TypeError(f"not a fake server action: {action!r}")

    def _send(
        self, code: int, body: bytes, content_length: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        if content_length != -1:
            self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
