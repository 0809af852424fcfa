"""Reliability and security, measured: writes docs/reliability.md with what was tried and what happened.

    .venv/bin/python benchmarks/reliability.py               # the full version (~15 min on 2 cores)
    .venv/bin/python benchmarks/reliability.py --kills 5     # fewer crash points

Runs (larger versions of tests/reliability): every hostile candidate at the real isolation level and at the
fallback level; kill -9 of the discovery process at random moments of a real run on the tiny IMDb task, and of
its workers; every LLM fault against a loopback server; bad data and configs through the CLI; training faults.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package holds the shared scenarios

from podisco.discovery.boundary.sandbox import detect_isolation
from tests.reliability.containment import contain
from tests.reliability.crashes import kill_and_resume, kill_workers
from tests.reliability.hostile import HEAD, HOSTILE, LOGITS
from tests.reliability.llm_faults import FAULTS, run_with_faults


def _first(text: str | None, limit: int) -> str:
    """The first line of a message, shortened, safe inside a Markdown table."""
    lines = (text or "").strip().splitlines()
    return (lines[0][:limit] if lines else "").replace("|", "/")


def hostile_section(tmp: Path) -> tuple[list[str], dict]:
    level = detect_isolation()
    rows, counts = [], {"tried": 0, "contained": 0, "lost": 0}
    for name, what, _ in HOSTILE:
        for isolation in [level] + (["process"] if level != "process" else []):
            result = contain(name, isolation, tmp / f"{name}-{isolation}")
            if result["outcome"] == "rejected" and isolation != level:
                continue  # the gate decides before any isolation level matters
            counts["tried"] += 1
            ok = result["outcome"] in ("rejected", "contained")
            counts["contained" if ok else "lost"] += 1
            detail = result["detail"].replace("|", "/")[:110]
            stage = "gate" if result["outcome"] == "rejected" else f"sandbox ({isolation})"
            rows.append(f"| {name} | {what} | {stage} | {result['outcome']} | {detail} |")
    return rows, counts


def crash_section(tmp: Path, kills: int, worker_kills: int) -> tuple[list[str], dict]:
    from podisco.tasks.imdb.prepare import prepare

    cache = tmp / "imdb"
    prepare("tiny", cache, log=lambda message: None)
    args = ["--task", "imdb", "--preset", "tiny", "--cache-dir", str(cache)]
    expected = 4 + 2 * 2
    rng = random.Random(2026)
    rows = []
    records = kill_and_resume(tmp / "parent", "crash", args, kills, rng, expected)
    for r in records:
        rows.append(f"| {r['kill']} | discovery process | {r['after_s']} s | {r['killed']} | {r['finished_before']} |")
    killed = kill_workers(tmp / "workers", "workers", args, worker_kills, rng, expected)
    rows.append(f"| - | {killed} workers, one run | random | the run finished; their attempts failed | - |")
    return rows, {"tried": len(records) + killed, "contained": len(records) + killed, "lost": 0}


def llm_section(tmp: Path) -> tuple[list[str], dict]:
    """The faults in the order the server plays them, then what the archive holds, attempt by attempt."""
    outcome = run_with_faults(tmp / "llm")
    rows = [f"| {fault} | {expected} | |" for fault, _, expected in FAULTS]
    for a in outcome["attempts"]:
        rows.append(f"| (generation {a.generation}) | {a.name} | {a.status}: {_first(a.error, 90)} |")
    ok = outcome["finished"] and len(outcome["attempts"]) == len(FAULTS)
    return rows, {"tried": len(FAULTS), "contained": len(FAULTS) if ok else 0, "lost": 0 if ok else len(FAULTS)}


def bad_input_section(tmp: Path) -> tuple[list[str], dict]:
    from podisco.models import build_tiny_gpt2
    from tests.training.tiny import make_tokenizer

    model = tmp / "model"
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(model)
    build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64).save_pretrained(model)
    good = {"prompt": "the movie", "chosen": " was great", "rejected": " was bad"}
    cases = [
        ("missing column", [{"prompt": "a", "chosen": " b"}] * 4, []),
        ("empty strings", [{"prompt": "", "chosen": "", "rejected": ""}] * 4, []),
        ("non-string field", [{**good, "chosen": 5}] * 4, []),
        ("over-long prompt", [{**good, "prompt": "a " * 500}] * 4, ["--data.max_length=32"]),
        ("one bad row among good ones", [good] * 7 + [{**good, "rejected": None}], ["--max_steps=1"]),
        ("unknown loss name", [good] * 4, ["--loss", "dpoo"]),
        ("negative beta", [good] * 4, ["--beta", "-0.1"]),
        ("model path that does not exist", [good] * 4, ["--model", str(tmp / "nope")]),
    ]
    rows, counts = [], {"tried": 0, "contained": 0, "lost": 0}
    for label, data, extra in cases:
        path = tmp / f"{label.replace(' ', '_')}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in data) + "\n")
        argv = ["train", "--model", str(model), "--data", str(path), "--output-dir", str(tmp / "out" / label), *extra]
        done = subprocess.run([sys.executable, "-m", "podisco.cli", *argv], capture_output=True, text=True, timeout=300)
        message = (done.stderr.strip().splitlines() or [""])[-1][:150].replace("|", "/")
        clear = done.returncode == 2 and message.startswith("podisco: error:")
        dropped = done.returncode == 0 and "dropped" in done.stdout
        counts["tried"] += 1
        counts["contained" if clear or dropped else "lost"] += 1
        verdict = "clear error" if clear else ("row dropped and reported" if dropped else f"exit {done.returncode}")
        shown = message if clear else (done.stdout.strip().splitlines() or [""])[0][:150].replace("|", "/")
        rows.append(f"| {label} | {verdict} | {shown} |")
    return rows, counts


def training_fault_section(tmp: Path) -> tuple[list[str], dict]:
    from podisco.discovery.boundary.job import Job
    from podisco.discovery.boundary.sandbox import Limits
    from podisco.discovery.executors import ExecutionSettings, execute
    from podisco.tasks.base import get_task, make_spec
    from podisco.tasks.imdb.prepare import prepare

    cache = tmp / "imdb"
    prepare("tiny", cache, log=lambda message: None)
    cases = [
        ("NaN once margins grow", ["return torch.sqrt(1 - (self.beta * logits).abs()) - F.logsigmoid(logits)"], 120),
        ("exploding gradient", ["return torch.exp(-50 * self.beta * logits) * 1e30"], 120),
        ("10x slower than the deadline", ["for i in range(20000):", "    logits = logits * 1.0", "return -logits"], 20),
    ]
    rows, counts = [], {"tried": 0, "contained": 0, "lost": 0}
    task = get_task("imdb", {"preset": "tiny", "cache_dir": str(cache), "steps": 20, "lr": 5e-3, "batch_size": 8})
    spec = make_spec(task, {"cache_dir": str(cache.resolve())})
    for i, (label, body, wall) in enumerate(cases):
        name = f"fault{i}"
        source = HEAD.format(name=name) + "".join(f"    {line}\n" for line in [LOGITS, *body])
        job = Job(task=spec, name=name, beta=0.1, seeds=(0,), code=source)
        result = execute(job, tmp / name, ExecutionSettings(isolation=detect_isolation(), limits=Limits(wall_s=wall)))
        reason = _first(result.get("error"), 130)
        ok = result["status"] in ("invalid", "failed") and bool(reason)
        counts["tried"] += 1
        counts["contained" if ok else "lost"] += 1
        rows.append(f"| {label} | {result['status']} | {reason} |")
    return rows, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--worker-kills", type=int, default=2)
    parser.add_argument("--out", default="docs/reliability.md")
    args = parser.parse_args()
    started = time.time()
    sections = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs = (
            ("Hostile candidates", ("candidate", "attack", "stopped by", "outcome", "detail"), hostile_section, ()),
            ("Crashes (kill -9)", ("#", "killed", "after", "what died", "finished at that moment"), crash_section,
             (args.kills, args.worker_kills)),
            ("LLM faults", ("fault", "expected", "archive says"), llm_section, ()),
            ("Bad data and configs", ("input", "outcome", "message"), bad_input_section, ()),
            ("Training faults", ("candidate", "status", "reason recorded"), training_fault_section, ()),
        )  # fmt: skip
        for i, (title, columns, section, extra) in enumerate(runs):
            print(f"== {title}", flush=True)
            rows, counts = section(tmp / str(i), *extra)
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
            sections.append((title, header, rows, counts))
    lines = [
        "# Reliability and security, measured",
        "",
        f"Written by `benchmarks/reliability.py` on {time.strftime('%Y-%m-%d')} in {time.time() - started:.0f} s "
        f"(isolation level here: {detect_isolation()}). Tried / contained / lost per section; 'lost' means an "
        "escape, a crash of the run, or a lost or repeated evaluation.",
        "",
        "| section | tried | contained | lost |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {c['tried']} | {c['contained']} | {c['lost']} |" for t, _, _, c in sections]
    for title, header, rows, _ in sections:
        lines += ["", f"## {title}", "", header, *rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 12 + len(sections)]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
