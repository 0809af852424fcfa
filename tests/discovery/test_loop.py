"""Whole discovery runs: the llm proposer against a loopback fake server, evolve, kill-and-resume, Ray."""

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from podisco.discovery.archive import Archive, proposer_cost
from podisco.discovery.boundary.job import Job
from podisco.discovery.boundary.sandbox import Limits, detect_isolation, run_sandboxed
from podisco.discovery.executors import ExecutionSettings, execute
from podisco.discovery.loop import run_discovery
from podisco.discovery.proposers.llm import LLMProposer
from podisco.llm_client import ChatClient, LLMSettings
from podisco.tasks.seeds import CLASSIFICATION_SEEDS
from tests.discovery.configs import job_spec, make_config
from tests.discovery.fake_llm_server import FakeLLMServer, reply, sleep, status

pytestmark = pytest.mark.slow

METHOD = (
    "def {name}(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
    "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
    "    return {body}\n"
)


def proposal(name: str, body: str, thought: str = "a test proposal") -> str:
    return json.dumps({"thought": thought, "name": name, "code": METHOD.format(name=name, body=body)})


# A hostile loss body: it writes a file outside its work folder (the canary) through os.system.
SNEAKY = "__import__('os').system('touch {canary}') * logits"


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from podisco.tasks.imdb.prepare import prepare

    directory = tmp_path_factory.mktemp("imdb")
    prepare("tiny", directory, log=lambda message: None)
    return str(directory)


