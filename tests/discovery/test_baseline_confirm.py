"""Tuned DPO as the baseline, and the held-out verdict with Holm's correction, on worked numbers."""

import pytest

from podisco.discovery.baseline import tune
from podisco.discovery.confirm import confirm, headline
from podisco.tasks.base import get_task


def _row(seed, reward, kl):
    return {"seed": seed, "reward": reward, "kl": kl}


def test_tuned_dpo_is_the_grid_beta_with_the_best_mean_score():
    # score = reward - 0.1 KL; per seed 0/1: beta 0.05 -> 0.40/0.42, beta 0.1 -> 0.41/0.44, beta 0.2 -> 0.43/0.38
    rows = {
        0.05: {"0": _row(0, 0.42, 0.2), "1": _row(1, 0.44, 0.2)},
        0.1: {"0": _row(0, 0.42, 0.1), "1": _row(1, 0.45, 0.1)},
        0.2: {"0": _row(0, 0.435, 0.05), "1": _row(1, 0.385, 0.05)},
    }
    baseline = tune(get_task("imdb"), rows, 0.05, (0, 1))
    assert baseline.beta == 0.1 and baseline.tuned
    assert baseline.gains[0.05] == 0.0
    assert baseline.gain == pytest.approx(((0.41 - 0.40) + (0.44 - 0.42)) / 2)
    assert baseline.gains[0.2] == pytest.approx(((0.43 - 0.40) + (0.38 - 0.42)) / 2)
    assert "best β=0.1 of {0.05, 0.1, 0.2} (+0.0150 over β=0.05 on seeds 0,1)" in baseline.describe()
    assert not baseline.at_edge
    edge = tune(get_task("imdb"), {**rows, 0.2: {"0": _row(0, 0.5, 0.05), "1": _row(1, 0.5, 0.05)}}, 0.05, (0, 1))
    assert edge.beta == 0.2 and edge.at_edge and "at the grid's edge" in edge.describe()


def test_a_grid_of_one_beta_is_the_untuned_baseline():
    rows = {0.05: {"0": _row(0, 0.4, 0.2)}}
    baseline = tune(get_task("imdb"), rows, 0.05, (0,))
    assert (baseline.beta, baseline.tuned, baseline.gain) == (0.05, False, 0.0)
    assert baseline.describe() == "DPO at β=0.05 (untuned: no β grid)"


def test_ties_go_to_the_task_beta():
    rows = {b: {"0": _row(0, 0.4, 0.2)} for b in (0.025, 0.05, 0.1)}
    assert tune(get_task("imdb"), rows, 0.05, (0,)).beta == 0.05


def test_holm_decides_the_verdict():
    seeds = tuple(range(10))
    strong = [0.012, 0.009, 0.011, 0.010, 0.013, 0.008, 0.010, 0.012, 0.009, 0.011]  # t ~ 20: p ~ 1e-9
    weak = [0.004, -0.002, 0.006, 0.001, -0.002, 0.005, 0.000, 0.003, -0.001, 0.004]  # t = 1.91: p = 0.044
    null = [0.001, -0.002, 0.000, 0.002, -0.001, -0.003, 0.001, 0.000, 0.002, -0.002]
    results = confirm([(1, "strong", seeds, strong), (2, "weak", seeds, weak), (3, "null", seeds, null)])
    by_name = {c.name: c for c in results}
    assert [c.name for c in results] == ["strong", "weak", "null"]  # best held-out mean first
    assert by_name["strong"].better and by_name["strong"].p_holm == pytest.approx(3 * by_name["strong"].p)
    # weak alone would pass at 5% (p < 0.05) but not after correcting for the three candidates tried
    assert by_name["weak"].p < 0.05 < by_name["weak"].p_holm and not by_name["weak"].better
    assert not by_name["null"].better
    assert by_name["weak"].verdict().startswith("weak: not distinguishable from tuned DPO on 10 held-out seeds")
    assert "better than tuned DPO on 10 held-out seeds" in by_name["strong"].verdict()
    assert headline(results) == "better than tuned DPO: strong (held-out, Holm-corrected)"
    assert headline([by_name["weak"], by_name["null"]]).startswith("no candidate is distinguishable")


