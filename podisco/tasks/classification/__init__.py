"""The classification sanity case: digits (bundled) and CIFAR-10 (a local copy)."""
