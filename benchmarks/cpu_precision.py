"""precision on a CPU: fp32, bf16 autocast and "auto" (a timed probe, podisco/training/precision.py) compared.

    .venv/bin/python benchmarks/cpu_precision.py               # default and paper shapes (~3 min on 2 cores)
    .venv/bin/python benchmarks/cpu_precision.py --threads 1   # what the probe and training see with one thread
    .venv/bin/python benchmarks/cpu_precision.py --shapes default --repeats 3

Random GPT-2s built from the IMDb presets' configs (no download): "default" (4 layers x 128, vocab 4096) and
"paper" (12 x 768, vocab 8192), trained with podisco's preference trainer on random-token pairs of the
presets' prompt and completion lengths (8 + 24 and 8 + 60 tokens), 16 pairs per step for "default" and 4 for
"paper" (a step of 16 would take half a minute here). Each mode trains a fresh copy of the same model; the
modes run interleaved (fp32, bf16, auto, then reversed on the next repeat: 2 repeats for "default", 1 for
"paper"), and the fastest repeat counts; "range" is the slowest and fastest repeat, the noise to read with it.
steps/s is wall-clock over the training steps after the first, "CPU s/step" the process's CPU time over the
same steps (steadier than wall-clock on a shared machine; with one thread, the compute itself). "auto" first
probes with an empty decision cache, so its probe cost (reported) is paid every time here, and once per
machine and shape in real use.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

PLAN = {"default": (16, 12, 2), "paper": (4, 3, 1)}  # shape: (pairs per step, steps, interleaved repeats)
MODES = ("fp32", "bf16", "auto")


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def build_examples(preset, tokenizer, pairs: int):
    import random

    from podisco.data import tokenize_pairs, validate_rows

    rng = random.Random(0)

    def words(n: int) -> str:
        return " ".join(f"w{rng.randrange(2, preset.vocab_size)}" for _ in range(n))

    rows = [
        {
            "prompt": words(preset.prompt_tokens),
            "chosen": " " + words(preset.completion_tokens - 1),
            "rejected": " " + words(preset.completion_tokens - 1),
        }
        for _ in range(pairs)
    ]
    valid, _ = validate_rows(rows)
    return tokenize_pairs(valid, tokenizer, max_length=preset.prompt_tokens + preset.completion_tokens + 8)[0]


def train(shape: str, mode: str, workdir: Path) -> dict:
    import torch

    from podisco.models import build_tiny_gpt2
    from podisco.tasks.imdb.prepare import PRESETS
    from podisco.training import precision
    from podisco.training.config import TrainConfig
    from podisco.training.preference import train_preference

    preset = PRESETS[shape]
    batch, steps, _ = PLAN[shape]
    tokenizer = build_tokenizer(preset.vocab_size)
    examples = build_examples(preset, tokenizer, batch * steps)
    model = build_tiny_gpt2(
        preset.vocab_size, preset.n_layer, preset.n_embd, preset.n_head, n_positions=max(256, preset.max_length)
    )
    config = TrainConfig(output_dir=str(workdir / f"{shape}-{mode}"), batch_size=batch, max_steps=steps)
    config.precision, config.save_model, config.cache_reference = mode, False, False
    config.optim.lr, config.optim.warmup_ratio = 1e-4, 0.0
    os.environ["PODISCO_CACHE"] = tempfile.mkdtemp(dir=workdir)  # an empty decision cache: auto probes
    precision._DECIDED.clear()
    # The start of every forward pass with gradients (wall and CPU clocks): the last `steps` of them are the
    # training steps (the probe's come before them), so steps 2..n run from the second of them to the end.
    starts: list[tuple[float, float]] = []

    def stamp(module, args) -> None:
        if torch.is_grad_enabled():
            starts.append((time.perf_counter(), time.process_time()))

    hook = model.base_model.register_forward_pre_hook(stamp)  # the scorer calls the transformer, not the LM
    started, log = time.perf_counter(), io.StringIO()
    with contextlib.redirect_stderr(log):  # the progress bar; the decision's line is printed below
        result = train_preference(config, model, examples, tokenizer.eos_token_id)
    end = (time.perf_counter(), time.process_time())
    hook.remove()
    for line in log.getvalue().splitlines():
        if line.startswith("precision auto:"):
            print(f"# {shape}: {line}", flush=True)
    decision = next(iter(precision._DECIDED.values()), None) if mode == "auto" else None
    second = starts[-steps + 1]
    return {
        "steps_per_s": (steps - 1) / (end[0] - second[0]),
        "cpu_s_per_step": (end[1] - second[1]) / (steps - 1),
        "chose": result.precision,
        "probe_s": decision.probe_s if decision else 0.0,
        "probe_ratio": decision.speedup if decision else None,
        "total_s": end[0] - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="default,paper")
    parser.add_argument("--repeats", type=int, default=0, help="interleaved repeats per shape (0: the plan's)")
    parser.add_argument("--modes", default=",".join(MODES), help="a subset of fp32,bf16,auto (fp32 first)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from podisco.training.precision import cpu_signature

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = cpu_signature()
    print(
        f"# {cpu['cpu']}, bf16 flags: {' '.join(cpu['bf16_flags']) or 'none'}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            batch, steps, repeats = PLAN[shape]
            modes = tuple(args.modes.split(","))
            runs: dict[str, list[dict]] = {mode: [] for mode in modes}
            for repeat in range(args.repeats or repeats):
                for mode in modes if repeat % 2 == 0 else tuple(reversed(modes)):
                    run = train(shape, mode, Path(tmp))
                    print(f"# {shape} {mode}: {run}", flush=True)
                    runs[mode].append(run)
            best = {mode: max(runs[mode], key=lambda r: r["steps_per_s"]) for mode in modes}
            for mode in modes:
                run = best[mode]
                ratio = run["steps_per_s"] / best["fp32"]["steps_per_s"]
                speeds = [r["steps_per_s"] for r in runs[mode]]
                spread = f"{min(speeds):.2f}-{max(speeds):.2f}" if len(speeds) > 1 else ""
                probe = (
                    f"{run['chose']} (probe {run['probe_s']:.1f} s, bf16 {run['probe_ratio']:.2f}x)"
                    if mode == "auto" and run["probe_ratio"]
                    else ""
                )
                cpu = f"{run['cpu_s_per_step']:.2f}"
                rows.append(
                    (
                        shape,
                        f"{batch} x {steps}",
                        mode,
                        f"{run['steps_per_s']:.3f}",
                        spread,
                        cpu,
                        f"{ratio:.2f}x",
                        probe,
                    )
                )
    header = ("shape", "pairs x steps", "precision", "steps/s", "range", "CPU s/step", "vs fp32", "auto chose")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|-" + "-|-".join("-" * w for w in widths) + "-|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
