"""Held-out confirmation: is a search's best candidate better than tuned DPO, beyond noise and selection?

The top k of a search are re-run on held-out seeds (disjoint from every search seed) and paired, seed by
seed, with tuned DPO on the same seeds. For each: the mean paired difference, its SE and 95% CI, and the
one-sided p-value of "better than the baseline" (t-test over the seeds). The k p-values are Holm-corrected,
since k candidates were put to the test; a candidate is called **better** only when its corrected p-value is
at most alpha (5%). Anything else is "not distinguishable" from the baseline.

``verdict_lines`` turns a run's stored verdict (baseline, confirmations, the β transfer of transfer.py) into
the lines every view shows first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from podisco.stats import Estimate, estimate, format_estimate, holm, one_sided_p

ALPHA = 0.05


@dataclass(frozen=True)
class Confirmation:
    attempt_id: int
    name: str
    seeds: tuple[int, ...]
    mean: float
    se: float | None
    ci95: tuple[float, float] | None
    p: float  # one-sided, uncorrected
    p_holm: float  # Holm-corrected over the k candidates confirmed together
    better: bool

    def verdict(self, baseline: str = "tuned DPO") -> str:
        fitness = format_estimate(Estimate(self.mean, self.se, len(self.seeds)))
        if self.better:
            return (
                f"{self.name}: better than {baseline} on {len(self.seeds)} held-out seeds: {fitness}, "
                f"one-sided p = {self.p:.3g}, Holm-corrected {self.p_holm:.3g} <= {ALPHA:g}"
            )
        return (
            f"{self.name}: not distinguishable from {baseline} on {len(self.seeds)} held-out seeds: {fitness}, "
            f"one-sided p = {self.p:.3g}, Holm-corrected {self.p_holm:.3g} > {ALPHA:g}"
        )

    def to_json(self) -> dict:
        return asdict(self)


def confirm(
    candidates: Sequence[tuple[int, str, Sequence[int], Sequence[float]]], alpha: float = ALPHA
) -> list[Confirmation]:
    """``candidates``: (attempt id, name, held-out seeds, per-seed paired differences against the baseline).
    Returns one Confirmation each, best held-out mean first."""
    estimates = [estimate(list(diffs)) for _, _, _, diffs in candidates]
    p_values = [one_sided_p(e) for e in estimates]
    adjusted = holm(p_values)
    out = [
        Confirmation(aid, name, tuple(seeds), e.mean, e.se, e.ci95, p, q, q <= alpha and e.mean > 0)
        for (aid, name, seeds, _), e, p, q in zip(candidates, estimates, p_values, adjusted, strict=True)
    ]
    return sorted(out, key=lambda c: -c.mean)


def headline(confirmations: Sequence[Confirmation], baseline: str = "tuned DPO") -> str:
    """The run's one-line verdict: what the held-out test says about the search as a whole."""
    better = [c for c in confirmations if c.better]
    if better:
        return f"better than {baseline}: " + ", ".join(c.name for c in better) + " (held-out, Holm-corrected)"
    if not confirmations:
        return "no candidate was confirmed on held-out seeds"
    return (
        f"no candidate is distinguishable from {baseline} on held-out seeds "
        f"({len(confirmations)} tested, Holm-corrected at {ALPHA:g})"
    )


def verdict_lines(verdict: dict | None) -> list[str]:
    """A run's stored verdict (Archive.run(...)["verdict"]) as the lines every view shows first: the baseline,
    the headline, one line per confirmed candidate. Empty for a run without one (older runs, unpaired tasks)."""
    verdict = verdict or {}
    lines = []
    baseline = verdict.get("baseline")
    if baseline:
        lines.append(f"baseline: {baseline['description']}")
    if verdict.get("headline"):
        name = "tuned DPO" if baseline and len(baseline.get("grid", [])) > 1 else "DPO"
        lines.append(f"verdict: {verdict['headline']}")
        for c in verdict.get("confirmations", []):
            item = Confirmation(**{**c, "seeds": tuple(c["seeds"]), "ci95": c["ci95"] and tuple(c["ci95"])})
            lines.append("  " + item.verdict(name))
    return lines + transfer_lines(verdict)


def transfer_lines(verdict: dict | None) -> list[str]:
    """The stored transfer as text lines (``runs show``, the report): one per β, candidate minus DPO."""
    transfer = (verdict or {}).get("transfer")
    if not transfer or not transfer.get("points"):
        return []
    lines = [f"β transfer of {transfer['name']} (held-out seeds {','.join(map(str, transfer['seeds']))}):"]
    for key in sorted(transfer["points"], key=float):
        point = transfer["points"][key]
        if "error" in point:
            lines.append(f"  β={key}: failed: {point['error']}")
            continue
        summary = ", ".join(f"{name} {value:.4f}" for name, value in point["candidate"].items())
        reference = ", ".join(f"{name} {value:.4f}" for name, value in point["reference"].items())
        se = f" ± {point['se']:.4f}" if point.get("se") is not None else ""
        lines.append(
            f"  β={key}: {summary} vs {transfer['reference']} {reference}: difference {point['difference']:+.4f}{se}"
        )
    return lines


def frontier_summary(verdict: dict | None) -> dict[str, dict]:
    """The transfer as ``sweep_summary.summarise_frontier`` shapes it ({loss: {points: {β: (reward, KL)}}}), for
    the reward-vs-KL figure; empty when the task's summaries have no reward and KL."""
    from podisco.tasks.sweep_summary import frontier_score

    transfer = (verdict or {}).get("transfer") or {}
    curves: dict[str, dict[float, tuple[float, float]]] = {}
    for point in (transfer.get("points") or {}).values():
        for who, label in (("candidate", transfer["name"]), ("reference", transfer["reference"])):
            summary = point.get(who) or {}
            if "reward" in summary and "kl" in summary:
                curves.setdefault(label, {})[point["beta"]] = (summary["reward"], summary["kl"])
    return {label: {"points": pts, "frontier": frontier_score(list(pts.values()))} for label, pts in curves.items()}
