"""podisco's preference trainer against TRL 1.16's DPOTrainer on the same work, plus a bare-PyTorch ceiling.

    .venv/bin/python benchmarks/trainer_vs_trl.py            # both shapes, all systems (~5 min on 2 cores)
    .venv/bin/python benchmarks/trainer_vs_trl.py --steps 20 # quicker
    python benchmarks/trainer_vs_trl.py --device cuda --model qwen2-0.5b gpt2-small --steps 30 [--compile]

On a GPU (``--device cuda``) both trainers run in bf16 on random models shaped like Qwen2-0.5B and GPT-2 small,
and the table adds peak GPU memory and MFU (model FLOPs, 6 x parameters per trained token plus attention,
against the GPU's dense bf16 peak); ``--lm-head-memory`` measures what the chunked log-prob saves against
full logits at vocab 151,936. Without a CUDA device the CPU table is printed and the GPU figures are said
to be missing.

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
from dataclasses import dataclass
from pathlib import Path

SHAPES = {"short": (8, 120), "long": (96, 32)}  # (prompt tokens, tokens per completion incl. EOS)
PAIRS, BATCH, SEED, LR = 512, 8, 0, 1e-4
# random models from configs (nothing downloaded): the CPU default, and the GPU shapes of the issue
MODELS = {
    "tiny": {"kind": "gpt2", "vocab": 4096, "layers": 4, "hidden": 128, "heads": 4},
    "gpt2-small": {"kind": "gpt2", "vocab": 50257, "layers": 12, "hidden": 768, "heads": 12},
    "qwen2-0.5b": {"kind": "qwen2", "vocab": 151936, "layers": 24, "hidden": 896, "heads": 14, "kv_heads": 2,
                   "intermediate": 4864},
}  # fmt: skip
PEAK_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense
VOCAB = MODELS["tiny"]["vocab"]  # set per run by --model


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


def build_model(name: str = "tiny"):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, Qwen2Config

    shape = MODELS[name]
    if shape["kind"] == "gpt2" and name == "tiny":
        from podisco.models import build_tiny_gpt2

        return build_tiny_gpt2(VOCAB, n_layer=4, n_embd=128, n_head=4, n_positions=256, eos_id=0, seed=SEED)
    torch.manual_seed(SEED)
    if shape["kind"] == "gpt2":
        config = GPT2Config(
            vocab_size=shape["vocab"], n_layer=shape["layers"], n_embd=shape["hidden"], n_head=shape["heads"],
            n_positions=1024, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )  # fmt: skip
    else:
        config = Qwen2Config(
            vocab_size=shape["vocab"], num_hidden_layers=shape["layers"], hidden_size=shape["hidden"],
            num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
            intermediate_size=shape["intermediate"], max_position_embeddings=1024, tie_word_embeddings=True,
            bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )  # fmt: skip
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 x parameters (forward + backward) + 12 x layers x hidden x seq (attention),
    as in the PaLM paper's MFU; the reference model's forward is precomputed, so it is not counted."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    return 6 * sum(p.numel() for p in model.parameters()) + 12 * layers * hidden * seq_len


def podisco_order() -> list[int]:
    from podisco.training.loop import epoch_order

    return epoch_order(PAIRS, SEED, 0)


@dataclass
class Setting:
    shape: str
    steps: int
    workdir: Path
    model: str = "tiny"
    device: str = "cpu"
    compile: bool = False

    @property
    def bf16(self) -> bool:
        return self.device == "cuda"


def run_podisco(run: Setting) -> dict:
    from podisco.data import tokenize_pairs, validate_rows
    from podisco.training.config import TrainConfig
    from podisco.training.preference import train_preference
    from podisco.training.reference import cached_reference_logps

    tokenizer = build_tokenizer()
    rows, _ = validate_rows(build_rows(run.shape))
    examples, _ = tokenize_pairs(rows, tokenizer, max_length=256)
    model = build_model(run.model).to(run.device)
    config = TrainConfig(output_dir=str(run.workdir / "podisco"), batch_size=BATCH, max_steps=run.steps, seed=SEED)
    config.reference_cache_dir = str(run.workdir / "cache")
    config.loss.beta = 0.1
    config.optim.lr = LR
    config.optim.schedule, config.optim.warmup_ratio = "linear", 0.0
    config.precision = "bf16" if run.bf16 else "fp32"
    config.compile, config.save_model = run.compile, False
    # Warm the reference cache so that the timed call measures training only, as TRL's precompute does.
    cached_reference_logps(model, tokenizer, examples, 0, "shared", 256, config.reference_cache_dir)
    result = train_preference(config, model, examples, 0, tokenizer)
    # Steady state: steps 2..N, each timed by the loop from the end of the previous optimizer step.
    tokens = [h["num_tokens"] for h in result.history]
    seconds = sum((tokens[i] - tokens[i - 1]) / result.history[i]["tokens/s"] for i in range(1, len(tokens)))
    losses = [h["loss"] for h in result.history]
    return {"seconds": seconds, "tokens": tokens[-1] - tokens[0], "losses": losses, "flops": _flops(model, run)}


def run_trl(run: Setting, defaults: bool) -> dict:
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class OrderedDPOTrainer(DPOTrainer):
        """Feed the pairs in the dataset's order (already permuted as podisco's epoch 0)."""

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    rows = build_rows(run.shape)
    order = podisco_order()
    dataset = Dataset.from_list([rows[i] for i in order])
    model = build_model(run.model)
    args = DPOConfig(
        output_dir=str(run.workdir / "trl"),
        per_device_train_batch_size=BATCH,
        max_steps=run.steps,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=0.1,
        max_length=256,
        bf16=run.bf16,
        torch_compile=run.compile,
        gradient_checkpointing=False,
        use_cpu=run.device == "cpu",
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
            _synchronize(run.device)
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
        "flops": _flops(model, run),
    }


def run_bare(run: Setting) -> dict:
    """Plain PyTorch on the same token shapes: forward (full logits and HF's LM loss), backward, AdamW step."""
    import contextlib

    import torch

    prompt_len, completion_len = SHAPES[run.shape]
    from podisco.training.loop import disable_dropout

    model = build_model(run.model).to(run.device)
    disable_dropout(model)  # as both trainers do
    model.train()
    if run.compile:
        model.compile(dynamic=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(2, VOCAB, (2 * BATCH, prompt_len + completion_len), generator=g).to(run.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if run.bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up, excluded as for the trainers
    _synchronize(run.device)
    start = time.perf_counter()
    for _ in range(run.steps - 1):
        step()
    _synchronize(run.device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": (run.steps - 1) * ids.numel(), "losses": [], "flops": _flops(model, run)}


def lm_head_memory(device: str, chunked: bool) -> dict:
    """Peak memory of log p(token) and its gradient for 8 pairs x 512 scored tokens at Qwen2's vocab (151,936):
    podisco's chunked head (``head_logps``, 1,024 rows at a time) against full (tokens x vocab) logits and a
    log-softmax, as a plain LM loss computes them."""
    import torch
    import torch.nn.functional as F

    from podisco.training.logprobs import head_logps

    tokens, hidden_size, vocab = 8 * 512, MODELS["qwen2-0.5b"]["hidden"], MODELS["qwen2-0.5b"]["vocab"]
    g = torch.Generator().manual_seed(SEED)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    weight = (torch.randn(vocab, hidden_size, generator=g) * 0.02).to(device, dtype).requires_grad_()
    hidden = torch.randn(tokens, hidden_size, generator=g).to(device, dtype).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if chunked:
        logps = head_logps(hidden, weight, None, targets, chunk_tokens=1024)
    else:
        logps = F.linear(hidden, weight).float().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    logps.sum().backward()
    _synchronize(device)
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(device)}


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _flops(model, run: Setting) -> float:
    return flops_per_token(model, sum(SHAPES[run.shape]))


def _peak_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_tflops() -> float | None:
    import torch

    name = torch.cuda.get_device_name(0)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def worker(system: str, run: Setting) -> None:
    import torch

    global VOCAB
    VOCAB = MODELS[run.model]["vocab"]
    torch.set_num_threads(2)
    if system == "podisco":
        out = run_podisco(run)
    elif system in {"trl", "trl-defaults"}:
        out = run_trl(run, defaults=system == "trl-defaults")
    elif system.startswith("head-"):
        out = lm_head_memory(run.device, chunked=system == "head-chunked")
    else:
        out = run_bare(run)
    out.setdefault("peak_mb", _peak_mb(run.device))
    print("RESULT " + json.dumps(out))


def _table(header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=PAIRS // BATCH)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", nargs="+", default=None, choices=list(MODELS), help="default: tiny on a CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile in every system")
    parser.add_argument("--lm-head-memory", action="store_true", help="only the chunked vs full log-prob memory")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--workdir", default="runs/bench_trainer")
    parser.add_argument("--worker", nargs=3, metavar=("SYSTEM", "SHAPE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.worker:
        system, shape, model = args.worker
        worker(system, Setting(shape, args.steps, workdir / model / shape, model, args.device, args.compile))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here. GPU figures: missing.")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }

    def measure(system: str, shape: str, model: str) -> dict:
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--workdir", str(workdir)]
        cmd += ["--device", args.device, "--worker", system, shape, model] + (["--compile"] if args.compile else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{system}/{shape}/{model} failed:\n{proc.stderr[-3000:]}")
        return json.loads(line[len("RESULT ") :])

    if args.lm_head_memory:
        full, chunked = (measure(f"head-{kind}", "short", "qwen2-0.5b") for kind in ("full", "chunked"))
        rows = [
            (kind, f"{r['peak_mb']:,.0f}", f"{r['seconds']:.2f}") for kind, r in (("full", full), ("chunked", chunked))
        ]
        _table(("log-prob of 4,096 tokens at vocab 151,936", "peak MB", "seconds (fwd+bwd)"), rows)
        return
    peak = args.peak_tflops or (gpu_peak_tflops() if args.device == "cuda" else None)
    rows = []
    for model in args.model or (["tiny"] if args.device == "cpu" else ["qwen2-0.5b", "gpt2-small"]):
        for shape in args.shapes:
            results = {system: measure(system, shape, model) for system in ("bare", "podisco", "trl", "trl-defaults")}
            speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
            first = min(20, len(results["podisco"]["losses"]), len(results["trl"]["losses"]))
            pairs = zip(results["podisco"]["losses"][:first], results["trl"]["losses"][:first], strict=True)
            diff = max(abs(a - b) for a, b in pairs)
            for system, r in results.items():
                mfu = f"{speed[system] * r['flops'] / (peak * 1e12):.1%}" if peak else "-"
                rows.append(
                    (
                        model,
                        shape,
                        system,
                        f"{speed[system]:,.0f}",
                        f"{speed[system] / speed['trl']:.2f}x",
                        f"{speed[system] / speed['bare']:.2f}",
                        f"{r['peak_mb']:,.0f}",
                        mfu,
                        f"{diff:.1e}" if system == "podisco" else "",
                    )
                )
    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    header = ("model", "shape", "system", "tokens/s", "vs TRL (precompute)", "vs bare", memory, "MFU",
              "max |loss - TRL| (20 steps)")  # fmt: skip
    _table(header, rows)
    if args.device == "cpu":
        print("\nGPU figures: missing (run with --device cuda where a CUDA GPU is at hand).")


if __name__ == "__main__":
    main()
