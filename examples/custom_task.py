"""A fitness task of your own, in one file: ``podisco discover --task examples/custom_task.py:ToyBanditTask``.

A tabular preference problem small enough to train in a second. Each of ``prompts`` prompts has ``responses``
possible answers with a hidden utility (the scorer); preference pairs are drawn from a Bradley-Terry model of
that utility (the data). The policy is a table of logits started at a reference table, trained with the loss
under podisco's loss contract. Fitness of a seed: expected utility minus 0.1 x KL(reference || policy), paired
against DPO trained with the same seed. The class defines what ``podisco.tasks.base.Task`` asks. A task file
is trusted code, like a training script: it runs in the parent (``prepare``) and in the sandboxed worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from podisco.losses.registry import get_loss
from podisco.tasks.base import TaskLimits, TaskSpec, make_spec
from podisco.tasks.seeds import PREFERENCE_SEEDS

KL_PENALTY = 0.1


@dataclass
class ToyBanditTask:
    prompts: int = 16
    responses: int = 8
    pairs: int = 512
    steps: int = 150
    batch_size: int = 32
    lr: float = 0.05

    name: ClassVar[str] = "toy-bandit"
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "preference"
    paired: ClassVar[bool] = True
    reference_loss: ClassVar[str] = "sigmoid"
    staged: ClassVar[bool] = True
    default_seeds: ClassVar[tuple[int, ...]] = (0, 1, 2)
    default_reevaluate_seeds: ClassVar[tuple[int, ...]] = tuple(range(100, 110))  # held out from the search

    def limits(self) -> TaskLimits:
        return TaskLimits(wall_s=120.0)

    def describe(self) -> str:
        return f"expected hidden utility minus {KL_PENALTY} x KL(reference || policy), relative to DPO (0 = as good)"

    def seed_archive(self) -> dict[str, str]:
        return dict(PREFERENCE_SEEDS)

    def prepare(self, folder: Path, log) -> TaskSpec:
        g = torch.Generator().manual_seed(1234)  # the data are part of the task: fixed, whatever the run
        utility = torch.rand(self.prompts, self.responses, generator=g)
        reference = torch.randn(self.prompts, self.responses, generator=g)  # the "SFT" policy's logits
        prompt = torch.randint(self.prompts, (self.pairs,), generator=g)
        a, b = (torch.randint(self.responses, (self.pairs,), generator=g) for _ in range(2))
        a_wins = torch.rand(self.pairs, generator=g) < torch.sigmoid(8 * (utility[prompt, a] - utility[prompt, b]))
        chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
        log(f"{self.name}: {self.pairs} pairs over {self.prompts} prompts x {self.responses} responses")
        pairs = torch.stack([prompt, chosen, rejected], 1).tolist()
        return make_spec(self, {"utility": utility.tolist(), "reference": reference.tolist(), "pairs": pairs})

    def readonly_paths(self, spec: TaskSpec) -> tuple[str, ...]:
        return ()

    def run_seed(self, spec: TaskSpec, loss_name: str, loss_fn, beta: float, seed: int, workdir: Path) -> dict:
        loss_fn = loss_fn or get_loss(loss_name)
        utility, reference = torch.tensor(spec.params["utility"]), torch.tensor(spec.params["reference"])
        pairs = torch.tensor(spec.params["pairs"])
        ref_logp = reference.log_softmax(-1)
        logits = reference.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=self.lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(self.steps):
            p, c, r = pairs[torch.randint(len(pairs), (self.batch_size,), generator=g)].T
            logp = logits.log_softmax(-1)
            losses = loss_fn(logp[p, c], logp[p, r], ref_logp[p, c], ref_logp[p, r], beta=beta)  # (B,)
            optimizer.zero_grad()
            losses.mean().backward()
            optimizer.step()
        with torch.no_grad():
            logp = logits.log_softmax(-1)
            reward = (logp.exp() * utility).sum(-1).mean()
            kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
        if not torch.isfinite(reward + kl):
            raise FloatingPointError("training diverged: the policy is not finite")
        return {"seed": seed, "reward": float(reward), "kl": float(kl)}

    def finish_seed(self, spec: TaskSpec, row: dict) -> dict:
        return row

    def seed_fitness(self, row: dict, reference: dict | None) -> float:
        assert reference is not None, "paired: the DPO row of the same seed"
        score = row["reward"] - KL_PENALTY * row["kl"]
        return score - (reference["reward"] - KL_PENALTY * reference["kl"])

    def summarise(self, rows: list[dict]) -> dict:
        return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in ("reward", "kl")}
