import pytest
import torch
import torch.nn.functional as F

from podisco.discovery.child.battery import BatteryError, check_classification_loss, check_preference_loss
from podisco.losses.registry import get_loss


def _dpo(pc, pr, rc, rr, *, beta):
    return -F.logsigmoid(beta * ((pc - pr) - (rc - rr)))


def test_registered_losses_pass_and_batch_statistics_are_flagged():
    assert check_preference_loss(_dpo, 0.05) == {"batch_dependent": False}
    for name in ("hinge", "padll", "discopop", "cell"):
        check_preference_loss(get_loss(name), 0.05)
    assert check_preference_loss(get_loss("aqfl"), 0.05)["batch_dependent"]


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (lambda pc, pr, rc, rr, *, beta: _dpo(pc, pr, rc, rr, beta=beta).mean(), "one loss per pair"),
        (lambda pc, pr, rc, rr, *, beta: (rc - rr) * 0 + pc.detach() * 0, "does not depend on the policy"),
        (lambda pc, pr, rc, rr, *, beta: torch.exp(-(pc - pr) * 50), "not finite"),
        (lambda pc, pr, rc, rr, *, beta: 0 * pc + 0 * pr, "zero everywhere"),
        (lambda pc, pr, rc, rr, *, beta: pc - pr + torch.rand_like(pc), "deterministic"),
        (lambda pc, pr, rc, rr, *, beta: [1.0], "torch tensor"),
        (lambda pc, pr, rc, rr, *, beta: pc[:3], r"got \(3,\)"),
        (lambda pc, pr, rc, rr, *, beta: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_each_failure_is_named(loss, message):
    with pytest.raises(BatteryError, match=message):
        check_preference_loss(loss, 0.05)


def test_classification_battery():
    check_classification_loss(lambda logits, y: F.cross_entropy(logits, y, reduction="none"))
    with pytest.raises(BatteryError, match="one loss per example"):
        check_classification_loss(lambda logits, y: F.cross_entropy(logits, y))
    with pytest.raises(BatteryError, match="differentiable"):
        check_classification_loss(lambda logits, y: y * 1.0)
