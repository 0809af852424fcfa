"""Preference and SFT data: load rows, validate them, tokenize, and collate batches for a causal LM.

rows (``load_rows``) -> normalised rows (``validate_rows``) -> token ids (``tokenize_pairs`` / ``tokenize_sft``)
-> batches (``collate_preference`` / ``collate_sft``). Bad input raises ``DataError`` or is listed in a
``DropReport``, always by its 0-based source row.
"""

from podisco.data.collate import PreferenceBatch, collate_preference, collate_sft
from podisco.data.errors import DataError, DropReport
from podisco.data.loading import load_rows
from podisco.data.tokenize import PreferenceExample, SFTExample, tokenize_pairs, tokenize_sft
from podisco.data.validate import validate_rows

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
