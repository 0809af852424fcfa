"""``podisco task chat|alpaca|tldr``: the LLM-judged tasks (any OpenAI-compatible judge endpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _judge(args: argparse.Namespace):
    from podisco.tasks.judge import make_judge

    return make_judge(args.judge_model, args.judge_base_url, args.judge_cache)


def _model(path: str, engine: str = "transformers"):
    """The model (on the GPU if there is one) and its tokenizer; with vLLM, a ``VLLMModel`` for the model."""
    import torch

    from podisco.models import load_model, load_tokenizer
    from podisco.tasks.generation import VLLMModel, vllm_usable

    tokenizer = load_tokenizer(path)
    if engine == "vllm" or (engine == "auto" and vllm_usable()):
        return VLLMModel(path), tokenizer
    return load_model(path).to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def _report(judge) -> None:
    s = judge.stats
    print(f"judge: {s.requests} requests, {s.cache_hits} cached, {s.malformed} malformed replies, "
          f"{s.prompt_tokens} + {s.completion_tokens} tokens")  # fmt: skip


def cmd_chat(args: argparse.Namespace) -> int:
    from podisco.tasks.chat import evaluate_chat, load_questions

    judge = _judge(args)  # refused before a model is loaded when no call could succeed
    model, tokenizer = _model(args.model, args.engine)
    result = evaluate_chat(model, tokenizer, load_questions(args.questions, args.limit), judge, args.max_new_tokens)
    turns = ", ".join(f"turn {t}: {v:.2f}" for t, v in result.per_turn.items())
    print(f"chat score {result.score:.3f} (95% CI {result.ci95[0]:.3f}..{result.ci95[1]:.3f}; {result.graded} "
          f"graded turns; {turns})")  # fmt: skip
    _report(judge)
    return 0


def _print_rate(rate) -> None:
    print(f"vs {rate.against}: win rate {rate.win_rate:.3f} +- {rate.stderr:.3f}, length-controlled "
          f"{rate.length_controlled:.3f} +- {rate.lc_stderr:.3f} ({rate.judged} judged)")  # fmt: skip


def cmd_alpaca(args: argparse.Namespace) -> int:
    from podisco.tasks.alpaca import evaluate_alpaca, load_instructions

    judge = _judge(args)
    model, tokenizer = _model(args.model, args.engine)
    reference = _model(args.reference_model, args.engine)[0] if args.reference_model else None
    rows = load_instructions(args.instructions, args.limit)
    _print_rate(evaluate_alpaca(model, tokenizer, rows, judge, reference, args.max_new_tokens))
    _report(judge)
    return 0


def cmd_tldr(args: argparse.Namespace) -> int:
    from podisco.tasks.tldr import evaluate_tldr, load_posts

    judge = _judge(args)
    model, tokenizer = _model(args.model, args.engine)
    sft = _model(args.sft_model, args.engine)[0] if args.sft_model else None
    for rate in evaluate_tldr(model, tokenizer, load_posts(args.posts, args.limit), judge, sft, args.max_new_tokens):
        _print_rate(rate)
    _report(judge)
    return 0


def add_commands(task_sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, source: str, default: str) -> None:
        p.add_argument("--model", required=True, help="a trained model folder or hub id")
        p.add_argument(source, default=default, help="a local JSONL or a hub dataset id")
        p.add_argument("--limit", type=int, default=0)
        p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=256)
        p.add_argument("--judge-model", dest="judge_model", help="judge model (also $PODISCO_LLM_MODEL)")
        p.add_argument("--judge-base-url", dest="judge_base_url", help="OpenAI-compatible endpoint of the judge")
        p.add_argument("--judge-cache", dest="judge_cache", help="judge reply cache (default ~/.cache/podisco/judge)")
        p.add_argument(
            "--engine", default="auto", choices=["auto", "transformers", "vllm"],
            help="generation engine; auto: vLLM where installed and a GPU is present",
        )  # fmt: skip

    from podisco.tasks.alpaca import HUB_INSTRUCTIONS
    from podisco.tasks.chat import HUB_QUESTIONS
    from podisco.tasks.tldr import HUB_POSTS

    p = task_sub.add_parser("chat", help="MT-Bench style: multi-turn answers graded 1-10 by an LLM judge")
    common(p, "--questions", HUB_QUESTIONS)
    p.set_defaults(func=cmd_chat)
    p = task_sub.add_parser("alpaca", help="AlpacaEval style: pairwise win rate and length-controlled win rate")
    common(p, "--instructions", HUB_INSTRUCTIONS)
    p.add_argument("--reference-model", dest="reference_model", help="generate the references with this model")
    p.set_defaults(func=cmd_alpaca)
    p = task_sub.add_parser("tldr", help="TL;DR summaries: win rate vs the human reference (and the SFT model)")
    common(p, "--posts", HUB_POSTS)
    p.add_argument("--sft-model", dest="sft_model", help="also compare with this model's summaries")
    p.set_defaults(func=cmd_tldr)


def add_judged_task_arguments(p: argparse.ArgumentParser) -> None:
    """What ``discover`` and ``sweep`` need for chat/alpaca/tldr: the training setup, the prompts, the judge."""
    g = p.add_argument_group("LLM-judged tasks (chat, alpaca, tldr): train, answer the prompts, an LLM judges")
    g.add_argument("--train-config", dest="train_config", help="TrainConfig YAML: model, data, schedule")
    g.add_argument("--train-override", dest="train_override", action="append", help="TrainConfig key=value")
    g.add_argument("--eval-data", dest="eval_data", help="questions / instructions / posts (JSONL or hub id)")
    g.add_argument("--eval-limit", dest="eval_limit", type=int, default=0, help="evaluation prompts (0: all)")
    g.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=256)
    g.add_argument("--judge-model", dest="judge_model", help="judge model (also $PODISCO_LLM_MODEL)")
    g.add_argument("--judge-base-url", dest="judge_base_url", help="OpenAI-compatible endpoint of the judge")
    g.add_argument("--judge-cache", dest="judge_cache", help="judge reply cache (default ~/.cache/podisco/judge)")


def judged_task(args: argparse.Namespace):
    from podisco.errors import PodiscoError
    from podisco.tasks.judged import JudgedTask

    if not args.train_config:
        raise PodiscoError(f"--task {args.task} needs --train-config YAML (model, data, schedule)")
    return JudgedTask(
        args.task,
        args.train_config,
        args.eval_data or "",
        args.eval_limit,
        args.max_new_tokens,
        tuple(args.train_override or ()),
    )


def cmd_sweep_judged(args: argparse.Namespace, losses: list[str], loss_fns: dict, betas: list[float]) -> int:
    from podisco.cli import _table
    from podisco.reporting.frontier_plot import plot_scores
    from podisco.tasks.judged import SCORE_MEANING, prepare_spec, summarise, sweep

    judge = _judge(args)  # refused now, before any training, if no call could succeed
    spec = prepare_spec(judged_task(args), Path(args.out) / "prepared")
    rows = sweep(spec, losses, betas, range(args.seeds), args.out, judge, loss_fns)
    summary = summarise(rows)
    table = [
        (loss, f"{max(by.values()):.4f}", "  ".join(f"b={b:g}: {v:.3f}" for b, v in by.items()))
        for loss, by in sorted(summary.items(), key=lambda item: -max(item[1].values()))
    ]
    print(_table(table, ("loss", "best", f"{SCORE_MEANING[args.task]} per beta")))
    _report(judge)
    figure = plot_scores(summary, Path(args.out) / "scores.png", f"{args.task}: judged score", SCORE_MEANING[args.task])
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {figure}")
    return 0
