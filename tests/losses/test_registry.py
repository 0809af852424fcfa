"""The registry: names, aliases, suggestions, parameters, combinations, dtype promotion."""

from __future__ import annotations

import pytest
import torch

from podisco.losses import (
    TRL_LOSS_TYPES,
    UnknownLossError,
    check_params,
    combine,
    get_loss,
    get_spec,
    list_specs,
    register,
    resolve,
)

DISCOVERED = ("lrml", "padll", "aqfl", "aql", "cell", "pfl", "dbaql")


def _batch(b=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(b, generator=g, dtype=torch.float64) * 40 + 5).to(dtype) for _ in range(4)]


def test_every_required_loss_is_registered():
    names = {s.name for s in list_specs()}
    assert set(TRL_LOSS_TYPES) <= names and len(TRL_LOSS_TYPES) == 15
    assert {"kto_pair", "simpo"} <= names
    for base in DISCOVERED:
        spec = get_spec(base)  # lrml resolves to TRL's discopop: the same beta-consistent formula
        assert spec.family in {"discovered", "trl"}
        original = get_spec(f"{base}_original")
        assert original.family == "discovered-original"
    for spec in list_specs():
        assert spec.formula and spec.source and spec.summary, spec.name


def test_aliases_and_case():
    assert get_spec("DPO").name == "sigmoid"
    assert get_spec("slic").name == "hinge"
    assert get_spec("lrml").name == "discopop"
    assert get_spec("kto").name == "kto_pair"
    assert get_spec("aot-unpaired").name == "aot_unpaired"


def test_misspelled_name_suggests_close_ones():
    with pytest.raises(UnknownLossError, match=r"Did you mean: .*discopop"):
        get_loss("discpop")
    with pytest.raises(UnknownLossError, match="podisco losses list"):
        get_loss("zzzzzz")


def test_unknown_parameter_is_rejected_with_the_accepted_ones():
    check_params("discopop", {"tau": 0.1})
    with pytest.raises(ValueError, match=r"takes no parameter 'label_smothing'.*label_smoothing"):
        check_params("sigmoid", {"label_smothing": 0.1})


def test_double_registration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register("sigmoid", family="trl", formula="x", source="y")(lambda *a, **k: a[0])


def test_combination_is_the_weighted_sum_of_its_parts():
    x = _batch()
    lengths = torch.tensor([3.0, 4, 5, 6, 7], dtype=torch.float64)
    kw = {"beta": 0.1, "chosen_lengths": lengths, "rejected_lengths": lengths}
    mixed = combine({"sigmoid": 0.8, "bco_pair": 0.2, "sft": 1.0})(*x, **kw)
    expected = 0.8 * get_loss("sigmoid")(*x, **kw) + 0.2 * get_loss("bco_pair")(*x, **kw) + get_loss("sft")(*x, **kw)
    torch.testing.assert_close(mixed, expected)
    assert resolve({"dpo": 1.0})(*x, **kw).shape == (5,)
    with pytest.raises(ValueError, match="at least one"):
        combine({})
    with pytest.raises(UnknownLossError):
        combine({"sigmod": 1.0})


def test_resolve_accepts_a_function_and_promotes_its_inputs():
    seen = {}

    def custom(pc, pr, rc, rr, *, beta, **_):
        seen["dtype"] = pc.dtype
        return -torch.nn.functional.logsigmoid(beta * (pc - pr - rc + rr))

    out = resolve(custom)(*_batch(dtype=torch.bfloat16), beta=0.1)
    assert seen["dtype"] == torch.float32 and out.dtype == torch.float32
    with pytest.raises(TypeError, match="a loss is a name"):
        resolve(3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_losses_compute_in_float32_or_wider(dtype):
    x = _batch(dtype=dtype)
    lengths = torch.full((5,), 4.0)
    for spec in list_specs():
        out = spec.fn(*x, beta=0.1, chosen_lengths=lengths, rejected_lengths=lengths, **spec.params)
        assert out.dtype == torch.float32, spec.name
        assert out.shape == (5,), spec.name