def test_frontier_fitness_is_the_candidate_at_its_best_grid_beta_against_tuned_dpo():
    from podisco.discovery.frontier import grid_metrics

    tuned = {"0": _row(0, 0.42, 0.1), "1": _row(1, 0.45, 0.1)}  # scores 0.41 / 0.44
    rows = {
        0.05: [_row(0, 0.40, 0.2), _row(1, 0.43, 0.2)],  # -0.03 / -0.03
        0.1: [_row(0, 0.43, 0.1), _row(1, 0.44, 0.1)],  # +0.01 / -0.01: mean 0
        0.2: [_row(0, 0.425, 0.05), _row(1, 0.455, 0.05)],  # +0.01 / +0.01
    }
    beta, fitness, metrics = grid_metrics(get_task("imdb"), rows, {0.025: "NaN loss"}, 0.05, tuned)
    assert beta == 0.2 and metrics["best_beta"] == 0.2
    assert fitness.mean == pytest.approx(0.01) and fitness.se == pytest.approx(0.0, abs=1e-12)
    assert metrics["grid"]["0.05"]["mean"] == pytest.approx(-0.03)
    assert metrics["grid"]["0.2"]["reward"] == pytest.approx(0.44)
    assert metrics["grid"]["0.025"] == {"error": "NaN loss"}


def test_transfer_lines_and_frontier_from_a_stored_verdict():
    from podisco.discovery.confirm import frontier_summary, verdict_lines

    point = {"candidate": {"reward": 0.45, "kl": 0.3}, "reference": {"reward": 0.44, "kl": 0.2}}
    verdict = {
        "transfer": {
            "attempt_id": 7,
            "name": "gated",
            "reference": "DPO",
            "seeds": [100, 101],
            "points": {
                "0.5": {"beta": 0.5, **point, "difference": -0.001, "se": 0.002},
                "0.05": {"beta": 0.05, **point, "difference": 0.004, "se": None},
                "2.5": {"beta": 2.5, "reference": {"reward": 0.4, "kl": 0.05}, "error": "NaN loss"},
            },
        }
    }
    lines = verdict_lines(verdict)
    assert lines[0] == "β transfer of gated (held-out seeds 100,101):"
    assert lines[1] == "  β=0.05: reward 0.4500, kl 0.3000 vs DPO reward 0.4400, kl 0.2000: difference +0.0040"
    assert lines[2].endswith("difference -0.0010 ± 0.0020") and lines[3] == "  β=2.5: failed: NaN loss"
    summary = frontier_summary(verdict)
    assert summary["gated"]["points"] == {0.5: (0.45, 0.3), 0.05: (0.45, 0.3)}
    assert summary["DPO"]["points"][2.5] == (0.4, 0.05)
    assert summary["DPO"]["frontier"] == pytest.approx(0.44 - 0.1 * 0.2)


def test_per_seed_results_merge_in_seed_order_and_fail_as_one():
    from podisco.discovery.dispatch import merge_seed_results

    ok = [{"status": "evaluated", "per_seed": [_row(s, 0.4, 0.1)]} for s in (100, 101)]
    assert [r["seed"] for r in merge_seed_results(ok)["per_seed"]] == [100, 101]
    killed = {"status": "failed", "error": "the job ran past its deadline of 900 s and was killed"}
    assert merge_seed_results([ok[0], killed, ok[1]]) == killed


