"""`lora-syncer run --warmup` against a real vLLM: an adapter made at test time loads, then warms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.realvllm.launcher import RealVLLM, build_assets
from tests.support.net import free_port
from tests.support.processes import Child, run_args
from tests.support.wait import eventually

TIMEOUT = aiohttp.ClientTimeout(total=60)
E2E_WAIT = 120.0  # a first request on a loaded 2-core machine can take a while


def adapters_file(name: str, source: Path) -> str:
    return (
        "vLLMLoRAConfig:\n  name: e2e-warmup\n  defaultBaseModel: base\n  ensureExist:\n    models:\n"
        f"    - id: {name}\n      source: {source}\n"
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_warmup_loads_and_warms_a_new_adapter(vllm: RealVLLM, tmp_path: Path) -> None:
    fresh = (await build_assets(vllm.venv, tmp_path / "assets", adapters=1)).adapter_dirs[0]
    volume = ConfigMapVolume(tmp_path / "config")
    volume.write({"configmap.yaml": adapters_file("fresh", fresh)})
    port = free_port()
    child = await Child.spawn(
        run_args(volume.path("configmap.yaml"), vllm.url, port, "--warmup"), tmp_path / "syncer.log", port
    )
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

            async def status() -> dict[str, Any] | None:
                try:
                    async with session.get(f"{child.url}/status") as resp:
                        body: dict[str, Any] = await resp.json()
                        return body["syncer"]
                except aiohttp.ClientError:
                    return None

            async def loaded() -> dict[str, Any] | None:
                st = await status()
                entry = (st or {}).get("adapters", {}).get("fresh")
                return st if entry is not None and entry["state"] == "loaded" else None

            st = await eventually(loaded, timeout=E2E_WAIT, interval=0.2)
            assert st["adapters"]["fresh"]["observedRoot"] == str(fresh)

            # vLLM writes its first vllm:lora_requests_info sample once it has run a request (the
            # warm-up); then the syncer knows max_lora (the launcher starts it with --max-loras 4).
            async def capacity_known() -> dict[str, Any] | None:
                st = await status()
                cap = (st or {}).get("capacity") or {}
                return cap if cap.get("maxLoras") is not None else None

            cap = await eventually(capacity_known, timeout=E2E_WAIT, interval=0.2)
            assert cap["maxLoras"] == 4 and cap["maxCpuLoras"] == 4 and cap["exceeded"] is False
            async with session.get(f"{child.url}/readyz") as resp:
                assert resp.status == 200
            async with session.get(f"{child.url}/metrics") as resp:
                text = await resp.text()
            assert metric(text, "lora_syncer_warmups_total", result="ok") == 1
            assert metric(text, "lora_syncer_warmups_total", result="failed") is None
        events = [e for e in child.logs() if e.get("adapter") == "fresh"]
        names = [e["event"] for e in events]
        assert names.index("load done") < names.index("warm-up done"), names
        assert "warm-up failed" not in names
    finally:
        code = await child.stop()
    assert code == 0, child.log_text()[-3000:]


pytestmark = pytest.mark.real_vllm
