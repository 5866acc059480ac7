"""What this installation was built as: the proxy's per-request modules compiled by mypyc, or not."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path


def proxy_build() -> str:
    """`compiled` when the proxy's per-request modules are the mypyc build (as in the image), else `python`.

    Read from the files beside the package, importing nothing (not even `lora_syncer.proxy`), so
    `--version` stays cheap and `run` without rules keeps the proxy out of memory. An extension
    module is what Python imports when it sits next to the source. setup.py decides what is compiled.
    """
    proxy = Path(__file__).parent / "proxy"
    return (
        "compiled" if any((proxy / f"lane{suffix}").exists() for suffix in EXTENSION_SUFFIXES) else "python"
    )
