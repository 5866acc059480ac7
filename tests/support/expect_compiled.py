"""pytest plugin for the compiled tier: refuse to run unless the proxy imported is the mypyc build.

`tests/integration/test_proxy_compiled.py` runs the proxy's tests with `-p tests.support.expect_compiled`
from a directory holding the compiled package, so a path mix-up fails loudly instead of silently
testing the Python sources twice.
"""

from __future__ import annotations

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    from lora_syncer.build import proxy_build

    if proxy_build() != "compiled":
        raise pytest.UsageError("the compiled tier imported the Python sources of lora_syncer.proxy")