def test_llm_run_through_faults_hostile_code_and_duplicates(tiny_cache, tmp_path):
    canary = tmp_path / "pwned"  # beside the archive, outside every job's work folder
    script = [
        status(429, headers={"Retry-After": "0"}),
        reply("```json\n" + proposal("sharp_logistic", "-F.logsigmoid(3 * self.beta * logits)") + "\n```"),
        status(500),
        reply('Here is my idea: {"thought": "x", "name": "broken", "code": "def broken(self'),
        sleep(3.0, then=reply(proposal("late", "torch.relu(-logits)"))),  # past the client's timeout
        reply(proposal("sneaky", SNEAKY.format(canary=canary))),
        reply(proposal("dpo_again", "F.softplus(-self.beta * logits)")),
        reply(proposal("steep_dpo", "-F.logsigmoid(2 * self.beta * logits)")),  # DPO at 2β: on the grid
    ]
    config = make_config(
        preset="tiny",
        cache_dir=tiny_cache,
        generations=3,
        population=2,
        steady_state=False,  # the paper's protocol: which reply lands in which generation does not depend on timing
        workers=2,
        threads=1,
        seeds=(0,),
        reevaluate_top=1,
        reevaluate_seeds=(0, 1),
        transfer_betas=(0.05, 0.5),
        wall_s=300,
        allow_weak_isolation=True,
    )
    lines: list[str] = []
    with FakeLLMServer(script, default=lambda request: reply(proposal("spare", "torch.exp(-logits)"))) as server:
        client = ChatClient(LLMSettings(base_url=server.base_url, model="fake", timeout_s=1.0, backoff_s=0.01))
        run_id = run_discovery(config, tmp_path, log=lines.append, proposer=LLMProposer(client))
        requests = server.requests
    archive = Archive(tmp_path / "archive.sqlite")
    attempts = {(a.generation, a.slot): a for a in archive.attempts(run_id)}
    assert len(attempts) == 4 + 2 + 4 + 2 and all(a.status != "proposed" for a in attempts.values())
    # a duplicate does not use up its slot: generation 2 proposed again until 2 of its proposals were not
    # duplicates (dpo_again, then steep_dpo, were; the spare after them was not)
    assert [attempts[(2, s)].status for s in range(4)] == ["invalid", "duplicate", "duplicate", "invalid"]
    assert [attempts[(0, s)].status for s in range(4)] == ["evaluated"] * 4
    # tuned DPO: the reference trained at β x (0.5, 1, 2, 4, 10, 20); the DPO seed (at the run's β) scores minus what
    # tuning bought, and exactly 0 when the run's β won
    verdict = archive.run(run_id)["verdict"]
    baseline = verdict["baseline"]
    assert baseline["grid"] == [0.025, 0.05, 0.1, 0.2, 0.5, 1.0] and baseline["beta"] in baseline["grid"]
    assert attempts[(0, 0)].fitness == pytest.approx(-baseline["gains"][str(baseline["beta"])], abs=1e-12)
    assert len(list((tmp_path / "references").glob("*-seed0.json"))) == 6  # one DPO run per β of the grid
    # DPO at 3β: no grid β to stand in for it, so it is trained, and labelled for what it is
    assert attempts[(1, 0)].name == "sharp_logistic" and attempts[(1, 0)].status == "evaluated"
    assert attempts[(1, 0)].rescaling == "≈ sigmoid at β×3"
    assert attempts[(1, 0)].shape["nearest_known"] and attempts[(1, 0)].metrics["dynamics"]["kl"] >= 0
    # DPO at 2β = 0.1, a β the baseline trained: a duplicate that scores DPO-at-0.1 minus tuned DPO
    steep = attempts[(2, 2)]
    assert (steep.name, steep.status, steep.rescaling) == ("steep_dpo", "duplicate", "≈ sigmoid at β×2")
    gains = baseline["gains"]
    assert steep.fitness == pytest.approx(gains["0.1"] - gains[str(baseline["beta"])], abs=1e-12)
    assert attempts[(1, 1)].status == "invalid" and "incomplete" in attempts[(1, 1)].error
    assert attempts[(2, 0)].status == "invalid" and "static gate" in attempts[(2, 0)].error
    assert attempts[(2, 1)].status == "duplicate" and "dpo" in attempts[(2, 1)].duplicate_of
    assert attempts[(2, 1)].fitness == attempts[(0, 0)].fitness
    assert not canary.exists()  # the gate refused it before any worker ran; the sandbox's part: the next test
    # The paper's protocol: one conversation, feedback on each outcome, JSON mode requested.
    messages = archive.messages(run_id)
    assert [m["role"] for m in messages[:3]] == ["system", "user", "assistant"]
    feedback = "\n".join(m["content"] for m in messages if m["role"] == "user")
    assert "could not be used" in feedback and "fitness" in feedback
    assert all(r.json["response_format"]["type"] == "json_schema" for r in requests)  # structured output
    # deadlines sized from the timed reference runs, below the 300 s cap, recorded per attempt
    assert all(0 < a.deadline_s < 300 for a in attempts.values() if a.status == "evaluated")
    assert any(line.startswith("job deadlines: 4 x (") for line in lines)
    call = attempts[(1, 0)].llm_tokens  # every reply's cost is kept: tokens, requests, time, format
    assert call["mode"] == "json_schema" and call["latency_s"] >= 0 and call["requests"] >= 2
    assert "replies" in proposer_cost(list(attempts.values()))
    (heldout,) = archive.reevaluations(run_id)  # the top 1, on the held-out seed 1 (0 was searched)
    assert heldout["seeds"] == [1] and heldout["metrics"]["heldout"]
    assert verdict["confirmations"][0]["name"] == heldout["name"] and "headline" in verdict
    assert lines.index(f"baseline: {baseline['description']}") < lines.index(f"verdict: {verdict['headline']}")
    assert any(line.startswith("best in the search:") for line in lines)
    system = archive.messages(run_id)[0]["content"]
    assert baseline["description"] in system  # the proposer is told what fitness 0 means
    # the β transfer of the confirmed (else held-out best) candidate, against DPO at each β on the held-out seed
    transfer = verdict["transfer"]
    assert (transfer["name"], transfer["seeds"], sorted(transfer["points"])) == (heldout["name"], [1], ["0.05", "0.5"])
    assert all({"reward", "kl"} <= set(p["candidate"]) for p in transfer["points"].values())
    held_out_betas = {0.05, 0.5, baseline["beta"]}  # held-out DPO at the transfer βs and at tuned DPO's
    assert len(list((tmp_path / "references").glob("*-seed1.json"))) == len(held_out_betas)
    assert any(line.startswith("β transfer of ") for line in lines)


