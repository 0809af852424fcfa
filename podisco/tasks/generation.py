"""Generating answers with a trained causal LM: chat templates, left padding, seeded sampling or greedy.

Uses the tokenizer's chat template when it has one (the paper's zephyr-7b-gemma-sft does), else a plain
"User: ... / Assistant:" transcript. bf16 autocast on CUDA. vLLM is used when installed and asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


def generate_vllm(model_path: str, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0):
    """The same with vLLM, for 7B-scale models on GPUs (``pip install vllm``)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise RuntimeError("vLLM is not installed; drop --vllm or pip install vllm") from error
    llm = LLM(model=model_path, dtype="bfloat16")
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature)
    return [o.outputs[0].text.strip() for o in llm.generate(list(prompts), params)]
