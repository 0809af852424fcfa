"""The sandbox, at every isolation level this machine provides: what each level contains and what it does not."""

import ast
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from podisco.discovery.boundary import sandbox
from podisco.discovery.boundary.sandbox import (
    ISOLATION_LEVELS,
    Limits,
    SandboxError,
    detect_isolation,
    require_isolation,
    run_sandboxed,
    scrubbed_env,
)

AVAILABLE = list(ISOLATION_LEVELS[ISOLATION_LEVELS.index(detect_isolation()) :])
CONTAINED_NETWORK = {"bwrap", "unshare"}


def run_python(tmp_path, source, level, readonly_paths=(), **limits):
    work = tmp_path / "work"
    return run_sandboxed([sys.executable, "-c", source], work, Limits(**limits), level, readonly_paths)


def _alive_with(marker: str) -> list[int]:
    """Processes (zombies aside: their cmdline reads empty) whose command line carries ``marker``."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                alive.append(int(proc.name))
        except OSError:
            pass
    return alive


def test_this_machine_has_bubblewrap_as_ci_does():
    # .ci/run installs Debian's bubblewrap, so CI exercises the real isolation level.
    assert detect_isolation() == "bwrap" and detect_isolation.cache_info().hits >= 1  # probed once, then cached


@pytest.mark.parametrize("level", AVAILABLE)
def test_a_result_file_comes_back_and_secrets_do_not_go_in(tmp_path, level, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-parent-secret")
    monkeypatch.setenv("SECRET_7f3a9", "parent-secret")
    source = (
        "import json, os, podisco\njson.dump({'env': dict(os.environ), 'cwd': os.getcwd()}, open('result.json', 'w'))\n"
    )
    result = run_python(tmp_path, source, level)
    assert result.returncode == 0 and result.isolation == level and not result.timed_out, result.stderr_tail
    seen = json.loads((tmp_path / "work" / "result.json").read_text())
    env, work = seen["env"], str((tmp_path / "work").resolve())
    assert not {"OPENAI_API_KEY", "HF_TOKEN", "SECRET_7f3a9"} & set(env) and "secret" not in json.dumps(env)
    assert env["HOME"] == work and env["TMPDIR"] == work + "/tmp" and seen["cwd"] == work
    assert env["PYTHONHASHSEED"] == "0" and env["LC_ALL"] == "C.UTF-8"


def test_scrubbed_env_starts_from_nothing(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    env = scrubbed_env({"OMP_NUM_THREADS": "1"})
    assert "OPENAI_API_KEY" not in env and env["OMP_NUM_THREADS"] == "1"
    assert Path(env["PYTHONPATH"], "podisco", "__init__.py").exists()


@pytest.mark.parametrize("level", AVAILABLE)
def test_files_outside_the_work_folder(tmp_path, level):
    in_tmp = tmp_path / "outside.txt"  # /tmp: bwrap gives the child a private, empty /tmp
    elsewhere = Path("/var/tmp") / f"podisco-sandbox-escape-{os.getpid()}-{level}"  # read-only under bwrap
    source = f"open({str(in_tmp)!r}, 'w')\nopen({str(elsewhere)!r}, 'w')\n"
    try:
        result = run_python(tmp_path, source, level)
        if level == "bwrap":
            assert not in_tmp.exists() and not elsewhere.exists()
            assert result.returncode != 0 and "Read-only file system" in result.stderr_tail
        else:  # documented: these levels do not protect files
            assert in_tmp.exists() and elsewhere.exists()
    finally:
        elsewhere.unlink(missing_ok=True)


def test_bwrap_hides_the_home_folder_and_mounts_back_readonly_paths(tmp_path):
    if detect_isolation() != "bwrap":
        pytest.skip("needs bwrap")
    secret = Path.home() / f".podisco-test-secret-{os.getpid()}"
    shared = tmp_path / "shared"  # under /tmp, which bwrap hides: mounted back read-only when asked for
    shared.mkdir()
    (shared / "data.txt").write_text("readable")
    secret.write_text("token")
    source = (
        "import os\n"
        f"print('home secret visible:', os.path.exists({str(secret)!r}))\n"
        f"print(open({str(shared / 'data.txt')!r}).read())\n"
        f"open({str(shared / 'new.txt')!r}, 'w')\n"
    )
    try:
        result = run_python(tmp_path, source, "bwrap", readonly_paths=[shared])
    finally:
        secret.unlink()
    assert "home secret visible: False" in result.stdout_tail and "readable" in result.stdout_tail
    assert "Read-only file system" in result.stderr_tail and not (shared / "new.txt").exists()


def test_bwrap_child_holds_no_capability_and_cannot_remount(tmp_path):
    if detect_isolation() != "bwrap":
        pytest.skip("needs bwrap")
    source = (
        "import subprocess\n"
        "caps = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if l.startswith('Cap'))\n"
        "print('eff', caps['CapEff'].strip(), 'bnd', caps['CapBnd'].strip())\n"
        "r = subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True)\n"
        "print('remount rc', r.returncode)\n"
        "r = subprocess.run(['unshare', '-U', 'true'], capture_output=True)\n"
        "print('userns rc', r.returncode)\n"
    )
    out = run_python(tmp_path, source, "bwrap").stdout_tail
    assert "eff 0000000000000000" in out and "remount rc 0" not in out and "remount rc" in out
    if "--disable-userns" in sandbox._bwrap_user_flags():  # bwrap >= 0.8 here: bounding set empty, no userns
        assert "bnd 0000000000000000" in out and "userns rc 1" in out


@pytest.mark.parametrize("level", AVAILABLE)
def test_network(tmp_path, level):
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    source = (
        "import socket\n"
        f"for address in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=3).close()\n"
        "        print('connected', address[0])\n"
        "    except OSError as error:\n"
        "        print('failed', address[0], error)\n"
    )
    try:
        out = run_python(tmp_path, source, level).stdout_tail
    finally:
        listener.close()
    if level in CONTAINED_NETWORK:  # a fresh, empty network namespace: not even the parent's loopback
        assert "failed 127.0.0.1" in out and "failed 1.1.1.1" in out and not accepted
    else:
        assert "connected 127.0.0.1" in out


@pytest.mark.parametrize("level", AVAILABLE)
def test_an_infinite_loop_is_killed_at_the_deadline(tmp_path, level):
    started = time.monotonic()
    result = run_python(tmp_path, "while True: pass", level, wall_s=2)
    assert result.timed_out and result.killed_by_signal == 9 and 2 <= result.wall_s < 10
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("level", AVAILABLE)
def test_exit_codes_and_signals_are_told_apart(tmp_path, level):
    exited = run_python(tmp_path, "import sys; sys.exit(3)", level)
    assert (exited.returncode, exited.killed_by_signal, exited.timed_out) == (3, None, False)
    killed = run_python(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", level)
    assert killed.killed_by_signal == 11 and not killed.timed_out


@pytest.mark.parametrize("level", AVAILABLE)
@pytest.mark.parametrize("ending", ["exits", "hangs"])
def test_no_process_of_a_fork_bomb_survives(tmp_path, level, ending):
    marker = f"podisco-fork-marker-{os.getpid()}-{level}-{ending}"
    source = (
        f"# {marker}\n"
        "import os, time\n"
        "def daemon():\n"  # leaves the process group: only the pid namespace or the token sweep finds it
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1000)\n"
        "        os._exit(0)\n"
        "daemon()\n"
        "spawned = 0\n"
        "for _ in range(60):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1000)\n"
        "            os._exit(0)\n"
        "        spawned += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print('spawned', spawned, flush=True)\n" + ("while True: time.sleep(1)\n" if ending == "hangs" else "")
    )
    result = run_python(tmp_path, source, level, wall_s=3 if ending == "hangs" else 60)
    assert "spawned 60" in result.stdout_tail and result.timed_out == (ending == "hangs")
    deadline = time.monotonic() + 5
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_with(marker) == []


@pytest.mark.parametrize("level", AVAILABLE)
def test_a_memory_bomb_fails_and_torch_fits_the_default_limit(tmp_path, level):
    bomb = run_python(tmp_path, "x = bytearray(20 * 1024**3)", level, memory_mb=1024)
    assert bomb.returncode != 0 and "MemoryError" in bomb.stderr_tail
    torch = run_python(tmp_path, "import torch; print(torch.ones(3).sum().item())", level)
    assert torch.returncode == 0 and "3.0" in torch.stdout_tail, torch.stderr_tail


@pytest.mark.parametrize("level", AVAILABLE)
def test_huge_output_keeps_only_a_tail_and_the_file_is_capped(tmp_path, level):
    source = "import sys\nfor _ in range(100): sys.stdout.write('y' * 1_000_000)\n"
    result = run_python(tmp_path, source, level, file_mb=20)
    assert result.returncode != 0  # stopped by the file-size limit (EFBIG)
    assert result.stdout_tail == "y" * 4000 and 0 < (tmp_path / "work" / ".stdout").stat().st_size <= 20 * 1024**2
    fits = run_python(tmp_path, "print('x' * 3_000_000 + ' the end')", level)
    assert fits.returncode == 0 and len(fits.stdout_tail) == 4000 and fits.stdout_tail.endswith("the end\n")


LIMITS_SOURCE = (
    "import ctypes, json, os, resource\n"
    "names = ['RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE']\n"
    "death = ctypes.c_int()\n"
    "ctypes.CDLL(None).prctl(2, ctypes.byref(death))\n"  # PR_GET_PDEATHSIG
    "print(json.dumps({'limits': {n: resource.getrlimit(getattr(resource, n)) for n in names},\n"
    "                  'death_signal': death.value, 'own_session': os.getsid(0) == os.getpid() == os.getpgid(0)}))\n"
)


def test_no_preexec_fn_anywhere_in_the_package():
    # CPython documents preexec_fn as not safe in the presence of threads, and the discovery parent launches jobs
    # from a ThreadPoolExecutor: a deadlock between fork and exec would be recorded as the candidate's timeout.
    package = Path(sandbox.__file__).resolve().parents[2]
    used = [
        f"{path}:{node.lineno}"
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and any(keyword.arg == "preexec_fn" for keyword in node.keywords)
    ]
    assert used == []


@pytest.mark.parametrize("level", AVAILABLE)
def test_popen_gets_no_preexec_fn_and_the_child_still_gets_every_limit(tmp_path, level, monkeypatch):
    calls = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        calls.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(sandbox.subprocess, "Popen", recording_popen)
    limits = dict(cpu_s=1234, memory_mb=1500, file_mb=77, open_files=321, processes=123)
    result = run_python(tmp_path, LIMITS_SOURCE, level, **limits)
    assert result.returncode == 0, result.stderr_tail
    assert len(calls) == 1 and calls[0].get("preexec_fn") is None and calls[0]["start_new_session"] is True
    seen = json.loads(result.stdout_tail)
    mb = 1024 * 1024
    expected = {
        "RLIMIT_CPU": 1234,
        "RLIMIT_AS": 1500 * mb,
        "RLIMIT_FSIZE": 77 * mb,
        "RLIMIT_NOFILE": 321,
        "RLIMIT_NPROC": 123,
        "RLIMIT_CORE": 0,
    }
    assert seen["limits"] == {name: [value, value] for name, value in expected.items()}
    assert seen["death_signal"] == signal.SIGKILL  # the trampoline's (or, inside bwrap, --die-with-parent's)
    if level != "bwrap":  # the same process all along: trampoline, then (unshare, then) the command
        assert seen["own_session"]
    unlimited = json.loads(run_python(tmp_path, LIMITS_SOURCE, level, memory_mb=0).stdout_tail)
    assert unlimited["limits"]["RLIMIT_AS"] == [resource.RLIM_INFINITY] * 2  # GPU jobs: no address-space limit


@pytest.mark.parametrize("level", AVAILABLE)
def test_the_child_dies_with_its_parent(tmp_path, level):
    marker = f"podisco-orphan-marker-{os.getpid()}-{level}"
    launcher = (
        "import sys\n"
        "from pathlib import Path\n"
        "from podisco.discovery.boundary.sandbox import Limits, run_sandboxed\n"
        f"source = '# {marker}\\nimport time\\ntime.sleep(1000)'\n"
        f"work = Path({str(tmp_path / 'work')!r})\n"
        f"run_sandboxed([sys.executable, '-c', source], work, Limits(wall_s=60), {level!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(sandbox.__file__).resolve().parents[3])}
    stderr = tmp_path / "parent.stderr"
    with stderr.open("wb") as sink:  # marker not in the parent's cmdline
        parent = subprocess.Popen([sys.executable, "-"], stdin=subprocess.PIPE, stderr=sink, env=env)
    parent.stdin.write(launcher.encode())
    parent.stdin.close()
    try:
        # generous: on a loaded CI machine bwrap plus a Python start has taken over 30 s
        deadline = time.monotonic() + 90
        while not _alive_with(marker) and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive_with(marker), f"the child never ran (parent exit {parent.poll()}): {stderr.read_text()[-2000:]}"
    finally:
        parent.kill()  # SIGKILL: no sweep, no deadline; only the parent-death signal is left
        parent.wait()
    deadline = time.monotonic() + 20  # generous: on 2 busy cores bwrap's teardown has taken over 5 s
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = _alive_with(marker)
    for pid in survivors:  # leave nothing behind, even when failing
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert survivors == []


def test_launches_from_many_threads_at_once(tmp_path):
    def launch(index: int) -> dict:
        work = tmp_path / f"job{index}"
        result = run_sandboxed([sys.executable, "-c", LIMITS_SOURCE], work, Limits(open_files=300 + index))
        assert result.returncode == 0 and not result.timed_out, result.stderr_tail
        return json.loads(result.stdout_tail)["limits"]["RLIMIT_NOFILE"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(launch, range(8))) == [[300 + index] * 2 for index in range(8)]


def test_a_launch_failure_raises_in_the_parent_instead_of_looking_like_the_candidate(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_sandboxed(["podisco-no-such-program"], tmp_path / "missing", Limits(), "process")
    with pytest.raises(SandboxError, match="could not start"):  # above any hard limit, even root's (nr_open)
        run_sandboxed(["true"], tmp_path / "unsettable", Limits(open_files=10**9), "process")


def test_weak_isolation_needs_an_explicit_flag():
    require_isolation("bwrap", allow_weak=False)
    require_isolation("process", allow_weak=True)
    require_isolation("unshare", allow_weak=True)
    for level in ("unshare", "process"):
        with pytest.raises(SandboxError, match="--allow-weak-isolation"):
            require_isolation(level, allow_weak=False)
    with pytest.raises(SandboxError, match="unknown isolation level"):
        require_isolation("docker", allow_weak=True)
