"""Seconds a warm worker slot saves per job (issue 17 item 4): the same candidate jobs, cold and warm, one run.

Cold: each job is a fresh sandboxed ``python -m podisco.discovery.child.worker`` (interpreter, torch import,
task load). Warm (``--warm-workers``): one sandboxed slot per worker starts once and forks a child per job
(discovery/child/forkserver.py). Every job here trains one seed of the IMDb task with a candidate's code at
the strongest isolation level, one worker, alternating cold and warm so that machine noise hits both. The saving
per job is the difference of the medians of each job's wall time, from submission to result (the first warm
job also starts its slot); start-up is that time less the worker's own training and evaluation time.

    .venv/bin/python benchmarks/warm_workers.py --preset tiny --jobs 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CODE = (
    "def hinge(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
    "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
    "    return torch.relu(1 - self.beta * logits)\n"
)


def main() -> None:
    from podisco.discovery.boundary.job import Job
    from podisco.discovery.boundary.sandbox import detect_isolation
    from podisco.discovery.executors import ExecutionSettings, LocalExecutor
    from podisco.tasks.base import get_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--jobs", type=int, default=4, help="jobs per mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = get_task("imdb", {"preset": args.preset})
        spec = task.prepare(root, log=lambda *_: None)
        isolation = detect_isolation()
        readonly = tuple(task.readonly_paths(spec))
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        pools = {
            "cold": LocalExecutor(1, ExecutionSettings(isolation=isolation, readonly_paths=readonly, env=env)),
            "warm": LocalExecutor(
                1,
                ExecutionSettings(
                    isolation=isolation,
                    readonly_paths=readonly,
                    env=env,
                    warm_workers=True,
                    slots_folder=str(root / "slots"),
                ),
            ),
        }
        walls: dict[str, list[float]] = {"cold": [], "warm": []}
        startups: dict[str, list[float]] = {"cold": [], "warm": []}
        try:
            for i in range(args.jobs):
                for mode, pool in pools.items():
                    job = Job(task=spec, name="hinge", beta=0.05, seeds=(0,), code=CODE, wall_s=900)
                    start = time.perf_counter()
                    result = pool.submit(job, root / f"{mode}-{i}").result()
                    wall = time.perf_counter() - start  # the first warm job also pays for starting its slot
                    if result.get("status") != "evaluated":
                        raise SystemExit(f"{mode} job {i} did not finish: {result.get('error')}")
                    walls[mode].append(wall)
                    startups[mode].append(wall - result["timings"]["train_eval_s"])
                    print(f"{mode} job {i}: {wall:.1f} s, start-up and checks {startups[mode][-1]:.1f} s")
        finally:
            for pool in pools.values():
                pool.shutdown()
        print(f"\nIMDb preset {args.preset}, {args.jobs} one-seed jobs per mode, isolation {isolation}, 1 thread")
        print("| mode | median wall s | median start-up s | min wall s | max wall s |")
        print("|---|---|---|---|---|")
        for mode in walls:
            w, s = walls[mode], startups[mode]
            print(f"| {mode} | {statistics.median(w):.1f} | {statistics.median(s):.1f} | {min(w):.1f} | {max(w):.1f} |")
        print(f"warm slot starts: {pools['warm'].slots[0].starts}")
        saved = statistics.median(walls["cold"]) - statistics.median(walls["warm"])
        print(f"\nsaved per job: {saved:.1f} s ({saved / statistics.median(walls['cold']):.0%} of a cold job)")


if __name__ == "__main__":
    main()
