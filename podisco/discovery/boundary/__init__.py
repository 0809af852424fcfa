"""Boundary code used on both sides of the sandbox: the static gate and the sandbox launcher."""
