"""A real CPU vLLM for tests and the demo: asset builder (``assets.py``, run as a script with the
vLLM environment's python) and the process launcher (``launcher``, importable from here)."""

from lora_syncer.realvllm.launcher import (
    Assets,
    RealVLLM,
    RealVLLMError,
    VLLMEnvMissing,
    build_assets,
    default_venv,
    find_venv,
)

__all__ = [
    "Assets",
    "RealVLLM",
    "RealVLLMError",
    "VLLMEnvMissing",
    "build_assets",
    "default_venv",
    "find_venv",
]
