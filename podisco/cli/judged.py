"""``podisco task chat|alpaca|tldr``: the LLM-judged tasks (any OpenAI-compatible judge endpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

from podisco.cli.common import existing_file, non_negative_int, positive_int, table
from podisco.errors import PodiscoError

TASKS = ("chat", "alpaca", "tldr")


def _judge(args: argparse.Namespace):
    from podisco.tasks.judged.judge import make_judge

    return make_judge(args.judge_model, args.judge_base_url, args.judge_cache)


def _model(path: str, engine: str = "transformers"):
    """The model (on the GPU if there is one) and its tokenizer; with vLLM, a ``VLLMModel`` for the model."""
    import torch

    from podisco.models import load_model, load_tokenizer
    from podisco.tasks.judged.generation import VLLMModel, vllm_usable

    tokenizer = load_tokenizer(path)
    if engine == "vllm" or (engine == "auto" and vllm_usable()):
        return VLLMModel(path), tokenizer
    return load_model(path).to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def _report(judge) -> None:
    s = judge.stats
    print(f"judge: {s.requests} requests, {s.cache_hits} cached, {s.malformed} malformed replies, "
          f"{s.prompt_tokens} + {s.completion_tokens} tokens")  # fmt: skip


def cmd_chat(args: argparse.Namespace) -> int:
    from podisco.tasks.judged.chat import HUB_QUESTIONS, evaluate_chat, load_questions

    judge = _judge(args)  # refused before a model is loaded when no call could succeed
    questions = load_questions(args.questions or HUB_QUESTIONS, args.limit)  # a bad file fails before a model
    model, tokenizer = _model(args.model, args.engine)
    result = evaluate_chat(model, tokenizer, questions, judge, args.max_new_tokens)
    turns = ", ".join(f"turn {t}: {v:.2f}" for t, v in result.per_turn.items())
    ci = f"95% CI {result.ci95[0]:.3f}..{result.ci95[1]:.3f}; " if result.ci95 else ""
    print(f"chat score {result.score:.3f} ({ci}{result.graded} graded turns; {turns})")
    _report(judge)
    return 0


def _print_rate(rate) -> None:
    from podisco.stats import Estimate, format_estimate

    raw = format_estimate(Estimate(rate.win_rate, rate.stderr, rate.judged), 3, signed=False)
    lc = format_estimate(Estimate(rate.length_controlled, rate.lc_stderr, rate.judged), 3, signed=False)
    print(f"vs {rate.against}: win rate {raw}, length-controlled {lc}")


def cmd_alpaca(args: argparse.Namespace) -> int:
    from podisco.tasks.judged.alpaca import HUB_INSTRUCTIONS, evaluate_alpaca, load_instructions

    judge = _judge(args)
    rows = load_instructions(args.instructions or HUB_INSTRUCTIONS, args.limit)  # a bad file fails before a model
    model, tokenizer = _model(args.model, args.engine)
    reference = _model(args.reference_model, args.engine)[0] if args.reference_model else None
    _print_rate(evaluate_alpaca(model, tokenizer, rows, judge, reference, args.max_new_tokens))
    _report(judge)
    return 0


def cmd_tldr(args: argparse.Namespace) -> int:
    from podisco.tasks.judged.tldr import HUB_POSTS, evaluate_tldr, load_posts

    judge = _judge(args)
    posts = load_posts(args.posts or HUB_POSTS, args.limit)  # a bad file fails before a model is loaded
    model, tokenizer = _model(args.model, args.engine)
    sft = _model(args.sft_model, args.engine)[0] if args.sft_model else None
    for rate in evaluate_tldr(model, tokenizer, posts, judge, sft, args.max_new_tokens):
        _print_rate(rate)
    _report(judge)
    return 0


def add_commands(task_sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, source: str, default: str) -> None:
        p.add_argument("--model", required=True, help="a trained model folder or hub id")
        p.add_argument(source, help=f"a local JSONL or a hub dataset id (default: {default})")
        p.add_argument("--limit", type=non_negative_int, default=0)
        p.add_argument("--max-new-tokens", dest="max_new_tokens", type=positive_int, default=256)
        p.add_argument("--judge-model", dest="judge_model", help="judge model (also $PODISCO_LLM_MODEL)")
        p.add_argument("--judge-base-url", dest="judge_base_url", help="OpenAI-compatible endpoint of the judge")
        p.add_argument("--judge-cache", dest="judge_cache", help="judge reply cache (default ~/.cache/podisco/judge)")
        p.add_argument(
            "--engine", default="auto", choices=["auto", "transformers", "vllm"],
            help="generation engine; auto: vLLM where installed and a GPU is present",
        )  # fmt: skip

    p = task_sub.add_parser("chat", help="MT-Bench style: multi-turn answers graded 1-10 by an LLM judge")
    common(p, "--questions", "the MT-Bench questions on the hub")
    p.set_defaults(func=cmd_chat)
    p = task_sub.add_parser("alpaca", help="AlpacaEval style: pairwise win rate and length-controlled win rate")
    common(p, "--instructions", "the AlpacaEval instructions on the hub")
    p.add_argument("--reference-model", dest="reference_model", help="generate the references with this model")
    p.set_defaults(func=cmd_alpaca)
    p = task_sub.add_parser("tldr", help="TL;DR summaries: win rate vs the human reference (and the SFT model)")
    common(p, "--posts", "the CarperAI TL;DR posts on the hub")
    p.add_argument("--sft-model", dest="sft_model", help="also compare with this model's summaries")
    p.set_defaults(func=cmd_tldr)


def add_judged_task_arguments(p: argparse.ArgumentParser) -> None:
    """What ``discover`` and ``sweep`` need for chat/alpaca/tldr: the training setup, the prompts, the judge."""
    g = p.add_argument_group("LLM-judged tasks (chat, alpaca, tldr): train, answer the prompts, an LLM judges")
    g.add_argument("--train-config", dest="train_config", help="TrainConfig YAML: model, data, schedule")
    g.add_argument("--train-override", dest="train_override", action="append", help="TrainConfig key=value")
    g.add_argument("--eval-data", dest="eval_data", help="questions / instructions / posts (JSONL or hub id)")
    g.add_argument("--eval-limit", dest="eval_limit", type=non_negative_int, default=0, help="prompts (0: all)")
    g.add_argument("--max-new-tokens", dest="max_new_tokens", type=positive_int, default=256)
    g.add_argument("--judge-model", dest="judge_model", help="judge model (also $PODISCO_LLM_MODEL)")
    g.add_argument("--judge-base-url", dest="judge_base_url", help="OpenAI-compatible endpoint of the judge")
    g.add_argument("--judge-cache", dest="judge_cache", help="judge reply cache (default ~/.cache/podisco/judge)")


def judged_task(args: argparse.Namespace):
    """The ``JudgedTask`` of ``--task chat|alpaca|tldr`` and its flags; refused without a ``--train-config``."""
    from podisco.tasks.judged.pipeline import JudgedTask

    if not args.train_config:
        raise PodiscoError(f"--task {args.task} needs --train-config YAML (model, data, schedule)")
    existing_file(args.train_config, "--train-config")
    return JudgedTask(
        args.task,
        args.train_config,
        args.eval_data or "",
        args.eval_limit,
        args.max_new_tokens,
        tuple(args.train_override or ()),
    )


def cmd_sweep_judged(args: argparse.Namespace, task, losses: list[str], loss_fns: dict, betas: list[float]) -> int:
    """``podisco sweep --task chat|alpaca|tldr``: ``task`` is ``judged_task(args)``, checked before the losses."""
    from podisco.reporting.frontier_plot import plot_scores
    from podisco.tasks.judged.pipeline import SCORE_MEANING, prepare_spec, sweep
    from podisco.tasks.sweep_summary import summarise_scores as summarise

    judge = _judge(args)  # refused now, before any training, if no call could succeed
    spec = prepare_spec(task, Path(args.out) / "prepared")
    rows = sweep(spec, losses, betas, range(args.seeds), args.out, judge, loss_fns)
    summary = summarise(rows)
    ranked = [
        (loss, f"{max(by.values()):.4f}", "  ".join(f"b={b:g}: {v:.3f}" for b, v in by.items()))
        for loss, by in sorted(summary.items(), key=lambda item: -max(item[1].values()))
    ]
    print(table(ranked, ("loss", "best", f"{SCORE_MEANING[args.task]} per beta")))
    _report(judge)
    figure = plot_scores(summary, Path(args.out) / "scores.png", f"{args.task}: judged score", SCORE_MEANING[args.task])
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {figure}")
    return 0
