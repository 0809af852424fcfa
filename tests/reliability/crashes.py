"""Kill a real discovery run (the parent, or one of its workers) at random moments and check the archive.

Shared by tests/reliability and benchmarks/reliability.py. The run is ``podisco discover`` in a subprocess on
a small task; invariants after each kill and resume: every attempt, held-out run and β-transfer point that had
finished before the kill is kept unchanged (none lost, none redone), no (generation, slot) twice, one held-out
run per candidate, and the finished run has exactly as many attempts that are not duplicates as an unbroken one
(a duplicate's slot is proposed again, so how many duplicates there were depends on what was proposed when).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from podisco.discovery.archive import Archive

# the command lines of a candidate's process: a cold worker, or a warm slot (whose forked children keep it)
WORKER, FORK_SERVER = "podisco.discovery.child.worker", "podisco.discovery.child.forkserver"


def command(root: Path, run_id: str, task_args: list[str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "podisco.cli", "discover", *task_args, "--proposer", "evolve",
        "--generations", "2", "--population", "2", "--seeds", "0", "--reevaluate-seeds", "0,1",
        "--transfer-betas", "0.05,0.2",
        "--workers", "2", "--threads", "1", "--root", str(root), "--run", run_id, *extra,
    ]  # fmt: skip


def _snapshot(archive: Archive, run_id: str) -> dict[str, object]:
    """What is finished: attempts, held-out runs, and the β-transfer points stored in the run's verdict."""
    done: dict[str, object] = {
        f"attempt {a.id}": (a.status, a.finished, a.fitness) for a in archive.attempts(run_id) if a.status != "proposed"
    }
    done.update({f"held-out run {r['id']}": (r["created"], r["fitness"]) for r in archive.reevaluations(run_id)})
    transfer = ((archive.run(run_id) or {}).get("verdict") or {}).get("transfer") or {}
    for beta, point in (transfer.get("points") or {}).items():
        done[f"transfer at β={beta}"] = json.dumps(point, sort_keys=True)
    return done


def _not_duplicates(attempts) -> int:
    return sum(a.status != "duplicate" for a in attempts)


def _cmdline(pid: str) -> str:
    return (Path("/proc") / pid / "cmdline").read_bytes().decode(errors="replace")


def _workers(marker: str) -> list[int]:
    """The processes running one candidate each: a cold worker, or a child a warm slot forked (it keeps the fork
    server's command line; the slot itself, its parent, is not a candidate's process)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = _cmdline(proc.name)
            cwd = os.readlink(proc / "cwd")
            forked = FORK_SERVER in cmdline and FORK_SERVER in _cmdline(_parent(proc))
        except OSError:
            continue
        if (WORKER in cmdline or forked) and marker in cwd:
            pids.append(int(proc.name))
    return pids


def _parent(proc: Path) -> str:
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]


def kill_workers(root: Path, run_id: str, task_args: list[str], kills: int, rng: random.Random, expected: int) -> int:
    """Kill up to ``kills`` workers of one run at random moments; the run must finish on its own with every
    attempt final, the killed ones ``failed`` with the signal named. Returns how many workers were killed."""
    process = subprocess.Popen(
        command(root, run_id, task_args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    killed = 0
    while killed < kills and process.poll() is None:
        time.sleep(rng.uniform(0.5, 4.0))
        pids = _workers(str(root))
        if pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
            killed += 1
    _, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise AssertionError(f"the run did not survive its workers being killed:\n{err[-3000:]}")
    after = Archive(root / "archive.sqlite").attempts(run_id)
    counted = _not_duplicates(after)
    if counted != expected or any(a.status == "proposed" for a in after):
        raise AssertionError(f"{counted} attempts that are not duplicates (expected {expected}) or some unfinished")
    by_signal = [a for a in after if a.status == "failed" and "signal 9" in (a.error or "")]
    if len(by_signal) > killed:
        raise AssertionError("more attempts failed by signal than workers were killed")
    return killed


def kill_and_resume(
    root: Path, run_id: str, task_args: list[str], kills: int, rng: random.Random, expected: int
) -> list[dict]:
    """``kills`` times: start or resume the run and kill the discovery process after a random delay; then let
    it finish and check the invariants. Returns one record per kill."""
    records = []
    archive = Archive(root / "archive.sqlite")
    for k in range(kills + 1):
        extra = ("--resume",) if archive.run(run_id) else ()
        process = subprocess.Popen(
            command(root, run_id, task_args, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if k == kills:  # the last start runs to the end
            _, err = process.communicate(timeout=900)
            if process.returncode != 0:
                raise RuntimeError(f"the final resume failed:\n{err[-3000:]}")
            break
        delay = rng.uniform(2.0, 30.0)  # early kills land before anything finished, late ones mid-evaluation
        killed_what = "nothing (finished first)"
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_what = "the discovery process"
        else:
            process.communicate()
        before = _snapshot(archive, run_id)
        records.append({"kill": k + 1, "after_s": round(delay, 1), "killed": killed_what, "finished_before": before})
    after, final = archive.attempts(run_id), _snapshot(archive, run_id)
    problems = []
    for record in records:
        for what, state in record["finished_before"].items():
            if final.get(what) != state:
                problems.append(f"kill {record['kill']}: {what} lost or redone")
    heldout = [r["attempt_id"] for r in archive.reevaluations(run_id)]
    if len(heldout) != len(set(heldout)):
        problems.append("a candidate was run on the held-out seeds twice")
    if _not_duplicates(after) != expected:
        problems.append(f"{_not_duplicates(after)} attempts that are not duplicates, expected {expected}")
    if len({(a.generation, a.slot) for a in after}) != len(after):
        problems.append("a (generation, slot) appears twice")
    if any(a.status == "proposed" for a in after):
        problems.append("attempts left unfinished")
    if archive.run(run_id)["finished"] is None:
        problems.append("the run did not finish")
    for record in records:
        record["finished_before"] = len(record["finished_before"])
    if problems:
        raise AssertionError("; ".join(problems))
    return records
