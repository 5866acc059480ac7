"""An AdapterRollout walked by `lora-syncer run --state-dir` against a real vLLM: v1 -> v2 completes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lora_syncer.realvllm.launcher import RealVLLM
from tests.e2e.test_syncer_e2e import adapters_file, eventually
from tests.support.rollouts import QUICK_RULES, V1, V2, running_run


async def test_a_rollout_from_v1_to_v2_completes_on_real_vllm(vllm: RealVLLM, tmp_path: Path) -> None:
    a, b = (str(p) for p in vllm.adapter_dirs[:2])
    served: Counter[str] = Counter()
    adapters = adapters_file([(V1, a), (V2, b)])
    async with running_run(tmp_path, server=vllm.url, adapters=adapters, rules=QUICK_RULES) as run:
        await eventually(run.ready, timeout=120)

        async def completed() -> dict[str, Any] | None:
            served[await run.send()] += 1
            r = await run.rollout()
            return r if r is not None and r["phase"] == "completed" else None

        done = await eventually(completed, timeout=120)
        assert done["canaryWeight"] == 100 and done["step"] == 3
        assert done["windowsJudged"] >= 2
        assert served[V2] > 0
        tail = Counter([await run.send() for _ in range(6)])
        assert tail == {V2: 6}
        assert (run.state_dir / "rollout-seg-v2.json").is_file()
