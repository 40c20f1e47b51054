"""passes/select.py: which weights a compression pass touches (op filter, size threshold, include/exclude)."""

from __future__ import annotations

import pytest

from slimkit.errors import SlimkitError
from slimkit.passes.select import matches, select_names

CANDIDATES = [("encoder.0.weight", 4096), ("encoder.1.weight", 64), ("head.weight", 640), ("head.bias", 10)]


def test_matches_uses_shell_patterns_case_sensitively():
    assert matches("encoder.0.weight", ["encoder.*"])
    assert not matches("Encoder.0.weight", ["encoder.*"])
    assert not matches("head.weight", [])


def test_select_by_size_include_and_exclude():
    assert select_names(CANDIDATES, include=[], exclude=[], min_params=100, what="weight") == [
        "encoder.0.weight", "head.weight"]
    assert select_names(CANDIDATES, include=["encoder.*"], exclude=[], min_params=0, what="weight") == [
        "encoder.0.weight", "encoder.1.weight"]
    assert select_names(CANDIDATES, include=[], exclude=["*.bias", "head.*"], min_params=0, what="weight") == [
        "encoder.0.weight", "encoder.1.weight"]


def test_a_pattern_that_matches_nothing_names_the_candidates():
    with pytest.raises(SlimkitError, match="pattern 'decoder.*' matches no layer") as info:
        select_names(CANDIDATES, include=["decoder.*"], exclude=[], min_params=0, what="layer")
    assert "encoder.0.weight" in info.value.hint
