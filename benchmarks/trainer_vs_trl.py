"""podisco's preference trainer against TRL 1.16's DPOTrainer on the same work, plus a bare-PyTorch ceiling.

    .venv/bin/python benchmarks/trainer_vs_trl.py            # both shapes, all systems (~5 min on 2 cores)
    .venv/bin/python benchmarks/trainer_vs_trl.py --steps 20 # quicker

Same randomly initialised GPT-2 (4 layers, 128 wide, vocab 4096), the same 512 preference pairs in the same
order, 8 pairs per step, the same optimiser and schedule, fp32, 2 threads. Shapes: "short" (8 prompt tokens,
completions of 120) and "long" (96 prompt tokens shared by two 32-token completions). Each system runs in its
own process, so peak RSS is its own. tokens/s counts tokens as TRL's num_tokens does (the prompt twice per
pair), over the training loop only (reference log-probs are precomputed before it, for both).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"short": (8, 120), "long": (96, 32)}  # (prompt tokens, tokens per completion incl. EOS)
VOCAB, PAIRS, BATCH, SEED, LR = 4096, 512, 8, 0, 1e-4


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def build_rows(shape: str) -> list[dict[str, str]]:
    import random

    prompt_len, completion_len = SHAPES[shape]
    rng = random.Random(SEED)

    def words(n: int) -> str:
        return " ".join(f"w{rng.randrange(2, VOCAB)}" for _ in range(n))

    # The completion text has completion_len - 1 words; both trainers append EOS.
    return [
        {
            "prompt": words(prompt_len),
            "chosen": " " + words(completion_len - 1),
            "rejected": " " + words(completion_len - 1),
        }
        for _ in range(PAIRS)
    ]


def build_model():
    from podisco.models import build_tiny_gpt2

    return build_tiny_gpt2(VOCAB, n_layer=4, n_embd=128, n_head=4, n_positions=256, eos_id=0, seed=SEED)


def podisco_order() -> list[int]:
    from podisco.training.loop import epoch_order

    return epoch_order(PAIRS, SEED, 0)


def run_podisco(shape: str, steps: int, workdir: Path) -> dict:
    from podisco.data import tokenize_pairs, validate_rows
    from podisco.training.config import TrainConfig
    from podisco.training.preference import train_preference
    from podisco.training.reference import cached_reference_logps

    tokenizer = build_tokenizer()
    rows, _ = validate_rows(build_rows(shape))
    examples, _ = tokenize_pairs(rows, tokenizer, max_length=256)
    model = build_model()
    config = TrainConfig(output_dir=str(workdir / "podisco"), batch_size=BATCH, max_steps=steps, seed=SEED)
    config.reference_cache_dir = str(workdir / "cache")
    config.loss.beta = 0.1
    config.optim.lr = LR
    config.optim.schedule, config.optim.warmup_ratio = "linear", 0.0
    config.precision = "fp32"
    # Warm the reference cache so that the timed call measures training only, as TRL's precompute does.
    cached_reference_logps(model, tokenizer, examples, 0, "shared", 256, config.reference_cache_dir)
    result = train_preference(config, model, examples, 0, tokenizer)
    # Steady state: steps 2..N, each timed by the loop from the end of the previous optimizer step.
    tokens = [h["num_tokens"] for h in result.history]
    seconds = sum((tokens[i] - tokens[i - 1]) / result.history[i]["tokens/s"] for i in range(1, len(tokens)))
    return {"seconds": seconds, "tokens": tokens[-1] - tokens[0], "losses": [h["loss"] for h in result.history]}


def run_trl(shape: str, steps: int, workdir: Path, defaults: bool) -> dict:
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class OrderedDPOTrainer(DPOTrainer):
        """Feed the pairs in the dataset's order (already permuted as podisco's epoch 0)."""

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    rows = build_rows(shape)
    order = podisco_order()
    dataset = Dataset.from_list([rows[i] for i in order])
    model = build_model()
    args = DPOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=0.1,
        max_length=256,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        precompute_ref_log_probs=not defaults,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    ref = None if not defaults else copy.deepcopy(model)
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    trainer = OrderedDPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=dataset,
        processing_class=build_tokenizer(),
        callbacks=[StepClock()],
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    tokens = [h["num_tokens"] for h in logs]
    # Steady state, as for podisco: from the end of step 1 to the end of step N.
    return {
        "seconds": step_ends[-1] - step_ends[0],
        "tokens": tokens[-1] - tokens[0],
        "losses": [h["loss"] for h in logs],
    }


def run_bare(shape: str, steps: int) -> dict:
    """Plain PyTorch on the same token shapes: forward (full logits and HF's LM loss), backward, AdamW step."""
    import torch

    prompt_len, completion_len = SHAPES[shape]
    from podisco.training.loop import disable_dropout

    model = build_model()
    disable_dropout(model)  # as both trainers do
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(2, VOCAB, (2 * BATCH, prompt_len + completion_len), generator=g)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up, excluded as for the trainers
    start = time.perf_counter()
    for _ in range(steps - 1):
        step()
    return {"seconds": time.perf_counter() - start, "tokens": (steps - 1) * ids.numel(), "losses": []}


def worker(system: str, shape: str, steps: int, workdir: Path) -> None:
    import torch

    torch.set_num_threads(2)
    if system == "podisco":
        out = run_podisco(shape, steps, workdir)
    elif system in {"trl", "trl-defaults"}:
        out = run_trl(shape, steps, workdir, defaults=system == "trl-defaults")
    else:
        out = run_bare(shape, steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=PAIRS // BATCH)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--workdir", default="runs/bench_trainer")
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.steps, workdir / args.worker[1])
        return
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    rows = []
    for shape in args.shapes:
        results = {}
        for system in ("bare", "podisco", "trl", "trl-defaults"):
            cmd = [
                sys.executable,
                __file__,
                "--steps",
                str(args.steps),
                "--workdir",
                str(workdir),
                "--worker",
                system,
                shape,
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{system}/{shape} failed:\n{proc.stderr[-3000:]}")
            results[system] = json.loads(line[len("RESULT ") :])
        speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
        first = min(20, len(results["podisco"]["losses"]), len(results["trl"]["losses"]))
        diff = max(
            abs(a - b)
            for a, b in zip(results["podisco"]["losses"][:first], results["trl"]["losses"][:first], strict=True)
        )
        for system in ("bare", "podisco", "trl", "trl-defaults"):
            rows.append(
                (
                    shape,
                    system,
                    f"{speed[system]:,.0f}",
                    f"{speed[system] / speed['trl']:.2f}x",
                    f"{speed[system] / speed['bare']:.2f}",
                    f"{results[system]['peak_rss_mb']:,.0f}",
                    f"{diff:.1e}" if system == "podisco" else "",
                )
            )
    header = (
        "shape",
        "system",
        "tokens/s",
        "vs TRL (precompute)",
        "vs bare",
        "peak RSS MB",
        "max |loss - TRL| (20 steps)",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
