"""Without TRL the integration says which extra to install (runs whether or not TRL is installed)."""

from __future__ import annotations

import importlib
import sys

import pytest

from podisco.errors import PodiscoError


def test_importing_the_trl_integration_without_trl_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` fail as if it were not installed
    monkeypatch.delitem(sys.modules, "podisco.integrations.trl", raising=False)
    with pytest.raises(PodiscoError, match=r"pip install 'podisco\[trl\]'"):
        importlib.import_module("podisco.integrations.trl")


def test_the_package_and_the_hook_do_not_need_trl(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)
    for name in ("podisco.integrations", "podisco.integrations.dpo_hook"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
