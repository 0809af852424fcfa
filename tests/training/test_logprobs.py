"""Completion log-probs against a naive per-sequence computation, in both batch layouts."""

from __future__ import annotations

import pytest
import torch

from podisco.data import PreferenceExample, collate_preference, collate_sft, tokenize_pairs, validate_rows
from podisco.training.logprobs import CompletionScorer, sequence_logps
from tests.training.tiny import make_rows


def naive_logps(model, prompt: list[int], completion: list[int]) -> float:
    """One unpadded sequence, full log-softmax, sum over the completion tokens."""
    ids = torch.tensor([prompt + completion])
    logp = model(ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(prompt) + j - 1, tok]) for j, tok in enumerate(completion))


@pytest.fixture
def examples(tokenizer):
    rows, _ = validate_rows(make_rows(5, seed=3))
    examples, report = tokenize_pairs(rows, tokenizer, max_length=64)
    assert report.kept == 5
    return examples


@pytest.mark.parametrize("layout", ["concat", "shared"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk_tokens", [8192, 3])
def test_layouts_match_naive_log_probs(tiny_model_factory, examples, layout, attn, chunk_tokens):
    model = tiny_model_factory(attn_implementation=attn).eval()
    batch = collate_preference(examples, pad_id=0, layout=layout, pad_to_multiple_of=8)
    with torch.no_grad():
        got = sequence_logps(CompletionScorer(model, chunk_tokens), batch, 2 * len(examples))
        want = [naive_logps(model, e.prompt_ids, e.chosen_ids) for e in examples]
        want += [naive_logps(model, e.prompt_ids, e.rejected_ids) for e in examples]
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)
    assert batch.chosen_lengths.tolist() == [len(e.chosen_ids) for e in examples]


def test_chunked_gradients_match_unchunked(tiny_model_factory, examples):
    grads = []
    for chunk in (8192, 4):
        model = tiny_model_factory()
        batch = collate_preference(examples, pad_id=0, layout="shared")
        sequence_logps(CompletionScorer(model, chunk), batch, 2 * len(examples)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_shared_layout_encodes_the_prompt_once(examples):
    concat = collate_preference(examples, pad_id=0, layout="concat")
    shared = collate_preference(examples, pad_id=0, layout="shared")
    prompt_tokens = sum(len(e.prompt_ids) for e in examples)
    assert concat.num_tokens == shared.num_tokens == int(concat.attention_mask.sum())
    assert int(concat.attention_mask.sum()) - prompt_tokens == sum(
        len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples
    )


def test_sft_batch_scores_completions_only(tiny_model_factory):
    from podisco.data import SFTExample

    model = tiny_model_factory().eval()
    items = [SFTExample(0, [3, 4], [5, 6, 0]), SFTExample(1, [], [7, 8, 9, 0])]
    batch = collate_sft(items, pad_id=0)
    with torch.no_grad():
        got = sequence_logps(CompletionScorer(model), batch, 2)
        want = torch.tensor([naive_logps(model, [3, 4], [5, 6, 0]), naive_logps(model, [7], [8, 9, 0])])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert batch.chosen_lengths.tolist() == [3.0, 3.0]  # no context before the first token of example 1


def test_empty_prompt_pairs_skip_the_unpredictable_first_token(tiny_model_factory):
    model = tiny_model_factory().eval()
    examples = [PreferenceExample(0, [], [3, 4, 0], [5, 0])]
    with torch.no_grad():
        for layout in ("concat", "shared"):
            batch = collate_preference(examples, pad_id=0, layout=layout)
            got = sequence_logps(CompletionScorer(model), batch, 2)
            want = torch.tensor([naive_logps(model, [3], [4, 0]), naive_logps(model, [5], [0])])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
