"""Model and tokenizer loading: local folders or hub ids, plus tiny offline builders for tests and CPU tasks."""

from podisco.models.loading import build_tiny_gpt2, load_model, load_tokenizer

__all__ = ["build_tiny_gpt2", "load_model", "load_tokenizer"]
