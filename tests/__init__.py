"""The test suite. A package only so that `tests.support` (the shared test helpers) is importable."""
