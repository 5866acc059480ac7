"""Environment names of flags, for messages that point at a variable (`lora_syncer.options` reads them)."""

from __future__ import annotations

from lora_syncer.options.setting import ENV_PREFIX, env_name

__all__ = ["ENV_PREFIX", "env_name"]
