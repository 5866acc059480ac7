"""The emulator's start-up configuration (what a vLLM command line would fix for the process lifetime)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lora_syncer.emulator.faults import Faults

DEFAULT_SERVED_MODEL_NAME = "Qwen/Qwen3-32B"


def parse_lora_modules(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`["name=path", ...]` (vLLM's `--lora-modules` short form) -> `(("name", "path"), ...)`."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--lora-modules entry {item!r} must look like name=path")
        pairs.append((name.strip(), path.strip()))
    return tuple(pairs)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated vLLM server is started.

    `served_model_name` is the first `--served-model-name` (the one responses carry and adapters
    name as `parent`); `served_model_aliases` are further names for the same base model.
    `model` is the `--model` value shown as the base model's `root` (defaults to the served name).
    `faults` are the faults in force at start-up and after a fault reset.
    `max_loras` (vLLM's `--max-loras`, default 1) only shows in `/metrics` (`max_lora` label): the
    emulator does not limit how many adapters run at once. `max_model_len` bounds `max_tokens`.
    """

    served_model_name: str = DEFAULT_SERVED_MODEL_NAME
    served_model_aliases: tuple[str, ...] = ()
    model: str | None = None
    version: str = "0.32.0"
    max_lora_rank: int = 16
    max_loras: int = 1
    max_model_len: int = 4096
    runtime_lora_updating: bool = True
    allow_hub_ids: bool = True
    require_weights: bool = False
    enable_embeddings: bool = False
    lora_modules: tuple[tuple[str, str], ...] = ()
    default_max_tokens: int = 16
    max_generated_tokens: int = 4096
    seed: int | None = None
    access_log: bool = False
    faults: Faults = field(default_factory=Faults)

    @property
    def served_names(self) -> tuple[str, ...]:
        """All base model names, first one first."""
        return (self.served_model_name, *self.served_model_aliases)

    @property
    def model_root(self) -> str:
        """The base model's `root` in `/v1/models`."""
        return self.model if self.model is not None else self.served_model_name
