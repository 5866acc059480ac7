"""An AdapterRollout whose canary real vLLM refuses (rank 64 above --max-lora-rank 8) aborts:
the syncer marks the canary failed, the rollout aborts, and every request stays on the stable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.realvllm.launcher import RealVLLM
from tests.e2e.conftest import loaded_adapters
from tests.e2e.test_syncer_e2e import adapters_file, eventually
from tests.support.rollouts import QUICK_RULES, V1, V2, running_run


async def test_a_canary_vllm_refuses_aborts_the_rollout_on_the_stable(vllm: RealVLLM, tmp_path: Path) -> None:
    stable, bad = str(vllm.adapter_dirs[0]), str(vllm.bad_rank_adapter_dir)
    served: Counter[str] = Counter()
    adapters = adapters_file([(V1, stable), (V2, bad)])
    async with running_run(tmp_path, server=vllm.url, adapters=adapters, rules=QUICK_RULES) as run:

        async def aborted() -> dict[str, Any] | None:
            r = await run.rollout()
            return r if r is not None and r["phase"] == "aborted" else None

        r = await eventually(aborted, timeout=120)
        assert r["canaryWeight"] == 0 and "failed to load" in r["reason"], r
        body = await run.status()
        assert body is not None
        canary = body["syncer"]["adapters"][V2]
        assert canary["state"] == "failed", canary
        assert "rank" in str(canary).lower(), canary  # vLLM's refusal is kept as the reason
        await eventually(lambda: _loaded(run.session, vllm, V1), timeout=120)
        for _ in range(10):
            served[await run.send()] += 1
        assert served == {V1: 10}
        assert V2 not in await loaded_adapters(run.session, vllm)


async def _loaded(session: aiohttp.ClientSession, server: RealVLLM, name: str) -> bool:
    return name in await loaded_adapters(session, server)
