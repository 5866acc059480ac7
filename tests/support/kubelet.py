"""ConfigMap volumes written the way kubelet writes them (lora_syncer.kubelet does the writing)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lora_syncer.kubelet import ConfigMapVolume

__all__ = ["ConfigMapVolume", "configmap_volume"]


def configmap_volume(directory: Path, files: Mapping[str, str | bytes] | None = None) -> ConfigMapVolume:
    """A ConfigMap volume in `directory`, holding `files` (key -> content) when given."""
    volume = ConfigMapVolume(directory)
    if files is not None:
        volume.write(files)
    return volume
