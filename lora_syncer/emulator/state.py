"""The adapter registry and vLLM's rules for loading and unloading adapters.

`AdapterRegistry` is pure (no I/O): names, paths as sent, load order, and the checks vLLM makes
before it touches the engine, in vLLM's order. `probe_adapter` is the one function here that
reads the disk: it mirrors what the engine does with `lora_path` (resolve it, read
`adapter_config.json`, check the rank) and says which error vLLM would answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from lora_syncer.emulator.errors import ApiError, bad_input, not_found, worker_failure

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
_HUB_PART = r"[A-Za-z0-9](?:[\w.\-]{0,94}[\w])?"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")
_REQUIRED_PEFT_FIELDS = ("r", "lora_alpha", "target_modules")


def looks_like_hub_id(path: str) -> bool:
    """True for `org/name` as the Hugging Face hub spells repository ids."""
    return bool(_HUB_ID.fullmatch(path)) and ".." not in path and "--" not in path


class AdapterRegistry:
    """Served base names and registered adapters (name -> path as sent), in load order.

    `version` changes whenever the adapter set or a path changes, so views (the serialized
    `/v1/models`) can be cached until then.
    """

    def __init__(self, served_names: Sequence[str]) -> None:
        if not served_names:
            raise ValueError("at least one served model name is required")
        self.served_names: tuple[str, ...] = tuple(served_names)
        self._base = frozenset(self.served_names)
        self.adapters: dict[str, str] = {}
        self.version = 0

    def is_base_model(self, name: str) -> bool:
        """Whether `name` is one of the served base model names."""
        return name in self._base

    def check_load(self, name: str, path: str, load_inplace: bool) -> ApiError | None:
        """vLLM's checks before an adapter load, in its order; None when the load may proceed."""
        if not name or not path:
            return bad_input("Both 'lora_name' and 'lora_path' must be provided.")
        if name in self._base:
            return bad_input(f"The lora adapter '{name}' conflicts with a served base model.")
        if not load_inplace and name in self.adapters:
            return bad_input(
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                "in place, set 'load_inplace' to True."
            )
        return None

    def add(self, name: str, path: str) -> None:
        """Register (or, in place, re-point) an adapter; an existing name keeps its position."""
        self.adapters[name] = path
        self.version += 1

    def check_unload(self, name: str) -> ApiError | None:
        """vLLM's checks before an unload; None when the unload may proceed."""
        if not name:
            return bad_input("'lora_name' needs to be provided to unload a LoRA adapter.")
        if name not in self.adapters:
            return not_found(f"The lora adapter '{name}' cannot be found.")
        return None

    def remove(self, name: str) -> None:
        """Forget an adapter (vLLM only forgets the name; engine memory is not freed)."""
        del self.adapters[name]
        self.version += 1

    def clear(self) -> None:
        """Forget every adapter, as a server restart does."""
        self.adapters.clear()
        self.version += 1

    def served_model(self, requested: str | None) -> str | None:
        """The `model` a response carries for a request naming `requested`; None if it is not served.

        A missing model or any base alias is answered by the first served name, as vLLM does.
        """
        if not requested or requested in self._base:
            return self.served_names[0]
        if requested in self.adapters:
            return requested
        return None

    def unknown_model_error(self, requested: str) -> ApiError:
        """vLLM's 404 for inference naming a model that is neither a base model nor an adapter."""
        aliases = ", ".join(self.served_names)
        return not_found(f"The model `{requested}` does not exist. Valid aliases: {aliases}.", param="model")


def _not_found(name: str, path: str) -> ApiError:
    return not_found(f"Loading lora {name} failed: No adapter found for {path}")


def _rank_error(config: dict[str, object], max_lora_rank: int) -> str | None:
    rank = config.get("r")
    pattern = config.get("rank_pattern") or {}
    ranks = [rank, *(pattern.values() if isinstance(pattern, dict) else ())]
    numeric = [int(r) for r in ranks if isinstance(r, int | float) and not isinstance(r, bool)]
    if numeric and max(numeric) > max_lora_rank:
        return f"LoRA rank {max(numeric)} is greater than max_lora_rank {max_lora_rank}."
    return None


def probe_adapter(
    name: str,
    path: str,
    *,
    max_lora_rank: int,
    allow_hub_ids: bool,
    require_weights: bool = False,
) -> ApiError | None:
    """What vLLM's engine would say about loading `path`: None if the load succeeds.

    Blocking file-system reads: call it off the event loop.
    """
    if os.path.isabs(path):
        local = path
    elif path.startswith("~"):
        local = os.path.expanduser(path)
    elif os.path.exists(path):
        local = os.path.abspath(path)
    elif allow_hub_ids and looks_like_hub_id(path):
        return None  # a hub id: the emulator pretends the download worked
    else:
        return _not_found(name, path)
    config_path = os.path.join(local, ADAPTER_CONFIG)
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = f.read()
    except FileNotFoundError:
        return _not_found(name, path)
    except OSError as exc:  # e.g. NotADirectoryError: vLLM answers 500 with the OS error
        return worker_failure(str(exc))
    try:
        config = json.loads(raw)
    except ValueError as exc:
        return worker_failure(str(exc))
    if not isinstance(config, dict):
        return worker_failure(f"{ADAPTER_CONFIG} is not a JSON object")
    missing = {f for f in _REQUIRED_PEFT_FIELDS if f not in config}
    if missing:
        return worker_failure(f"Missing required configuration fields: {missing}")
    problems = []
    if config.get("use_dora"):
        problems.append("vLLM does not yet support DoRA.")
    rank_problem = _rank_error(config, max_lora_rank)
    if rank_problem:
        problems.append(rank_problem)
    if config.get("bias", "none") != "none":
        problems.append("Adapter bias is not supported.")
    if problems:
        return worker_failure(" ".join(problems))
    if require_weights and not any(os.path.isfile(os.path.join(local, w)) for w in WEIGHT_FILES):
        return worker_failure(f"{local} doesn't contain tensors")
    return None
