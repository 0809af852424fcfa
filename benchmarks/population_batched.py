"""The moonshot of issue 17: train K candidates' models in one pass (``torch.func.stack_module_state`` + ``vmap``)
against one model at a time. Measures training steps only, not a discovery loop.

K copies of the IMDb ``default`` preset's GPT-2 shape (4 layers, 128 wide, vocab 4,096; random weights from a
config, eager attention, no dropout), each with its own loss (DPO and K-1 others from the registry), its own
batch of 16 preference pairs (prompt 8 + completion 24 tokens) and its own Adam state. "one at a time": K
ordinary autograd steps. "batched": one ``vmap`` forward over the stacked parameters, the K losses, one backward
and one Adam update of the stacked tensors. Both start from the same weights and see the same batches for the
same number of steps, so the largest weight difference at the end (max |Δw|) checks that batching trains
exactly the same K models. Prints steps per second (model-steps: K per pass) and the ratio, for each K.

    .venv/bin/python benchmarks/population_batched.py --k 1,4,8 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

# none of them needs the completions' lengths (IPO does, and this benchmark has none)
LOSSES = ["sigmoid", "hinge", "padll", "discopop", "cell", "robust", "exo_pair", "aqfl"]
PROMPT, COMPLETION, PAIRS = 8, 24, 16


def build(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=4096, n_layer=4, n_embd=128, n_head=4, n_positions=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4096, (2 * PAIRS, PROMPT + COMPLETION), generator=g)  # chosen rows, then rejected
    reference = -torch.rand(2 * PAIRS, generator=g) * 50 - 100  # reference log-probs of the completions
    return {"ids": ids, "reference": reference}


def sequence_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Sum of log p(completion token) per sequence (the completion is the last COMPLETION tokens)."""
    logp = F.log_softmax(logits[:, PROMPT - 1 : -1].float(), dim=-1)
    return logp.gather(-1, ids[:, PROMPT:].unsqueeze(-1)).squeeze(-1).sum(-1)


def pair_loss(loss_fn, logps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return loss_fn(logps[:PAIRS], logps[PAIRS:], reference[:PAIRS], reference[PAIRS:], beta=0.1).mean()


def one_at_a_time(models, optimizers, losses, batches, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        for model, opt, loss_fn, b in zip(models, optimizers, losses, batches, strict=True):
            logps = sequence_logps(model(b["ids"]).logits, b["ids"])
            pair_loss(loss_fn, logps, b["reference"]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def batched(models, losses, batches, steps: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One vmapped forward of the K stacked models, the K losses on their own slices, one backward, one Adam
    step of the stacked tensors (the K losses touch disjoint slices: K independent gradients and Adam states)."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0])  # its own weights are replaced by the stacked ones in every call
    ids = torch.stack([b["ids"] for b in batches])

    def logps_of(p, buf, ids_k):
        return sequence_logps(functional_call(base, (p, buf), (ids_k,)).logits, ids_k)

    forward = vmap(logps_of)
    opt = torch.optim.Adam(list(params.values()), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        logps = forward(params, buffers, ids)  # (K, 2 * PAIRS)
        total = sum(pair_loss(fn, logps[k], batches[k]["reference"]) for k, fn in enumerate(losses))
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start, params


def main() -> None:
    from podisco.losses.registry import get_loss

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="1,4,8", help="population sizes")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| K | one at a time: model-steps/s | batched (vmap): model-steps/s | batched / one at a time | max |Δw| |")
    print("|---|---|---|---|---|")
    for k in (int(x) for x in args.k.split(",")):
        names = [LOSSES[i % len(LOSSES)] for i in range(k)]
        losses = [get_loss(n) for n in names]
        batches = [batch(i) for i in range(k)]
        models = [build(i) for i in range(k)]
        optimizers = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in models]
        one_at_a_time(models, optimizers, losses, batches, 1)  # warm-up
        sequential = one_at_a_time(models, optimizers, losses, batches, args.steps)
        together, stacked = batched([build(i) for i in range(k)], losses, batches, args.steps + 1)
        together *= args.steps / (args.steps + 1)  # as many steps as timed one at a time (the first warms up)
        # the same start, data and steps: the batched weights must equal the ones trained one at a time
        drift = max(
            (stacked[name][i] - p).abs().max().item() for i, m in enumerate(models) for name, p in m.named_parameters()
        )
        a, b = k * args.steps / sequential, k * args.steps / together
        print(f"| {k} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {drift:.1e} |")


if __name__ == "__main__":
    main()
