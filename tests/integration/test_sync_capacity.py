"""The capacity warning: more adapters declared than vLLM keeps in CPU memory (`--max-cpu-loras`).

Without the flag the limit is the `max_lora` label of the emulator's `vllm:lora_requests_info`
(as vLLM, whose `max_cpu_loras` defaults to `max_loras`); more adapters than `max_lora` is no
warning by itself when `--max-cpu-loras` says the server keeps more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from structlog.testing import capture_logs
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_value
from warmup_front import warmup_front

from lora_syncer.emulator import EmulatorConfig

MakeEnv = Callable[..., Awaitable[SyncEnv]]


def declare(n: int) -> str:
    return adapters_yaml([(f"m-{i}", f"org/m-{i}") for i in range(n)])


async def passes_at_least(env: SyncEnv, n: int) -> None:
    async def enough() -> bool:
        return await env.passes() >= n

    await eventually(enough, f"{n} reconcile passes")


def capacity_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if "adapters declared in ensureExist but the server keeps only" in e["event"]]


async def test_warns_once_with_max_lora_from_the_servers_metrics(env_factory: MakeEnv) -> None:
    env = await env_factory(EmulatorConfig(max_loras=2))
    env.write(declare(3))
    with capture_logs() as logs:
        await env.start()
        await env.wait_loaded({"m-0", "m-1", "m-2"})
        await passes_at_least(env, 3)
    st = await env.status()
    assert st["capacity"] == {
        "declaredAdapters": 3,
        "maxCpuLoras": 2,
        "maxCpuLorasFrom": "server max_lora",
        "maxLoras": 2,
        "exceeded": True,
    }
    [warning] = st["warnings"]
    assert warning.startswith("3 adapters declared in ensureExist but the server keeps only 2 in memory")
    assert "pass the same number to --max-cpu-loras" in warning
    [line] = capacity_lines(logs)  # one log line, not one per pass
    assert line["log_level"] == "warning" and line["event"] == warning
    text = await env.metrics()
    assert metric_value(text, "lora_syncer_capacity_exceeded") == 1
    assert metric_value(text, "lora_syncer_capacity_declared_adapters") == 3
    assert metric_value(text, "lora_syncer_capacity_max_cpu_loras") == 2
    assert metric_value(text, "lora_syncer_capacity_max_loras") == 2
    # All three are loaded anyway: the warning changes nothing.
    assert {a["state"] for a in st["adapters"].values()} == {"loaded"}

    with capture_logs() as logs:
        env.write(declare(2))
        await env.wait_loaded({"m-0", "m-1", "m-2"})  # no --prune: m-2 stays, the count is declared ones

        async def fits() -> bool:
            return (await env.status())["warnings"] == []

        await eventually(fits, "the warning gone")
    assert (await env.status())["capacity"]["exceeded"] is False
    assert metric_value(await env.metrics(), "lora_syncer_capacity_exceeded") == 0
    assert [e["event"] for e in logs if "fit the server" in e["event"]] == [
        "declared adapters fit the server's memory again"
    ]


async def test_the_flag_sets_the_limit(env_factory: MakeEnv) -> None:
    env = await env_factory(EmulatorConfig(max_loras=1))
    env.write(declare(3))
    await env.start(max_cpu_loras=2)
    await env.wait_loaded({"m-0", "m-1", "m-2"})
    await passes_at_least(env, 1)
    st = await env.status()
    assert st["capacity"] == {
        "declaredAdapters": 3,
        "maxCpuLoras": 2,
        "maxCpuLorasFrom": "--max-cpu-loras",
        "maxLoras": 1,
        "exceeded": True,
    }
    assert st["warnings"] == [
        "3 adapters declared in ensureExist but the server keeps only 2 in memory (--max-cpu-loras): "
        "vLLM will evict adapters and reload them from disk on demand; raise vLLM's --max-cpu-loras or "
        "declare fewer adapters"
    ]


async def test_more_adapters_than_max_lora_alone_is_no_warning(env_factory: MakeEnv) -> None:
    env = await env_factory(EmulatorConfig(max_loras=1))
    env.write(declare(3))
    with capture_logs() as logs:
        await env.start(max_cpu_loras=8)
        await env.wait_loaded({"m-0", "m-1", "m-2"})
        await passes_at_least(env, 2)
    st = await env.status()
    assert st["capacity"]["maxLoras"] == 1 and st["capacity"]["maxCpuLoras"] == 8
    assert st["capacity"]["exceeded"] is False and st["warnings"] == []
    assert capacity_lines(logs) == []
    assert metric_value(await env.metrics(), "lora_syncer_capacity_exceeded") == 0


async def test_within_max_lora_is_no_warning(env_factory: MakeEnv) -> None:
    env = await env_factory(EmulatorConfig(max_loras=4))
    env.write(declare(4))
    await env.start()
    await env.wait_loaded({f"m-{i}" for i in range(4)})
    await passes_at_least(env, 1)
    st = await env.status()
    assert st["capacity"]["maxCpuLoras"] == 4 and st["capacity"]["exceeded"] is False
    assert st["warnings"] == []


# A fresh vLLM: the gauge is declared but has no sample until its engine has run a request.
NO_SAMPLE_YET = """\
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
"""


async def test_limits_unknown_until_vllm_writes_its_first_sample(sync_env: SyncEnv) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        front.metrics_text = NO_SAMPLE_YET
        env.write(declare(3))
        with capture_logs() as logs:
            await env.start(server=front.url)
            await env.wait_loaded({"m-0", "m-1", "m-2"})
            await passes_at_least(env, 3)
        st = await env.status()
        assert st["capacity"]["maxCpuLoras"] is None and st["capacity"]["exceeded"] is False
        assert st["warnings"] == []
        assert metric_value(await env.metrics(), "lora_syncer_capacity_max_cpu_loras") == -1
        unknown = [e for e in logs if e["event"].startswith("vLLM's /metrics shows no")]
        assert len(unknown) == 1  # said once, not every pass

        front.metrics_text = None  # the first request ran: the emulator's sample (max_lora=1) shows

        async def warned() -> list[str]:
            return list((await env.status())["warnings"])

        [warning] = await eventually(warned, "the capacity warning once max_lora is known")
        assert "keeps only 1 in memory" in warning
