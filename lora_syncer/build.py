"""What this installation was built as: the proxy's per-request modules compiled by mypyc, or not."""

from __future__ import annotations

import importlib.util


def proxy_build() -> str:
    """`compiled` when the proxy's per-request modules are the mypyc build (as in the image), else `python`.

    Looked up without importing the proxy, so `--version` stays cheap. setup.py decides what is compiled.
    """
    spec = importlib.util.find_spec("lora_syncer.proxy.lane")
    origin = spec.origin if spec is not None else None
    return "compiled" if origin is not None and not origin.endswith(".py") else "python"
