"""Build hook: with LORA_SYNCER_COMPILE=1, compile the proxy's per-request modules with mypyc.

Everything else about the package is declared in pyproject.toml. Without the variable (the
default, and every editable install) the wheel is pure Python and behaves the same, only slower:
the compiled modules are the same typed sources (`mypy --strict`), turned into a C extension.
The image is built with it (see the Dockerfile); `docs/proxy.md` says what it buys.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# Modules on the proxy's per-request path. service.py only wires the proxy together at start-up.
_NOT_COMPILED = {"__init__.py", "service.py"}


def compiled_modules() -> list[str]:
    """The source files mypyc compiles, relative to this file."""
    here = Path(__file__).parent
    return sorted(
        p.relative_to(here).as_posix()
        for p in (here / "lora_syncer" / "proxy").glob("*.py")
        if p.name not in _NOT_COMPILED
    )


def _ext_modules() -> list[object]:
    flag = os.environ.get("LORA_SYNCER_COMPILE", "0")
    if flag not in ("0", "1"):
        sys.exit(f"error: LORA_SYNCER_COMPILE={flag!r}: expected 1 (compile with mypyc) or 0")
    if flag == "0" or any(arg in ("dist_info", "egg_info") for arg in sys.argv):
        return []  # metadata does not depend on the extension: compile once, for the wheel
    if any(arg in ("editable_wheel", "develop") for arg in sys.argv):
        # In-place extensions would shadow the sources being edited: edits would silently not run.
        sys.exit(
            "error: LORA_SYNCER_COMPILE=1 builds a wheel (pip wheel .); unset it for an editable install"
        )
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit("error: LORA_SYNCER_COMPILE=1 needs mypy in the build environment (pip install mypy)")
    return list(mypycify(compiled_modules(), opt_level="3", group_name="lora_syncer_proxy"))


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import compiled_modules()
    setup(ext_modules=_ext_modules())
