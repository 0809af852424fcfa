"""The LLM-judged tasks (chat, alpaca, tldr) as a fitness for discovery and sweeps, in two halves:

1. ``train_and_answer`` (no network; a sandboxed discovery worker runs it): train the task's model with a loss
   from the task's ``TrainConfig``, then answer the evaluation prompts with the trained model, in memory.
2. ``score_answers`` (the discovery process, which holds the judge's key and network): judge the answers.

So candidate code never meets the network or the key, and a judge outage costs no training: the answers are
kept (in the worker's result file) and judged again on ``--resume``.

``prepare_spec`` (trusted, before any candidate) turns a TrainConfig YAML and an evaluation source into a
self-contained spec: the model resolved to a local folder (downloaded once if a hub id), the training rows
checked and written to a local JSONL, the evaluation rows loaded. A worker then needs only files it can
read in its sandbox.

Scores per seed: chat = mean 1-10 rating over graded turns (MT-Bench, the paper's discovery fitness);
alpaca = length-controlled win rate against the reference outputs (AlpacaEval 2.0's headline number);
tldr = win rate against the human reference summaries (the paper's Table 3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podisco.cache import atomic_output, write_csv
from podisco.errors import PodiscoError
from podisco.losses.registry import LossFn

TASKS = ("chat", "alpaca", "tldr")
VERSION = "1"  # of this pipeline (train -> answer -> judge); each task module has its own VERSION too
SCORE_MEANING = {
    "chat": "mean 1-10 judge rating per turn (MT-Bench style)",
    "alpaca": "length-controlled win rate against the reference outputs (AlpacaEval 2.0 style)",
    "tldr": "win rate of the summaries against the human reference summaries (TL;DR)",
}


@dataclass
class JudgedTask:
    """What a user names: the task, a TrainConfig YAML (model, data, schedule) and the evaluation prompts."""

    task: str
    train_config: str
    eval_data: str = ""  # default: the task's hub dataset
    limit: int = 0  # evaluation prompts used (0: all)
    max_new_tokens: int = 256
    overrides: tuple[str, ...] = ()  # TrainConfig key=value overrides, e.g. max_steps=20


def _module(task: str):
    if task not in TASKS:
        raise PodiscoError(f"unknown judged task {task!r}: {', '.join(TASKS)}")
    from podisco.tasks.judged import alpaca, chat, tldr

    return {"chat": chat, "alpaca": alpaca, "tldr": tldr}[task]


def task_version(task: str) -> str:
    return f"{_module(task).VERSION}.{VERSION}"


def _load_eval(task: str, source: str, limit: int) -> list[dict]:
    module = _module(task)
    if task == "chat":
        source = source or module.HUB_QUESTIONS
        return [asdict(q) for q in module.load_questions(source, limit)]
    if task == "alpaca":
        rows = module.load_instructions(source or module.HUB_INSTRUCTIONS, limit)
        module.reference_outputs(rows)  # a file without references fails here, before any training
        return [{"instruction": r["instruction"], "output": r["output"]} for r in rows]
    return module.load_posts(source or module.HUB_POSTS, limit)


def _local_model(name: str) -> str:
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name)  # once, in the trusted parent: workers have no network
    except Exception as error:
        raise PodiscoError(f"model {name!r}: not a local folder and not downloadable ({error})") from error


def prepare_spec(task: JudgedTask, folder: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The self-contained spec a worker trains and answers from; training rows are checked here, once."""
    from podisco.data import load_rows, validate_rows
    from podisco.training.config import TrainConfig, load_config, to_dict

    config = load_config(TrainConfig, task.train_config, list(task.overrides))
    config.validate()
    if not config.model or not config.data.path:
        raise PodiscoError(f"{task.train_config}: the TrainConfig needs a model and data.path")
    rows, report = validate_rows(load_rows(config.data.path, config.data.split), config.data.path, config.data.on_error)
    log(f"{task.task}: training data {config.data.path}: {report}")
    text = "\n".join(json.dumps(r) for r in rows)
    folder = Path(folder).resolve()
    data_file = folder / f"train-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not data_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        data_file.write_text(text)
    config.model = _local_model(config.model)
    config.data.path, config.data.split = str(data_file), "train"  # tokenizing may still drop over-long pairs
    config.save_model = False  # answers are generated from memory; a 7B checkpoint per candidate is waste
    eval_rows = _load_eval(task.task, task.eval_data, task.limit)
    log(f"{task.task}: {len(rows)} training pairs, {len(eval_rows)} evaluation prompts, model {config.model}")
    return {
        "name": task.task,
        "version": task_version(task.task),
        "train": to_dict(config),
        "eval": eval_rows,
        "max_new_tokens": task.max_new_tokens,
    }


def readonly_paths(spec: dict) -> list[str]:
    """What a sandboxed worker must be able to read: the model folder and the checked training rows."""
    model = Path(spec["train"]["model"])
    if model.parent.name == "snapshots":  # a hub-cache snapshot: its files link into ../../blobs
        model = model.parents[1]
    return [str(model), str(Path(spec["train"]["data"]["path"]).parent)]