def test_a_jobs_deadline_is_a_multiple_of_the_reference_time_and_never_past_the_cap():
    from types import SimpleNamespace

    from podisco.discovery.config import DiscoveryConfig
    from podisco.discovery.dispatch import deadline, describe_deadline, job_seconds, typical_seconds

    state = SimpleNamespace(config=DiscoveryConfig(), wall_cap_s=900.0, reference_seconds=None)
    assert deadline(state, 3) == 900.0  # nothing timed yet: the cap
    measured = [job_seconds({"train_eval_s": 12.0, "sandbox": {"wall_s": 20.0}}, 1), None,
                job_seconds({"train_eval_s": 18.0, "sandbox": {"wall_s": 24.0}}, 1)]  # fmt: skip
    state.reference_seconds = typical_seconds(measured)
    assert state.reference_seconds == (15.0, 7.0)  # medians of (12, 18) and (8, 6)
    assert deadline(state, 1) == 4 * (15 + 7) and deadline(state, 3) == 4 * (45 + 7)
    assert deadline(state, 20) == 900.0  # capped
    assert "4 x (15 s per seed + 7 s start-up)" in describe_deadline(state)
    state.config.execution.deadline_multiple = 0  # switched off: every job gets the cap
    assert deadline(state, 1) == 900.0
    assert job_seconds({"train_eval_s": 5.0}, 1) is None and typical_seconds([None]) is None


def test_racing_stops_the_hopeless_promotes_the_clearly_better_and_keeps_racing_the_rest():
    from podisco.discovery.boundary.racing import Race, candidate_bounds, decide, prior_sd

    race = Race(incumbent_mean=0.010, incumbent_se=0.002, prior_sd=0.006)  # z = 1.645
    # one seed: the bounds come from the prior alone, ±1.645 x 0.006 = ±0.00987
    assert candidate_bounds([0.0], race) == pytest.approx((0.0, -0.00987, 0.00987))
    # the incumbent's lower bound is 0.010 - 1.645 x 0.002 = 0.00671
    assert decide([-0.004], race)[0] == "stop"  # upper 0.00587 < 0.00671
    assert decide([0.000], race)[0] == "continue"  # upper 0.00987: could still be the best
    assert decide([0.021], race)[0] == "promote"  # lower 0.01113 > 0.010
    # two seeds pool the prior (2 pseudo-seeds) with their own variance: s^2 = (2 x 0.006^2 + 1 x var) / 3
    values = [0.002, 0.006]
    pooled = (2 * 0.006**2 + 0.002**2 * 2) / 3
    assert candidate_bounds(values, race)[2] == pytest.approx(0.004 + 1.645 * (pooled / 2) ** 0.5)
    stop, why = decide(values, race)
    assert stop == "continue" and why["seeds"] == 2 and why["incumbent_lower"] == pytest.approx(0.00671)
    # the median, over the attempts with two or more seeds, of s² / (median(χ²_k) / k): 0.0002 / 0.45494 (k = 1)
    # and 0.0003 / 0.69315 (k = 2); the median of two is their mean
    assert prior_sd([[0.0, 0.02], [0.01], [0.0, 0.0, 0.03]]) == pytest.approx(
        ((0.0002 / 0.454936 + 0.0003 / 0.693147) / 2) ** 0.5, rel=1e-4
    )
    assert prior_sd([[0.1]]) is None


def test_racing_never_drops_the_true_best_in_a_simulated_stream():
    """1000 streams of 20 candidates on 3 seeds with per-seed noise 0.01; the true best is 0.005 above the rest's
    best. Racing against the incumbent (the best fully evaluated so far) must keep the true best to its last
    seed essentially always, and save seeds on the rest."""
    import random

    from podisco.discovery.boundary.racing import Race, decide, pooled_se

    rng = random.Random(0)
    dropped = seeds_run = 0
    streams, candidates, noise = 1000, 20, 0.01
    for _ in range(streams):
        truths = [rng.uniform(-0.05, 0.0) for _ in range(candidates)]
        best_index = rng.randrange(candidates)
        truths[best_index] = max(truths) + 0.005
        incumbent = None
        for index, truth in enumerate(truths):
            values: list[float] = []
            for _seed in range(3):
                values.append(truth + rng.gauss(0, noise))
                if incumbent is None or len(values) == 3:
                    continue
                decision, _ = decide(values, Race(incumbent[0], incumbent[1], noise))
                if decision == "stop":
                    break
                if decision == "promote":
                    values += [truth + rng.gauss(0, noise) for _ in range(3 - len(values))]
                    break
            seeds_run += len(values)
            if index == best_index and len(values) < 3:
                dropped += 1
            if len(values) == 3 and (incumbent is None or sum(values) / 3 > incumbent[0]):
                incumbent = (sum(values) / 3, pooled_se(values, noise))
    assert dropped / streams <= 0.02
    assert seeds_run < 0.8 * streams * candidates * 3  # racing saves seeds


