"""The guides' documents as the repository ships them in `examples/` (the only place they are read from).

Each step of the two LoRA adapter rollout guides is a ConfigMap manifest,
`examples/<guide>/<NN>-<what>.yaml`, whose `data` holds the file the sidecar mounts
(`configmap.yaml` for adapters, `rules.yaml` for rewrite rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# The LoRA adapter rollout guides with one ConfigMap manifest per step.
GUIDES = ("qwen3-32b-rewrite", "llama3-8b-instruct-inferencemodel")


@dataclass(frozen=True)
class Seed:
    """One step of a guide: the manifest's path and the mounted files of its ConfigMap."""

    guide: str
    path: Path
    name: str  # the ConfigMap's metadata.name
    data: dict[str, str]  # key -> the file the sidecar sees

    @property
    def step(self) -> str:
        """The file name without `.yaml`, e.g. `02-rules-90-10`."""
        return self.path.stem


def load_seed(path: Path) -> Seed:
    """The ConfigMap manifest at `path` (under examples/)."""
    manifest: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("kind") != "ConfigMap":
        raise ValueError(f"{path} is not a ConfigMap manifest")
    data = manifest.get("data") or {}
    return Seed(
        guide=path.parent.name,
        path=path,
        name=str(manifest["metadata"]["name"]),
        data={str(k): str(v) for k, v in data.items()},
    )


def guide_seeds(guide: str) -> list[Seed]:
    """Every step of `guide`, in order."""
    directory = EXAMPLES / guide
    if not directory.is_dir():
        raise FileNotFoundError(f"no guide {guide!r} in {EXAMPLES}")
    return [load_seed(p) for p in sorted(directory.glob("*.yaml"))]


def all_seeds() -> list[Seed]:
    """Every step of every guide."""
    return [seed for guide in GUIDES for seed in guide_seeds(guide)]


def seed_file(guide: str, step: str) -> str:
    """The one mounted file of step `step` (e.g. `00-adapters`) of `guide`."""
    seed = load_seed(EXAMPLES / guide / f"{step}.yaml")
    (content,) = seed.data.values()
    return content
