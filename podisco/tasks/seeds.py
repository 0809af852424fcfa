"""The seed archives proposers start from, written as a proposer writes a loss.

Preference: the paper's seed archive (docs/paper.md §1): DPO, SLiC (hinge), IPO and KTO (pairwise form, one loss
per pair), in the paper's method form reading ``self.beta``. Classification: cross-entropy, label smoothing and
squared error, for the image-classification sanity case.
"""

from __future__ import annotations

PREFERENCE_SIGNATURE = (
    "def NAME(self, policy_chosen_logps: torch.FloatTensor, policy_rejected_logps: torch.FloatTensor, "
    "reference_chosen_logps: torch.FloatTensor, reference_rejected_logps: torch.FloatTensor) -> torch.FloatTensor:"
)
CLASSIFICATION_SIGNATURE = "def NAME(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:"

_LOGITS = """    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
"""
_SIGNATURE = PREFERENCE_SIGNATURE.replace(": torch.FloatTensor", "").replace(" -> torch.FloatTensor", "")

PREFERENCE_SEEDS: dict[str, str] = {
    "dpo": _SIGNATURE.replace("NAME", "dpo") + "\n" + _LOGITS + "    return -F.logsigmoid(self.beta * logits)\n",
    "slic": _SIGNATURE.replace("NAME", "slic") + "\n" + _LOGITS + "    return torch.relu(1 - self.beta * logits)\n",
    "ipo": _SIGNATURE.replace("NAME", "ipo") + "\n" + _LOGITS + "    return (logits - 1 / (2 * self.beta)) ** 2\n",
    "kto": _SIGNATURE.replace("NAME", "kto")
    + """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(self.beta * (chosen_logratios - rejected_kl))
    rejected_losses = 1 - torch.sigmoid(self.beta * (chosen_kl - rejected_logratios))
    return 0.5 * (chosen_losses + rejected_losses)
""",
}
CLASSIFICATION_SEEDS: dict[str, str] = {
    "cross_entropy": "def cross_entropy(logits, targets):\n"
    '    return F.cross_entropy(logits, targets, reduction="none")\n',
    "label_smoothing": "def label_smoothing(logits, targets):\n"
    '    return F.cross_entropy(logits, targets, reduction="none", label_smoothing=0.1)\n',
    "squared_error": "def squared_error(logits, targets):\n"
    "    one_hot = F.one_hot(targets, logits.shape[-1]).float()\n"
    "    return ((torch.softmax(logits, -1) - one_hot) ** 2).sum(-1)\n",
}
