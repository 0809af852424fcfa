"""Fitness tasks, each with a name and a version that changes whenever anything changes its numbers."""
