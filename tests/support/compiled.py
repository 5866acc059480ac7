"""The package as the image builds it: the proxy's per-request modules compiled by mypyc (setup.py).

`compiled_tree()` builds the wheel once per source tree (`LORA_SYNCER_COMPILE=1 pip wheel`, in a
copy of the sources, with this interpreter's setuptools and mypy) and unpacks it into a cache
directory; put that directory first on PYTHONPATH to run the compiled proxy. About two minutes
on a 2-core machine the first time, nothing after that until a source file changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_INPUTS = ("setup.py", "pyproject.toml", "README.md")


def _cache_dir() -> Path:
    base = os.environ.get("LORA_SYNCER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lora-syncer"
    )
    return Path(base) / "compiled"


def _sources(root: Path) -> list[Path]:
    files = [root / name for name in _INPUTS]
    files += sorted(p for p in (root / "lora_syncer").rglob("*") if p.is_file() and _kept(p))
    return files


def _kept(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so", ".c")


def tree_key(root: Path = ROOT) -> str:
    """Hash of everything the wheel is built from, and of the interpreter that builds it."""
    digest = hashlib.sha256(f"{sys.version}\n".encode())
    for path in _sources(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def compiled_tree(root: Path = ROOT) -> Path:
    """A directory holding the compiled package (`lora_syncer/` with extension modules)."""
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / tree_key(root)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others reuse it
        if (target / ".complete").exists():
            return target
        with tempfile.TemporaryDirectory(prefix="lora-syncer-compile-") as tmp:
            src = Path(tmp) / "src"
            for path in _sources(root):
                dest = src / path.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            wheels = Path(tmp) / "wheels"
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--disable-pip-version-check",
                    "--wheel-dir",
                    str(wheels),
                    str(src),
                ],
                env={**os.environ, "LORA_SYNCER_COMPILE": "1"},
                capture_output=True,
                text=True,
                check=False,
            )
            built = sorted(wheels.glob("lora_syncer-*.whl"))
            if proc.returncode != 0 or not built:
                raise RuntimeError(f"compiling the proxy failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            shutil.rmtree(target, ignore_errors=True)
            with zipfile.ZipFile(built[0]) as wheel:
                wheel.extractall(target)
        (target / ".complete").touch()
        builds = [p for p in cache.iterdir() if p.is_dir()]
        builds.sort(key=_finished, reverse=True)
        for old in builds[3:]:  # keep the three newest builds (this one among them)
            shutil.rmtree(old, ignore_errors=True)
    return target


def _finished(build: Path) -> float:
    """When a build finished; 0 for one that never did (removed first)."""
    try:
        return (build / ".complete").stat().st_mtime
    except FileNotFoundError:
        return 0.0
