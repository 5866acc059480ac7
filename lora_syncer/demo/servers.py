"""The model server the demo walks against: the emulator (default) or a real CPU vLLM."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.realvllm.launcher import SETUP_HINT, RealVLLM, default_venv, find_venv

# The base model the guide's ConfigMap names (defaultBaseModel), served under that name.
SERVED_MODEL_NAME = "Qwen/Qwen3-32B"


class ModelServer(Protocol):
    """What the walkthrough needs from a model server."""

    @property
    def url(self) -> str: ...

    @property
    def description(self) -> str: ...

    def sources(self, adapter_ids: tuple[str, ...]) -> dict[str, str]:
        """Adapter id -> the `source` to write instead of the guide's (empty: keep the guide's)."""
        ...

    def set_fault(self, on: bool) -> None:
        """Make every load, unload and chat request fail (True) or behave again (False)."""
        ...

    async def __aenter__(self) -> ModelServer: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class EmulatorServer:
    """The in-process emulator: hub ids like `ttt421/nec119-small-segment-lora` load as they are."""

    def __init__(self) -> None:
        self.emulator = Emulator(EmulatorConfig(served_model_name=SERVED_MODEL_NAME))

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def description(self) -> str:
        return f"vLLM emulator at {self.url} (serves {SERVED_MODEL_NAME})"

    def sources(self, adapter_ids: tuple[str, ...]) -> dict[str, str]:
        return {}

    def set_fault(self, on: bool) -> None:
        if on:
            self.emulator.faults.failure_rate = {"load": 1.0, "unload": 1.0, "chat": 1.0}
        else:
            self.emulator.reset_faults()

    async def __aenter__(self) -> EmulatorServer:
        await self.emulator.start("127.0.0.1", 0)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.emulator.stop()


class RealVLLMMissing(RuntimeError):
    """`--real-vllm` without the real-vLLM environment."""


class RealVLLMServer:
    """A real CPU vLLM with a tiny generated model; each adapter version gets its own folder.

    Nothing can be downloaded here, so the guide's hub id is replaced by local adapter folders,
    a different one per version (a new version must come from a new path).
    """

    def __init__(self, workdir: Path) -> None:
        venv = find_venv()
        if venv is None:
            raise RealVLLMMissing(
                f"--real-vllm needs the real vLLM environment, which is not ready at {default_venv()}.\n"
                f"Create it with: {SETUP_HINT}   (or point LORA_SYNCER_VLLM_VENV at one)"
            )
        self.server = RealVLLM(venv, workdir, served_model_name=SERVED_MODEL_NAME, adapters=2)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def description(self) -> str:
        return f"real vLLM (CPU) at {self.url} (serves {SERVED_MODEL_NAME}, a tiny random model)"

    def sources(self, adapter_ids: tuple[str, ...]) -> dict[str, str]:
        dirs = self.server.adapter_dirs
        return {name: str(dirs[i % len(dirs)]) for i, name in enumerate(adapter_ids)}

    def set_fault(self, on: bool) -> None:
        if on:
            raise ValueError("fault injection needs the emulator, not --real-vllm")

    async def __aenter__(self) -> RealVLLMServer:
        await self.server.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.server.stop()