def train_config(spec: dict, loss: str, beta: float, seed: int, output_dir: str | Path):
    from podisco.training.config import TrainConfig, apply

    config = TrainConfig()
    apply(config, spec["train"])
    config.loss.name, config.loss.beta, config.seed, config.output_dir = loss, beta, seed, str(output_dir)
    return config


def answer(spec: dict, model, tokenizer, seed: int) -> list:
    """The trained model's answers to the evaluation prompts (chat: one list of turns per question)."""
    from podisco.tasks.judged import alpaca, chat, tldr

    rows, tokens = spec["eval"], spec["max_new_tokens"]
    if spec["name"] == "chat":
        return chat.answer(model, tokenizer, [chat.ChatQuestion(**q) for q in rows], tokens, seed)
    if spec["name"] == "alpaca":
        return alpaca.answer_instructions(model, tokenizer, rows, tokens, seed)
    return tldr.summarise(model, tokenizer, rows, tokens, seed)


def train_and_answer(
    spec: dict,
    loss: str,
    beta: float,
    seed: int,
    output_dir: str | Path,
    loss_fn: LossFn | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train with ``loss`` (a registered name, or ``loss_fn`` under that label) and answer; needs no network."""
    from podisco.training.pipeline import train_from_config

    config = train_config(spec, loss, beta, seed, output_dir)
    result, model, tokenizer = train_from_config(config, loss_fn, log=log)
    return _answered(spec, model, tokenizer, seed, result.steps)


def answer_trained(spec: dict, output_dir: str | Path, seed: int, steps: int) -> dict[str, Any]:
    """Answer with the model that processes launched elsewhere trained and saved as ``output_dir/final``."""
    import torch

    from podisco.models import load_model, load_tokenizer

    final = str(Path(output_dir) / "final")
    tokenizer, model = load_tokenizer(final), load_model(final)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return _answered(spec, model, tokenizer, seed, steps)


def _answered(spec: dict, model, tokenizer, seed: int, steps: int) -> dict[str, Any]:
    device = str(next(model.parameters()).device)
    return {"seed": seed, "steps": steps, "device": device, "answers": answer(spec, model, tokenizer, seed)}


def score_answers(spec: dict, answers: Sequence, judge, seed: int) -> dict[str, float]:
    """Judge one seed's answers: ``score`` (the fitness of this seed), its standard error, how many judged."""
    from podisco.tasks.judged import alpaca, chat, tldr

    rows = spec["eval"]
    if len(answers) != len(rows):
        raise PodiscoError(f"{len(answers)} answers for {len(rows)} evaluation prompts")
    if spec["name"] == "chat":
        result = chat.grade(judge, [chat.ChatQuestion(**q) for q in rows], [list(a) for a in answers])
        return {"score": result.score, "stderr": result.stderr, "judged": result.graded}
    if spec["name"] == "alpaca":
        rate = alpaca.rate_outputs(judge, rows, list(answers), [r["output"] for r in rows], "reference outputs", seed)
        score, stderr = rate.length_controlled, rate.lc_stderr
    else:
        rate = tldr.rate_summaries(judge, rows, list(answers), [r["reference"] for r in rows], "human reference", seed)
        score, stderr = rate.win_rate, rate.stderr
    return {"score": score, "stderr": stderr, "judged": rate.judged, "win_rate": rate.win_rate}


SWEEP_FIELDS = ("loss", "beta", "seed", "score", "stderr", "judged")


def sweep(
    spec: dict,
    losses: Sequence[str],
    betas: Sequence[float],
    seeds: Sequence[int],
    out: str | Path,
    judge,
    loss_fns: dict[str, LossFn] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Every (loss, beta, seed): train and answer, then judge; ``sweep.csv`` at the end. Each cell keeps its
    answers as soon as they exist and its scores once judged (``cells/<spec hash>/``), so an interrupted sweep,
    or one whose judge failed, resumes without training again."""
    out = Path(out)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    rows = []
    for loss in losses:
        for beta in betas:
            for seed in seeds:
                cell = out / "cells" / key / f"{loss}-{beta:g}-seed{seed}.json"
                done = json.loads(cell.read_text()) if cell.exists() else {}
                if "answers" not in done:
                    run_dir = out / "runs" / f"{loss}-{beta:g}-seed{seed}"
                    fn = (loss_fns or {}).get(loss)
                    done = train_and_answer(spec, loss, beta, seed, run_dir, fn, log=lambda _: None)
                    _write_cell(cell, done)  # the answers survive a judge that fails next
                if "score" not in done:
                    try:
                        done = {**done, **score_answers(spec, done["answers"], judge, seed)}
                    except PodiscoError as error:  # LLMError too: unreachable, refused, or no usable verdict
                        raise PodiscoError(
                            f"judging {loss} beta={beta:g} seed={seed} failed: {error}\nits answers are kept in "
                            f"{cell}; the same sweep again judges them without training"
                        ) from error
                    _write_cell(cell, done)
                rows.append({"loss": loss, "beta": beta, "seed": seed, **{k: done[k] for k in SWEEP_FIELDS[3:]}})
                log(f"{loss} beta={beta:g} seed={seed}: score {done['score']:.4f} ({done['judged']} judged)")
    write_csv(out / "sweep.csv", rows, SWEEP_FIELDS)
    return rows


def _write_cell(path: Path, values: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(values))
