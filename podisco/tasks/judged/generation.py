"""Generating answers with a trained causal LM: chat templates, left padding, seeded sampling or greedy.

Uses the tokenizer's chat template when it has one (the paper's zephyr-7b-gemma-sft does), else a plain
"User: ... / Assistant:" transcript. bf16 autocast on CUDA. A ``VLLMModel`` in place of the model generates
with vLLM (``podisco task ... --engine vllm``, or ``auto`` where vLLM is installed and a GPU is present).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from podisco.errors import PodiscoError


def chat_prompt(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    temperature: float = 0.0,
) -> list[str]:
    """One completion per prompt (greedy when temperature is 0), decoded without the prompt."""
    if isinstance(model, VLLMModel):
        return model.texts(prompts, max_new_tokens, seed, temperature)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    torch.manual_seed(seed)
    outputs: list[str] = []
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    for start in range(0, len(prompts), batch_size):
        batch = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        with autocast:
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_k=0 if temperature > 0 else None,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row in out[:, width:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return outputs


class VLLMModel:
    """A model folder (or hub id) served by vLLM, for 7B-scale generation on GPUs (``pip install vllm``). Pass
    it wherever a transformers model goes: ``generate`` hands its prompts to vLLM in one batch."""

    def __init__(self, path: str) -> None:
        try:
            from vllm import LLM
        except ImportError as error:
            raise PodiscoError("vLLM is not installed: pip install vllm, or use --engine transformers") from error
        self.path = path
        # 0.4 of the GPU each: a model and its reference (alpaca, tldr) fit side by side; 7B weights are 14 GB
        self.llm = LLM(model=path, dtype="bfloat16", gpu_memory_utilization=0.4)

    def texts(self, prompts: Sequence[str], max_new_tokens: int, seed: int, temperature: float) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        return [o.outputs[0].text.strip() for o in self.llm.generate(list(prompts), params)]


def vllm_usable() -> bool:
    """vLLM installed and a CUDA GPU present: what ``--engine auto`` needs to pick it."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
