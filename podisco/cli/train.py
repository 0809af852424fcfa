"""``podisco train`` and ``podisco sft``: train a causal LM from a TrainConfig (YAML, flags, ``--key=value``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from podisco.cli.common import beta, existing_dir, existing_file, usage_error
from podisco.errors import PodiscoError
from podisco.hub import looks_like_hub_id


def train_config(args: argparse.Namespace, extra: Sequence[str]):
    """The TrainConfig of ``--config``, the flags and the ``--key=value`` overrides, validated."""
    from podisco.training.config import TrainConfig, load_config

    overrides = []
    for flag, key in (("model", "model"), ("data", "data.path"), ("output_dir", "output_dir")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "loss", None) is not None:
        overrides.append(f"loss.name={args.loss}")
    if getattr(args, "beta", None) is not None:
        overrides.append(f"loss.beta={args.beta}")
    for item in extra:
        if not item.startswith("--") or "=" not in item:
            raise usage_error(args.parser_prog, f"unrecognized argument {item!r}; overrides look like --optim.lr=1e-5")
        overrides.append(item[2:])
    existing_file(args.config, "--config")
    config = load_config(TrainConfig, args.config, overrides)  # a bad YAML file is a ConfigError naming it
    config.validate()
    if not config.model or not config.data.path:
        raise PodiscoError("both a model (--model) and data (--data) are needed")
    # refused now, not after a tokenizer download: a local path that is not there (a hub id is checked on use)
    for what, source in (("--model", config.model), ("--data", config.data.path)):
        if not Path(source).expanduser().exists() and not looks_like_hub_id(source):
            raise PodiscoError(f"{what} {source} does not exist (and is not a hub id of the form owner/name)")
    if args.resume:
        existing_dir(args.resume, "--resume")
    return config


def cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from podisco.losses.forms import is_loss_file, load_loss_file
    from podisco.training.pipeline import train_from_config
    from podisco.training.preference import parse_loss

    config = train_config(args, extra)
    loss_fn = None
    if is_loss_file(config.loss.name):  # an exported discovery: path.py:NAME
        config.loss.name, loss_fn = load_loss_file(config.loss.name)
    else:
        parse_loss(config.loss.name)  # a misspelled loss fails before anything is loaded
    result, _, _ = train_from_config(config, loss_fn, resume_from=args.resume)
    print(
        f"trained {result.steps} steps; model in {result.output_dir / 'final'}; metrics in "
        f"{result.output_dir / 'metrics.jsonl'}"
    )
    return 0


def cmd_sft(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from podisco.data import load_rows, tokenize_sft
    from podisco.models import load_model, load_tokenizer
    from podisco.training.pipeline import maybe_lora
    from podisco.training.sft import train_sft

    config = train_config(args, extra)
    tokenizer = load_tokenizer(config.model)
    rows = load_rows(config.data.path, config.data.split)
    examples, report = tokenize_sft(rows, tokenizer, config.data.max_length, on_error=config.data.on_error)
    print(report)
    model = maybe_lora(load_model(config.model), config)
    result = train_sft(config, model, examples, tokenizer.pad_token_id, tokenizer, resume_from=args.resume)
    print(f"trained {result.steps} steps; model in {result.output_dir / 'final'}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("train", cmd_train, "preference-train a causal LM with any registered loss"),
        ("sft", cmd_sft, "supervised fine-tuning of a causal LM"),
    ):
        p = commands.add_parser(
            name,
            help=text,
            description=f"{text}. Further options as type-checked overrides: --optim.lr=1e-5 --batch_size=4 ...",
        )
        p.add_argument("--config", help="YAML file holding a TrainConfig")
        p.add_argument("--model", help="local folder or hub id")
        p.add_argument("--data", help="jsonl / json / csv / parquet file, saved datasets folder, or hub id")
        p.add_argument("--output-dir", dest="output_dir")
        p.add_argument("--resume", help="a checkpoint folder written by an earlier run")
        if name == "train":
            p.add_argument("--loss", help="registered loss, or a combination like sigmoid=0.8,sft=1")
            p.add_argument("--beta", type=beta)
        p.set_defaults(func=func, takes_overrides=True)
