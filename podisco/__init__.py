"""podisco: preference-optimisation losses, a lean preference trainer, and LLM-driven loss discovery."""

__version__ = "0.1.0"
