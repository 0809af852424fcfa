"""Both batch layouts score exactly what a naive per-sequence forward pass scores, with a real (tiny) GPT-2."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from podisco.data import PreferenceExample, SFTExample, collate_preference, collate_sft, tokenize_pairs, validate_rows
from podisco.data.collate import BLOCKED

V, EOS = 64, 0
# Three pairs: prompt / chosen / rejected lengths all differ, chosen longer than rejected and the reverse.
EXAMPLES = [
    PreferenceExample(10, [5], [7, 8, 9, EOS], [11, EOS]),
    PreferenceExample(11, [3, 4, 5, 6, 7], [20], [21, 22, 23, 24, 25, EOS]),
    PreferenceExample(12, [30, 31, 32], [33, 34, EOS], [35, 36, 37]),
]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request):
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=V,
        n_positions=128,
        bos_token_id=EOS,
        eos_token_id=EOS,
        attn_implementation=request.param,
    )
    model = GPT2LMHeadModel(config).eval()
    assert model.config._attn_implementation == request.param
    return model


def naive_logps(model, prompt: list[int], completion: list[int]) -> float:
    """prompt + completion alone, unpadded: full log-softmax, summed over the completion tokens."""
    with torch.no_grad():
        logp = model(torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
    return sum(float(logp[len(prompt) + j - 1, token]) for j, token in enumerate(completion))


def batch_logps(model, batch) -> torch.Tensor:
    """The layout-agnostic scoring: one forward pass, then gather and sum per output slot."""
    with torch.no_grad():
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    assert torch.isfinite(logits).all()  # padding rows too: a NaN there would still poison a backward pass
    lp = logits.log_softmax(-1)[batch.score_row, batch.score_pos, batch.score_token]
    return torch.zeros(batch.num_slots, dtype=lp.dtype).index_add_(0, batch.score_seq, lp)


@pytest.fixture(scope="module")
def naive(model) -> torch.Tensor:
    """(2B,) naive log-probs of EXAMPLES: chosen completions, then rejected ones."""
    want = [naive_logps(model, e.prompt_ids, e.chosen_ids) for e in EXAMPLES]
    return torch.tensor(want + [naive_logps(model, e.prompt_ids, e.rejected_ids) for e in EXAMPLES])


@pytest.mark.parametrize("layout", ["concat", "shared"])
@pytest.mark.parametrize("pad_to_multiple_of", [None, 8])
def test_layouts_match_naive_log_probs(model, naive, layout, pad_to_multiple_of):
    batch = collate_preference(EXAMPLES, pad_id=EOS, layout=layout, pad_to_multiple_of=pad_to_multiple_of)
    torch.testing.assert_close(batch_logps(model, batch), naive, rtol=0, atol=1e-5)
    assert batch.chosen_lengths.tolist() == [4.0, 1.0, 3.0] and batch.rejected_lengths.tolist() == [2.0, 6.0, 3.0]
    assert batch.rows == [10, 11, 12] and batch.num_slots == 6


def test_tokenized_pairs_match_naive_log_probs(model, tokenizer):
    explicit, _ = validate_rows([{"prompt": "the movie ", "chosen": "was great", "rejected": "was bad and boring"}])
    implicit, _ = validate_rows([{"chosen": "what did you think? great", "rejected": "what did you think? awful"}])
    rows = explicit + implicit  # a merged boundary, then an implicit prompt
    examples, _ = tokenize_pairs(rows, tokenizer, max_length=64)
    examples = [
        PreferenceExample(e.row, *([t % V for t in ids] for ids in (e.prompt_ids, e.chosen_ids, e.rejected_ids)))
        for e in examples
    ]  # fold the 320-token vocabulary into the model's 64
    want = [naive_logps(model, e.prompt_ids, e.chosen_ids) for e in examples]
    want += [naive_logps(model, e.prompt_ids, e.rejected_ids) for e in examples]
    for layout in ("concat", "shared"):
        got = batch_logps(model, collate_preference(examples, pad_id=EOS, layout=layout))
        torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=1e-5)


def test_sft_batches_match_naive_log_probs(model):
    items = [SFTExample(0, [3, 4], [5, 6, EOS]), SFTExample(1, [], [7, 8, 9, EOS]), [10, 11]]
    batch = collate_sft(items, pad_id=EOS, pad_to_multiple_of=4)
    want = [
        naive_logps(model, [3, 4], [5, 6, EOS]),
        naive_logps(model, [7], [8, 9, EOS]),
        naive_logps(model, [10], [11]),
    ]
    torch.testing.assert_close(batch_logps(model, batch), torch.tensor(want), rtol=0, atol=1e-5)
    assert batch.chosen_lengths.tolist() == [3.0, 3.0, 1.0]  # no context before the first token without a prompt
    assert batch.rows == [0, 1, 2] and batch.num_slots == 3 and batch.num_tokens == 5 + 4 + 2
    assert not batch.rejected_lengths.any() and int(batch.score_seq.max()) == 2


def test_empty_prompt_pairs_skip_the_unpredictable_first_token(model):
    examples = [PreferenceExample(0, [], [3, 4, EOS], [5, EOS])]
    want = torch.tensor([naive_logps(model, [3], [4, EOS]), naive_logps(model, [5], [EOS])])
    for layout in ("concat", "shared"):
        batch = collate_preference(examples, pad_id=EOS, layout=layout)
        torch.testing.assert_close(batch_logps(model, batch), want, rtol=0, atol=1e-5)
        assert batch.chosen_lengths.tolist() == [2.0] and batch.rejected_lengths.tolist() == [1.0]


def test_shared_layout_structure():
    batch = collate_preference(EXAMPLES, pad_id=EOS, layout="shared", pad_to_multiple_of=8)
    b, t = 3, 16  # longest row: 5 + 1 + 6 = 12 tokens, padded to 16
    assert batch.input_ids.shape == (b, t) and batch.attention_mask.shape == (b, 1, t, t)
    assert batch.attention_mask.dtype == torch.float32 and set(batch.attention_mask.unique().tolist()) == {0.0, BLOCKED}
    allowed = batch.attention_mask[:, 0] == 0
    assert allowed.diagonal(dim1=1, dim2=2).all()  # every query, padding included, sees at least itself
    # Pair 1: prompt 0..4, chosen 5, rejected 6..11, padding 12..15.
    assert batch.position_ids[1].tolist() == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 0, 0, 0, 0]
    assert not allowed[1, 6:12, 5].any() and allowed[1, 6:12, :5].all()  # rejected: prompt yes, chosen no
    assert not allowed[1, :12, 12:].any()  # real queries never see padding keys
    assert allowed[1, 12:, 12:].equal(torch.eye(4, dtype=torch.bool))  # padding queries see only themselves
    # The first chosen and the first rejected token are both predicted by the last prompt position.
    first = [(int(r), int(p)) for r, p, s in zip(batch.score_row, batch.score_pos, batch.score_seq, strict=True)]
    seqs = batch.score_seq.tolist()
    assert first[seqs.index(1)] == (1, 4) and first[seqs.index(4)] == (1, 4)


def test_concat_layout_structure_and_token_count():
    concat = collate_preference(EXAMPLES, pad_id=EOS, layout="concat")
    shared = collate_preference(EXAMPLES, pad_id=EOS, layout="shared")
    assert concat.input_ids.shape == (6, 11) and concat.attention_mask.dtype == torch.long
    assert concat.input_ids[4].tolist() == [3, 4, 5, 6, 7, 21, 22, 23, 24, 25, EOS]  # pair 1's rejected row
    assert concat.position_ids[0].tolist() == [0, 1, 2, 3, 4] + [0] * 6  # padding: position 0
    # TRL's num_tokens (prompt counted twice per pair) in both layouts, though "shared" feeds the prompt once.
    assert concat.num_tokens == shared.num_tokens == int(concat.attention_mask.sum()) == 9 * 2 + 8 + 11
    assert concat.score_token.equal(shared.score_token) and concat.score_seq.equal(shared.score_seq)


def test_to_moves_and_casts_the_additive_mask():
    batch = collate_preference(EXAMPLES, pad_id=EOS, layout="shared").to("cpu", mask_dtype=torch.bfloat16)
    assert batch.attention_mask.dtype == torch.bfloat16 and batch.input_ids.dtype == torch.long
    assert batch.rows == [10, 11, 12] and batch.num_tokens == 37
    concat = collate_preference(EXAMPLES, pad_id=EOS).to("cpu", mask_dtype=torch.bfloat16)
    assert concat.attention_mask.dtype == torch.long  # a 0/1 padding mask is left alone


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout must be 'concat' or 'shared'"):
        collate_preference(EXAMPLES, pad_id=0, layout="packed")
    with pytest.raises(ValueError, match="empty"):
        collate_preference([], pad_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate_sft([], pad_id=0)
