"""examples/paper_discovered.jsonl, the replay of the paper's seven discovered losses (docs/results/
imdb-discovery.md): each record passes the gate and the battery and computes the registered β-consistent loss."""

import json
from pathlib import Path

import pytest
import torch

from podisco.discovery.child.battery import check_preference_loss
from podisco.discovery.child.candidate import preference_loss
from podisco.losses.registry import get_loss

RECORDS = [
    json.loads(line)
    for line in (Path(__file__).parents[2] / "examples" / "paper_discovered.jsonl").read_text().split("\n")
    if line
]


def test_the_replay_holds_the_seven_discovered_losses():
    assert [r["name"] for r in RECORDS] == ["discopop", "padll", "cell", "dbaql", "aql", "aqfl", "pfl"]


@pytest.mark.parametrize("record", RECORDS, ids=[r["name"] for r in RECORDS])
@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_each_record_is_the_registered_loss(record, beta):
    candidate = preference_loss(record["code"])
    check_preference_loss(candidate, beta)
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=generator) * 3 for _ in range(4))
    expected = get_loss(record["name"])(pc, pr, rc, rr, beta=beta)
    torch.testing.assert_close(candidate(pc, pr, rc, rr, beta=beta), expected, rtol=1e-5, atol=1e-6)


def test_batch_statistics_losses_get_a_fingerprint_and_a_curve():
    """DBAQL and AQFL take .var() / .std() of the batch: the one-pair curve is taken in a batch of two identical
    pairs, so both are fingerprinted (dedup works); only AQFL's curvature (std at zero spread) is undefined,
    which leaves out its extrema with the reason instead of rejecting a loss that trains."""
    from podisco.discovery.child.worker import _shape_summary

    for record in RECORDS:
        summary = _shape_summary(preference_loss(record["code"]), 0.05)
        assert summary["shape"]["nearest_known"][0][0] == record["name"]
        assert ("analysis_error" in summary["shape"]) == (record["name"] == "aqfl"), record["name"]
