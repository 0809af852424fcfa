"""Telling a Hugging Face hub id from a local path that does not exist (so a typo is not sent to the hub)."""

from __future__ import annotations

LOCAL_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".yaml", ".yml", ".safetensors", ".bin")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name``: two non-empty parts, not a relative or absolute path, not a data or weights file."""
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not name.startswith((".", "/", "~"))
        and not name.lower().endswith(LOCAL_FILE_SUFFIXES)
    )
