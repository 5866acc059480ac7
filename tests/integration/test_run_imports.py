"""Import discipline of `lora-syncer run` (issue 11): a sidecar imports only what its command and
its configuration use, so its memory stays in budget.

The real `python -m lora_syncer run` child runs with PYTHONPROFILEIMPORTTIME=1: Python itself
writes every module the process imports, when it imports it, to stderr. The child syncs its
file against the emulator, passes a resync, and is stopped; then its whole import log is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sync_harness import adapters_yaml, write_adapter_dir

from lora_syncer.emulator import Emulator
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.http import wait_until_answers
from tests.support.processes import Child, clean_env, run_args
from tests.support.wait import eventually

KEY = "configmap.yaml"
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")

# Never needed by a syncer without --rules or --adapter-cache: the proxy, the rollout controller
# and the rules parser (with pydantic) belong to --rules; the S3 client and the download cache to
# --adapter-cache with such sources; uvloop to the proxy's hot path; the emulator to tests.
NEVER = (
    "pydantic",
    "pydantic_core",
    "boto3",
    "botocore",
    "uvloop",
    "tenacity",
    "lora_syncer.proxy",
    "lora_syncer.rollout",
    "lora_syncer.config.rules",
    "lora_syncer.config_warnings",
    "lora_syncer.sources.cache",
    "lora_syncer.sources.fetch_s3",
    "lora_syncer.emulator",
    "lora_syncer.demo",
)


def imported(log: str) -> set[str]:
    """Every module named in a `-X importtime` log."""
    return {m.group(1) for line in log.splitlines() if (m := _IMPORT_LINE.match(line))}


def offending(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER))


@pytest.mark.parametrize("kind", ["local", "hub"])
async def test_run_imports_only_the_syncer(
    kind: str, emulator: Emulator, tmp_path: Path, free_port: Any
) -> None:
    """`run` with local or hub adapters and no --rules never imports pydantic, boto3, the proxy or the rollouts."""
    if kind == "local":
        adapters = [(name, str(write_adapter_dir(tmp_path / "adapters", name))) for name in ("a", "b")]
    else:
        adapters = [("hub-a", "org/adapter-a"), ("hub-b", "org/adapter-b")]
    vol = ConfigMapVolume(tmp_path / "cm")
    vol.write({KEY: adapters_yaml(adapters)})
    port = free_port()
    child = await Child.spawn(
        run_args(vol.path(KEY), emulator.url, port),
        tmp_path / "run.log",
        port,
        env=clean_env(PYTHONPROFILEIMPORTTIME="1"),
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await wait_until_answers(http, child.url + "/readyz", proc=child.proc, detail=child.log_text)

            async def resynced() -> bool:
                async with http.get(child.url + "/status") as resp:
                    body = await resp.json()
                return bool(body["syncer"]["sync"]["passes"] >= 2)

            await eventually(resynced, message="a resync after the first pass")
        assert emulator.loaded() == dict(adapters)
    finally:
        code = await child.stop()
    assert code == 0, child.log_text()[-2000:]
    modules = imported(child.log_text())
    assert "lora_syncer.sync.reconciler" in modules  # the log is read: the syncer is in it
    assert offending(modules) == []