def test_frontier_fitness_scores_each_loss_at_its_best_grid_beta(tiny_cache, tmp_path):
    config = make_config(
        preset="tiny",
        cache_dir=tiny_cache,
        proposer="evolve",
        generations=0,
        fitness="frontier",
        seeds=(0,),
        reevaluate_top=0,
        workers=2,
        threads=1,
        allow_weak_isolation=True,
    )
    run_id = run_discovery(config, tmp_path, log=lambda message: None)
    archive = Archive(tmp_path / "archive.sqlite")
    baseline = archive.run(run_id)["verdict"]["baseline"]
    seeds = {a.name: a for a in archive.attempts(run_id)}
    for a in seeds.values():  # every seed loss ran at each β of DPO's grid and is scored at its own best
        assert sorted(a.metrics["grid"], key=float) == [f"{b:g}" for b in baseline["grid"]]
        assert a.fitness == pytest.approx(a.metrics["grid"][f"{a.metrics['best_beta']:g}"]["mean"])
    # DPO at its own best grid β is tuned DPO itself: exactly 0, at tuned DPO's β
    assert seeds["dpo"].fitness == pytest.approx(0.0, abs=1e-12)
    assert seeds["dpo"].metrics["best_beta"] == baseline["beta"]


def test_hostile_code_past_the_gate_cannot_write_outside_its_work_folder(tmp_path):
    """The layer behind the gate: the sneaky candidate, ungated, run as a worker would run it. Its target is in
    a folder the job can see, mounted read-only as a task's prepared data are, so hiding /tmp is not what
    saves it. With no isolation it creates the canary (a real target); in the sandbox it must not."""
    if detect_isolation() != "bwrap":
        pytest.skip("needs bwrap: the weaker levels do not protect files outside the work folder")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    canary = prepared / "pwned"
    program = (
        "import torch\nimport torch.nn.functional as F\n"
        + METHOD.format(name="sneaky", body=SNEAKY.format(canary=canary))
        + "class Trainer:\n    beta = 0.1\n"
        + "print('loss', sneaky(Trainer(), *torch.zeros(4, 3)).tolist())\n"
    )
    argv = [sys.executable, "-c", program]
    unprotected = run_sandboxed(argv, tmp_path / "plain", Limits(wall_s=60), "process", [prepared])
    assert unprotected.returncode == 0 and canary.exists(), unprotected.stderr_tail
    canary.unlink()
    result = run_sandboxed(argv, tmp_path / "work", Limits(wall_s=60), "bwrap", [prepared])
    assert result.returncode == 0 and "loss [" in result.stdout_tail, result.stderr_tail  # the code did run
    assert "Read-only file system" in result.stderr_tail and not canary.exists()


def _digits_command(root, run_id, *extra):
    return [
        sys.executable, "-m", "podisco.cli", "discover", "--task", "digits", "--proposer", "evolve",
        "--generations", "2", "--population", "2", "--seeds", "0", "--reevaluate-seeds", "0",
        "--workers", "2", "--threads", "1", "--root", str(root), "--run", run_id, *extra,
    ]  # fmt: skip


