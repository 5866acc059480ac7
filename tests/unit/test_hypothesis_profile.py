"""The fuzz tier's Hypothesis profile does not leak into this tier when the whole suite runs.

tests/fuzz/conftest.py registers a derandomized 300-example profile; Hypothesis fixes a test's
settings when its module is imported, so the default in force now is what this tier's
properties get. (Collected after tests/fuzz in a full run, this module would see the fuzz
profile if it leaked.) The profile in force otherwise is Hypothesis's own choice: "default", or
"ci" (derandomized) when it detects a CI environment.
"""

from __future__ import annotations

from hypothesis import settings

AT_IMPORT = settings.default
NAME_AT_IMPORT = settings.get_current_profile_name()


def test_default_profile_at_import() -> None:
    """This tier's properties are built with Hypothesis's own profile, not the fuzz profile."""
    assert AT_IMPORT is not None
    assert NAME_AT_IMPORT in {"default", "ci"}
    expected = settings.get_profile(NAME_AT_IMPORT)
    assert (AT_IMPORT.derandomize, AT_IMPORT.max_examples) == (expected.derandomize, expected.max_examples)
    assert AT_IMPORT.max_examples != 300  # the fuzz profile's count
