"""The IMDb task on the tiny preset, end to end: prepare (cached), train DPO, evaluate reward and KL."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
from transformers import AutoModelForCausalLM

from podisco.tasks.imdb.evaluate import ImdbTrainSettings, evaluate_policy, train_and_evaluate
from podisco.tasks.imdb.prepare import PRESETS, VERSION, prepare, preset_key


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return prepare("tiny", tmp_path_factory.mktemp("imdb"), log=lambda message: None)


@pytest.mark.slow
def test_prepare_builds_disjoint_prompts_and_bradley_terry_pairs(tiny):
    assert len(tiny.train_pairs) > 40 and len(tiny.test_prompts) == PRESETS["tiny"].test_prompts
    assert not {p["prompt"] for p in tiny.train_pairs} & set(tiny.test_prompts)
    assert {"gold_accuracy", "evaluation_accuracy", "agreement", "sft_held_out_perplexity"} <= set(tiny.facts)
    assert tiny.facts["gold_accuracy"] > 0.7 and tiny.facts["sft_held_out_perplexity"] < PRESETS["tiny"].vocab_size
    again = prepare("tiny", tiny.directory.parent, log=lambda message: pytest.fail(f"rebuilt: {message}"))
    assert again.train_pairs == tiny.train_pairs  # everything came from the cache


@pytest.mark.slow
def test_kl_is_zero_against_itself_and_positive_after_dpo(tiny, tmp_path):
    sft = AutoModelForCausalLM.from_pretrained(tiny.sft_dir)
    same = evaluate_policy(tiny, sft, AutoModelForCausalLM.from_pretrained(tiny.sft_dir), seeds=(0,))
    assert same["per_seed"][0]["kl"] == pytest.approx(0.0, abs=1e-7)
    settings = ImdbTrainSettings(loss="sigmoid", beta=0.1, steps=6, batch_size=8, lr=5e-3)
    result = train_and_evaluate(tiny, settings, tmp_path / "dpo", eval_seeds=(0, 1))
    assert result.kl > 1e-3 and 0.0 <= result.reward <= 1.0 and len(result.per_seed) == 2
    assert result.task == f"imdb-v{VERSION}-tiny"


def test_cache_key_changes_with_settings():
    tiny = PRESETS["tiny"]
    assert preset_key(tiny) != preset_key(dataclasses.replace(tiny, sft_steps=41))
    assert preset_key(tiny) == preset_key(dataclasses.replace(tiny))


@pytest.mark.slow
def test_paired_fitness_and_sweep_resume(tiny, tmp_path, monkeypatch):
    from podisco.tasks import sweep_summary
    from podisco.tasks.imdb import fitness as imdb_fitness

    base = ImdbTrainSettings(steps=3, batch_size=8, lr=5e-3)
    paired = imdb_fitness.paired_fitness(tiny, "hinge", 0.1, tmp_path / "runs", seeds=(0, 1), base=base)
    assert paired.reference == "sigmoid" and paired.seeds == (0, 1)
    assert len(list((tmp_path / "runs").glob("run-*.json"))) == 4  # 2 losses x 2 seeds
    # the same numbers from the stored runs: per-seed differences, their mean, standard error and mean +- 1.96 SE
    runs = {
        (loss, seed): imdb_fitness.run_cached(
            tiny, dataclasses.replace(base, loss=loss, beta=0.1, seed=seed), tmp_path / "runs", (seed,)
        )
        for loss in ("hinge", "sigmoid")
        for seed in (0, 1)
    }
    assert len(list((tmp_path / "runs").glob("run-*.json"))) == 4  # read back, not trained again
    # against DPO at another β (tuned DPO): the candidate's runs are read back, only the reference's are new
    runs_dir = tmp_path / "runs"
    tuned = imdb_fitness.paired_fitness(tiny, "hinge", 0.1, runs_dir, seeds=(0, 1), base=base, reference_beta=0.3)
    assert len(list(runs_dir.glob("run-*.json"))) == 6
    at_03 = [imdb_fitness.run_cached(tiny, dataclasses.replace(base, beta=0.3, seed=s), runs_dir, (s,)) for s in (0, 1)]
    assert (tuned.beta, tuned.reference_beta, tuned.candidate_reward) == (0.1, 0.3, paired.candidate_reward)
    assert tuned.reference_kl == pytest.approx((at_03[0].kl + at_03[1].kl) / 2) != paired.reference_kl
    lam = sweep_summary.DEFAULT_KL_PENALTY
    diffs = [runs["hinge", s].reward - runs["sigmoid", s].reward for s in (0, 1)]
    kl_diffs = [runs["hinge", s].kl - runs["sigmoid", s].kl for s in (0, 1)]
    penalised = [d - lam * k for d, k in zip(diffs, kl_diffs, strict=True)]
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(2)
    assert se == pytest.approx(abs(diffs[0] - diffs[1]) / 2)  # two seeds: the SE is half their spread
    assert paired.difference == pytest.approx(mean) and paired.stderr == pytest.approx(se)
    assert paired.ci95 == pytest.approx((mean - 1.96 * se, mean + 1.96 * se))
    assert paired.penalised_difference == pytest.approx(statistics.mean(penalised))
    assert paired.penalised_stderr == pytest.approx(statistics.stdev(penalised) / math.sqrt(2))
    assert paired.candidate_reward == pytest.approx((runs["hinge", 0].reward + runs["hinge", 1].reward) / 2)
    assert paired.reference_kl == pytest.approx((runs["sigmoid", 0].kl + runs["sigmoid", 1].kl) / 2)

    rows = imdb_fitness.sweep(tiny, ["sigmoid"], [0.1], (0, 1), tmp_path / "sweep", base, log=lambda m: None)
    assert [r["seed"] for r in rows] == [0, 1] and (tmp_path / "sweep" / "sweep.csv").exists()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(imdb_fitness, "train_and_evaluate", must_not_train)
    again = imdb_fitness.sweep(tiny, ["sigmoid"], [0.1], (0, 1), tmp_path / "sweep", base, log=lambda m: None)
    assert again == rows
    summary = sweep_summary.summarise_frontier(rows)
    assert summary["sigmoid"]["frontier"] == pytest.approx(
        max(r - sweep_summary.DEFAULT_KL_PENALTY * k for r, k in summary["sigmoid"]["points"].values())
    )

    from podisco.reporting.frontier_plot import plot_frontier

    assert plot_frontier(summary, tmp_path / "f.png").stat().st_size > 5_000


def test_frontier_score_prefers_reward_bought_cheaply_in_kl():
    from podisco.tasks.sweep_summary import frontier_score

    cheap = [(0.70, 0.05), (0.75, 0.40)]  # best: 0.70 - 0.05 = 0.65
    costly = [(0.80, 0.30), (0.85, 0.60)]  # best: 0.80 - 0.30 = 0.50
    assert frontier_score(cheap, lam=1.0) == pytest.approx(0.65)
    assert frontier_score(costly, lam=1.0) == pytest.approx(0.50)