def test_evolve_on_digits_finds_something_as_fit_as_its_seeds(tmp_path):
    done = subprocess.run(_digits_command(tmp_path, "evo"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Archive(tmp_path / "archive.sqlite")
    attempts = archive.attempts("evo")
    seeds = [a.fitness for a in attempts if a.generation == 0]
    evolved = [a for a in attempts if a.generation > 0]
    assert all("static gate" not in (a.error or "") for a in evolved)
    # the steady state: generation 2 was proposed while generation 1 still had a job running
    first, second = ([a for a in evolved if a.generation == g] for g in (1, 2))
    assert min(a.created for a in second) < max(a.finished for a in first)
    # duplicates' slots are proposed again (at most 3 more per slot): 4 proposals that are not duplicates
    assert sum(a.status != "duplicate" for a in evolved) == 4 and len(evolved) <= 16
    assert max(a.fitness or 0 for a in evolved) >= max(seeds) - 0.02
    assert "archive:" in done.stdout


SQUARED_ERROR_REWRITES = [
    "def brier(logits, targets):\n    p = torch.softmax(logits, dim=1)\n"
    "    return ((p - F.one_hot(targets, p.shape[1]).float()) ** 2).sum(dim=1) * 3 + 1\n",
    "def brier_expanded(logits, targets):\n    p = torch.exp(logits - torch.logsumexp(logits, 1, keepdim=True))\n"
    "    return (p * p).sum(1) - 2 * p.gather(1, targets.unsqueeze(1)).squeeze(1)\n",
    "def focal(logits, targets):\n    ce = F.cross_entropy(logits, targets, reduction='none')\n"
    "    return (1 - torch.exp(-ce)) ** 2 * ce\n",
]


def test_rewrites_of_a_classification_loss_are_not_trained_again(tmp_path):
    """Behavioural dedup on digits: two rewrites of the squared-error seed stop before training, with its
    fitness; a loss that behaves differently (focal) is trained."""
    replay = tmp_path / "replies.jsonl"
    replay.write_text(
        "".join(json.dumps({"name": f"r{i}", "code": c}) + "\n" for i, c in enumerate(SQUARED_ERROR_REWRITES))
    )
    command = _digits_command(tmp_path, "dedup", "--replay", str(replay), "--no-transfer", "--reevaluate-seeds", "1")
    command[command.index("evolve")] = "replay"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = {a.name: a for a in Archive(tmp_path / "archive.sqlite").attempts("dedup")}
    seed = attempts["squared_error"]
    for rewrite in ("r0", "r1"):
        assert attempts[rewrite].status == "duplicate", attempts[rewrite].error
        assert attempts[rewrite].duplicate_of == f"attempt:{seed.id} squared_error"
        assert attempts[rewrite].fitness == seed.fitness
    assert attempts["r2"].status == "evaluated"


def test_stage0_stops_a_hopeless_candidate_before_any_full_run(tmp_path):
    """--stage0: the seeds record a short first look; a loss that trains towards the wrong class scores far
    below the incumbent there and stops with no full-length run (no fitness, the reason kept); a good one goes on."""
    replay = tmp_path / "replies.jsonl"
    codes = {
        "backwards": "def backwards(logits, targets):\n"
        "    return F.cross_entropy(-logits, targets, reduction='none')\n",
        "smoothed": "def smoothed(logits, targets):\n"
        "    return F.cross_entropy(logits, targets, reduction='none', label_smoothing=0.05)\n",
    }
    replay.write_text("".join(json.dumps({"name": n, "code": c}) + "\n" for n, c in codes.items()))
    command = _digits_command(tmp_path, "s0", "--replay", str(replay), "--no-transfer", "--stage0")
    command[command.index("evolve")] = "replay"
    command[command.index("--seeds") + 1], command[command.index("--reevaluate-seeds") + 1] = "0,1", "2"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage 0: seed 0 at 0.25 of the steps first" in done.stdout
    attempts = {a.name: a for a in Archive(tmp_path / "archive.sqlite").attempts("s0")}
    assert all(attempts[n].metrics["stage0"]["seed"] == 0 for n in ("cross_entropy", "squared_error"))
    stopped = attempts["backwards"]
    assert stopped.status == "evaluated" and stopped.fitness is None and stopped.seeds == []
    assert stopped.metrics["stage0"]["decision"] == "stop" and "stopped at stage 0" in stopped.error
    kept = attempts["smoothed"]
    assert kept.metrics["stage0"]["decision"] == "continue" and kept.fitness is not None and kept.seeds


@pytest.mark.parametrize("isolation", sorted({"process", detect_isolation()}))
def test_a_candidate_that_never_returns_is_killed_and_reported(tmp_path, isolation):
    code = "def spin(logits, targets):\n    for i in range(10 ** 15):\n        pass\n"
    # the job's own deadline (sized from the reference runs) wins over the executor's cap
    job = Job(task=job_spec("digits"), name="spin", beta=0.05, seeds=(0,), code=code, wall_s=4)
    started = time.monotonic()
    result = execute(job, tmp_path / "w", ExecutionSettings(isolation=isolation, limits=Limits(wall_s=60)))
    assert result["status"] == "failed" and "ran past its deadline of 4 s" in result["error"]
    assert result["sandbox"]["deadline_s"] == 4 and time.monotonic() - started < 30


def test_ray_executor_runs_a_job_on_a_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    from podisco.discovery.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        executor = RayExecutor("", ExecutionSettings(isolation=detect_isolation()))
        code = CLASSIFICATION_SEEDS["cross_entropy"]
        job = Job(task=job_spec("digits", epochs=4), name="ce", beta=0.05, seeds=(0,), code=code)
        result = executor.submit(job, tmp_path / "job").result(timeout=300)
        assert result["status"] == "evaluated" and result["per_seed"][0]["accuracy"] > 0.8
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    ("incumbent", "seeds_run", "decision"),
    [(0.999, [0], "stop"), (0.0, [0, 1, 2], "promote")],  # digits accuracy is about 0.95 per seed
)
def test_the_worker_races_a_candidate_seed_by_seed(tmp_path, incumbent, seeds_run, decision):
    from podisco.discovery.boundary.racing import Race

    race = Race(incumbent_mean=incumbent, incumbent_se=0.001, prior_sd=0.005).to_json()
    code = CLASSIFICATION_SEEDS["cross_entropy"]
    job = Job(task=job_spec("digits", epochs=2), name="ce", beta=0.05, seeds=(0, 1, 2), code=code, race=race)
    result = execute(job, tmp_path / "w", ExecutionSettings(isolation="process"))
    assert result["status"] == "evaluated" and [r["seed"] for r in result["per_seed"]] == seeds_run
    assert result["race"]["decision"] == decision and result["race"]["seeds"] == 1
    assert result["promoted"] is (decision == "promote")


def test_a_near_duplicate_of_a_contender_is_trained_not_given_its_score(tmp_path):
    """DPO at β×2.5 is 0.029 from DPO at β×3, within the duplicate distance: a duplicate of it, unless β×3 may
    end in the top k (a contender); then its own score could reorder the top, so it is trained. A rewrite
    (distance 0) of a contender is still a duplicate."""
    settings = ExecutionSettings(isolation="process")

    def job(name: str, body: str, **fields) -> Job:
        code = METHOD.format(name=name, body=body)
        return Job(task=job_spec("imdb", preset="tiny"), name=name, beta=0.05, seeds=(), code=code, **fields)

    x3 = execute(job("x3", "-F.logsigmoid(3 * self.beta * logits)"), tmp_path / "x3", settings)
    known = {"attempt:7 x3": x3["fingerprint"]}
    near = job("x2_5", "-F.logsigmoid(2.5 * self.beta * logits)", dedup=True, known=known)
    result = execute(near, tmp_path / "a", settings)
    assert result["status"] == "duplicate" and result["duplicate_of"] == "attempt:7 x3"
    assert 0.01 < result["distance"] < 0.05
    contended = execute(replace(near, contenders=("attempt:7 x3",)), tmp_path / "b", settings)
    assert contended["status"] != "duplicate" and "attempt:7 x3" in contended["flags"]["near_contender"]
    rewrite = replace(near, code=METHOD.format(name="x3b", body="F.softplus(-3 * self.beta * logits)"))
    assert execute(replace(rewrite, contenders=("attempt:7 x3",)), tmp_path / "c", settings)["status"] == "duplicate"
