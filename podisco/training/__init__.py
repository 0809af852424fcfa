"""Training: config dataclasses, log-probs, the preference trainer (one explicit loop), SFT, reference cache."""