def test_one_drifting_loss_does_not_widen_every_race():
    """A seed archive of six losses with per-seed noise 0.01 and one that drifts (0.06, as KTO on the default IMDb
    preset): the prior is the typical attempt's noise, not the pooled one, so hopeless candidates stop sooner;
    the true best (noise 0.01, 0.005 above the rest) is still kept to its last seed essentially always."""
    import math
    import random
    import statistics

    from podisco.discovery.boundary.racing import Race, decide, pooled_se, prior_sd

    def pooled(groups: list[list[float]]) -> float:  # the rule before: every attempt's variance pooled
        return math.sqrt(statistics.fmean(statistics.variance(g) for g in groups))

    rng = random.Random(1)
    streams, candidates = 500, 20
    dropped = {"median": 0, "pooled": 0}
    seeds_run = {"median": 0, "pooled": 0}
    for _ in range(streams):
        archive = [[rng.gauss(0, 0.01) for _ in range(3)] for _ in range(6)] + [[rng.gauss(0, 0.06) for _ in range(3)]]
        priors = {"median": prior_sd(archive), "pooled": pooled(archive)}
        truths = [rng.uniform(-0.05, 0.0) for _ in range(candidates)]
        best_index = rng.randrange(candidates)
        truths[best_index] = max(truths) + 0.005
        draws = [[truth + rng.gauss(0, 0.01) for _ in range(3)] for truth in truths]  # the same seeds for both rules
        for rule, noise in priors.items():
            incumbent = None
            for index, seeds in enumerate(draws):
                ran = 3
                if incumbent is not None:
                    for n in (1, 2):
                        decision, _ = decide(seeds[:n], Race(incumbent[0], incumbent[1], noise))
                        if decision == "stop":
                            ran = n
                        if decision != "continue":
                            break
                seeds_run[rule] += ran
                if index == best_index and ran < 3:
                    dropped[rule] += 1
                if ran == 3 and (incumbent is None or statistics.fmean(seeds) > incumbent[0]):
                    incumbent = (statistics.fmean(seeds), pooled_se(seeds, noise))
    assert dropped["median"] / streams <= 0.02
    assert seeds_run["median"] < 0.9 * seeds_run["pooled"]


def test_contenders_are_the_entries_within_the_promote_margin_of_the_kth_best():
    from types import SimpleNamespace

    from podisco.discovery.candidates import _contenders

    def attempt(id_: int, name: str, fitness: float | None, proposer: str = "evolve"):
        return SimpleNamespace(id=id_, name=name, fitness=fitness, proposer=proposer)

    evaluated = [
        attempt(1, "dpo", -0.012, "seed"),
        attempt(2, "kto", -0.040, "seed"),
        attempt(3, "a", 0.002),
        attempt(4, "b", 0.001),
        attempt(5, "c", -0.005),
        attempt(6, "d", -0.026),  # 0.021 below the 3rd best: out
        attempt(7, "stopped", None),
    ]
    search = SimpleNamespace(reevaluate_top=3, promote_margin=0.02)
    state = SimpleNamespace(
        run_id="r",
        config=SimpleNamespace(search=search),
        task=SimpleNamespace(kind="preference"),
    )
    # the 3rd best is -0.005, so the bar is -0.025; DPO, a seed, is named as the registry names it too
    expected = ("attempt:1 dpo", "registry:sigmoid", "attempt:3 a", "attempt:4 b", "attempt:5 c")
    assert _contenders(state, evaluated) == expected
    assert _contenders(state, []) == ()
