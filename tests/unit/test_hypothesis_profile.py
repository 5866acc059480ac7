"""The fuzz tier's Hypothesis profile does not leak into this tier when the whole suite runs.

tests/fuzz/conftest.py registers a derandomized 300-example profile; Hypothesis fixes a test's
settings when its module is imported, so the default in force now is what this tier's
properties get. (Collected after tests/fuzz in a full run, this module would see the fuzz
profile if it leaked.)
"""

from __future__ import annotations

from hypothesis import settings

AT_IMPORT = settings.default


def test_default_profile_at_import() -> None:
    """This tier's properties are built with Hypothesis's own defaults, not the fuzz profile."""
    assert AT_IMPORT is not None
    assert AT_IMPORT.derandomize is False
    assert AT_IMPORT.max_examples == settings.get_profile("default").max_examples
