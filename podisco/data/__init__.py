"""Preference and SFT data: load rows, validate them, tokenize, and collate batches for a causal LM."""

from podisco.data.collate import PreferenceBatch, collate_preference, collate_sft
from podisco.data.loading import DataError, load_rows
from podisco.data.tokenize import PreferenceExample, SFTExample, tokenize_pairs, tokenize_sft
from podisco.data.validate import DropReport, validate_rows

__all__ = [
    "DataError",
    "DropReport",
    "PreferenceBatch",
    "PreferenceExample",
    "SFTExample",
    "collate_preference",
    "collate_sft",
    "load_rows",
    "tokenize_pairs",
    "tokenize_sft",
    "validate_rows",
]
