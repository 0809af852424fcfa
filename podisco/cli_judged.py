"""``podisco task chat|alpaca|tldr``: the LLM-judged tasks (any OpenAI-compatible judge endpoint)."""

from __future__ import annotations

import argparse


def _judge(args: argparse.Namespace):
    from podisco.tasks.judge import make_judge

    return make_judge(args.judge_model, args.judge_base_url, args.judge_cache)


def _model(path: str):
    from podisco.models import load_model, load_tokenizer

    model, tokenizer = load_model(path), load_tokenizer(path)
    import torch

    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def _report(judge) -> None:
    s = judge.stats
    print(f"judge: {s.requests} requests, {s.cache_hits} cached, {s.malformed} malformed replies, "
          f"{s.prompt_tokens} + {s.completion_tokens} tokens")  # fmt: skip


def cmd_chat(args: argparse.Namespace) -> int:
    from podisco.tasks.chat import evaluate_chat, load_questions

    model, tokenizer = _model(args.model)
    judge = _judge(args)
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

    model, tokenizer = _model(args.model)
    reference = _model(args.reference_model)[0] if args.reference_model else None
    judge = _judge(args)
    rows = load_instructions(args.instructions, args.limit)
    _print_rate(evaluate_alpaca(model, tokenizer, rows, judge, reference, args.max_new_tokens))
    _report(judge)
    return 0


def cmd_tldr(args: argparse.Namespace) -> int:
    from podisco.tasks.tldr import evaluate_tldr, load_posts

    model, tokenizer = _model(args.model)
    sft = _model(args.sft_model)[0] if args.sft_model else None
    judge = _judge(args)
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
