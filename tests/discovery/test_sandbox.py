import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from podisco.discovery.sandbox import (
    Limits,
    SandboxError,
    detect_isolation,
    require_isolation,
    run_sandboxed,
    scrubbed_env,
)

LEVELS = {"bwrap": 0, "unshare": 1, "process": 2}
AVAILABLE = [level for level in LEVELS if LEVELS[level] >= LEVELS[detect_isolation()]]


def run_python(tmp_path, source, level, **limits):
    return run_sandboxed([sys.executable, "-c", source], tmp_path / "work", Limits(**limits), level, env=scrubbed_env())


def test_this_machine_has_bubblewrap_as_ci_does():
    # .ci/run installs Debian's bubblewrap, so CI exercises the real isolation level.
    assert detect_isolation() == "bwrap"


@pytest.mark.parametrize("level", AVAILABLE)
def test_a_result_file_comes_back_and_secrets_do_not_go_in(tmp_path, level, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-parent-secret")
    source = "import json, os; json.dump(dict(os.environ), open('result.json', 'w'))"
    result = run_python(tmp_path, source, level)
    assert result.returncode == 0 and result.isolation == level
    env = json.loads((tmp_path / "work" / "result.json").read_text())
    assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
    assert "secret" not in json.dumps(env)


@pytest.mark.parametrize("level", AVAILABLE)
def test_files_outside_the_work_folder(tmp_path, level):
    in_tmp = tmp_path / "outside.txt"  # /tmp: bwrap gives the child a private, empty /tmp
    in_project = Path(__file__).parent / f".sandbox-escape-{os.getpid()}"  # anywhere else: read-only
    try:
        result = run_python(tmp_path, f"open({str(in_tmp)!r}, 'w'); open({str(in_project)!r}, 'w')", level)
        if level == "bwrap":
            assert not in_tmp.exists() and not in_project.exists()
            assert result.returncode != 0 and "Read-only file system" in result.stderr_tail
        else:  # documented: these levels do not protect files
            assert in_tmp.exists() and in_project.exists()
    finally:
        in_project.unlink(missing_ok=True)


def test_bwrap_hides_the_home_folder(tmp_path):
    if detect_isolation() != "bwrap":
        pytest.skip("needs bwrap")
    secret = Path.home() / ".podisco-test-secret"
    secret.write_text("token")
    try:
        result = run_python(tmp_path, f"print(open({str(secret)!r}).read())", "bwrap")
        assert result.returncode != 0 and "token" not in result.stdout_tail
    finally:
        secret.unlink()


@pytest.mark.parametrize("level", AVAILABLE)
def test_network(tmp_path, level):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        source = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('connected')"
        result = run_python(tmp_path, source, level)
    finally:
        server.shutdown()
    if level == "process":
        assert "connected" in result.stdout_tail
    else:  # a fresh network namespace: not even the parent's loopback is reachable
        assert result.returncode != 0 and "connected" not in result.stdout_tail


@pytest.mark.parametrize("level", AVAILABLE)
def test_an_infinite_loop_is_killed_at_the_deadline(tmp_path, level):
    started = time.monotonic()
    result = run_python(tmp_path, "while True: pass", level, wall_s=2)
    assert result.timed_out and time.monotonic() - started < 10


@pytest.mark.parametrize("level", AVAILABLE)
def test_no_process_of_a_process_tree_survives(tmp_path, level):
    marker = f"podisco-sandbox-marker-{os.getpid()}-{level}"
    source = (
        "import subprocess\n"
        f"procs = [subprocess.Popen(['sh', '-c', 'exec sleep 1000 # {marker}']) for _ in range(20)]\n"
        "print('spawned', flush=True)\n"
    )
    result = run_python(tmp_path, source, level)
    assert "spawned" in result.stdout_tail
    time.sleep(0.5)
    alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
    assert alive == []


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("level", AVAILABLE)
def test_a_memory_bomb_fails_without_hurting_the_parent(tmp_path, level):
    result = run_python(tmp_path, "x = bytearray(20 * 1024**3)", level, memory_mb=1024)
    assert result.returncode != 0 and "MemoryError" in result.stderr_tail


def test_torch_imports_under_the_default_limits(tmp_path):
    result = run_python(tmp_path, "import torch; print(torch.ones(3).sum().item())", None)
    assert result.returncode == 0 and "3.0" in result.stdout_tail


@pytest.mark.parametrize("level", AVAILABLE)
def test_huge_output_keeps_only_a_tail(tmp_path, level):
    source = "import sys\nfor _ in range(200): sys.stdout.write('y' * 1_000_000)\n"
    result = run_python(tmp_path, source, level, file_mb=20)
    assert result.returncode != 0  # stopped by the file-size limit
    assert len(result.stdout_tail) <= 4000 and (tmp_path / "work" / ".stdout").stat().st_size <= 20 * 1024**2


def test_weak_isolation_needs_an_explicit_flag():
    require_isolation("bwrap", allow_weak=False)
    require_isolation("process", allow_weak=True)
    with pytest.raises(SandboxError, match="--allow-weak-isolation"):
        require_isolation("unshare", allow_weak=False)
