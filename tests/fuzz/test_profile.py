"""The fuzz tier's modules are built under its Hypothesis profile (derandomized, 300 examples, no deadline)."""

from __future__ import annotations

from hypothesis import settings

AT_IMPORT = settings.default


def test_fuzz_profile_at_import() -> None:
    """Modules of this tier see the "fuzz" profile while they are imported."""
    assert AT_IMPORT is not None
    assert (AT_IMPORT.derandomize, AT_IMPORT.max_examples, AT_IMPORT.deadline) == (True, 300, None)
