"""`GET /metrics` on the emulator: vLLM's series, following requests, restarts and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.emulator import Emulator, EmulatorConfig
from tests.support.wait import eventually

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(served_model_name="base", max_loras=3, lora_modules=(("a1", "org/a1"),))
    async with Emulator(config) as e:
        yield e


async def scrape(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, float]:
    """Sample name (with sorted labels) -> value."""
    async with http.get(emu.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("engine", "model_name")
            )
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def send(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> int:
    """POST `body` and read the whole answer; the status."""
    async with http.post(url, json=body) as resp:
        await resp.read()
        return resp.status


def current_adapters(samples: dict[str, float]) -> str:
    """running_lora_adapters of the newest vllm:lora_requests_info series."""
    info = {k: v for k, v in samples.items() if k.startswith("vllm:lora_requests_info")}
    newest = max(info, key=lambda k: info[k])
    return newest.split("running_lora_adapters=")[1].split(",waiting")[0]


class TestMetrics:
    async def test_counters_follow_requests(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Each answered request adds its tokens and one success by length; refused ones add nothing."""
        await send(http, emu.url + "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3})
        await send(http, emu.url + "/v1/completions", {"model": "a1", "prompt": "hi", "max_tokens": 2})
        body = {"model": "a1", "prompt": "hi", "max_tokens": 4, "stream": True}
        async with http.post(emu.url + "/v1/completions", json=body) as resp:
            await resp.read()
        await send(http, emu.url + "/v1/completions", {"prompt": "hi", "max_tokens": 0})
        samples = await scrape(http, emu)
        assert samples["vllm:generation_tokens_total{}"] == 9.0
        assert samples["vllm:request_success_total{finished_reason=length}"] == 3.0
        assert samples["vllm:num_requests_running{}"] == 0.0
        assert samples["vllm:prompt_tokens_total{}"] > 0
        assert current_adapters(samples) == ""
        assert (
            "vllm:lora_requests_info{max_lora=3,running_lora_adapters=a1,waiting_lora_adapters=}" in samples
        )

    async def test_a_running_stream_shows(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """While a slow stream for an adapter is in flight it counts as running, under its name."""
        emu.faults.token_delay = 0.05
        body = {"model": "a1", "prompt": "hi", "max_tokens": 40, "stream": True}
        async with http.post(emu.url + "/v1/completions", json=body) as resp:
            await resp.content.readuntil(b"\n\n")  # the stream has started
            samples = await scrape(http, emu)
            assert samples["vllm:num_requests_running{}"] == 1.0
            assert current_adapters(samples) == "a1"
            emu.faults.token_delay = 0.0
            await resp.read()
        samples = await scrape(http, emu)
        assert samples["vllm:num_requests_running{}"] == 0.0
        assert current_adapters(samples) == ""

    async def test_a_client_leaving_mid_stream_is_not_left_running(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A stream cut by its client stops counting as running."""
        emu.faults.token_delay = 0.05
        body = {"model": "a1", "prompt": "hi", "max_tokens": 100, "stream": True}
        async with http.post(emu.url + "/v1/completions", json=body) as resp:
            await resp.content.readuntil(b"\n\n")
            resp.close()

        async def idle() -> bool:  # the server notices the disconnect at its next write
            return (await scrape(http, emu))["vllm:num_requests_running{}"] == 0.0

        await eventually(idle)

    async def test_restart_starts_from_zero(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A restarted emulator reports zero, like a new vLLM process; an outage alone keeps the counters."""
        await send(http, emu.url + "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3})
        await emu.go_down()
        await emu.come_up(forget_adapters=False)
        assert (await scrape(http, emu))["vllm:generation_tokens_total{}"] == 3.0
        await emu.restart()
        assert (await scrape(http, emu))["vllm:generation_tokens_total{}"] == 0.0

    async def test_faults_apply(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """`metrics` is a fault endpoint like the others."""
        emu.faults.fail_next = {"metrics": 1}
        async with http.get(emu.url + "/metrics") as resp:
            assert resp.status == 500
        assert (await scrape(http, emu))["vllm:num_requests_waiting{}"] == 0.0

    @pytest.mark.parametrize("method", ["POST", "HEAD", "PUT"])
    async def test_any_method(self, emu: Emulator, http: aiohttp.ClientSession, method: str) -> None:
        """Like vLLM's mounted Prometheus app, /metrics answers 200 whatever the method."""
        async with http.request(method, emu.url + "/metrics") as resp:
            assert resp.status == 200
