"""`lora-syncer proxy` as a process: flags, its health/metrics server, graceful exit on signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.emulator import Emulator
from tests.support.fixtures import EmulatorFactory
from tests.support.net import free_port

V1 = "small-segment-lora-v1"
RULES = f"""\
kind: InferenceModelRewrite
metadata: {{name: r}}
spec:
  rules:
  - matches: [{{model: {{value: small-segment-lora}}}}]
    targets: [{{modelRewrite: {V1}}}]
"""
WAIT = 30.0


@pytest_asyncio.fixture
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """The shared emulator fixture with V1 loaded."""
    return await emulator_factory(preload={V1: "org/a"})


async def start_proxy(
    rules: Path, upstream: str, metrics_port: int
) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "LORA_SYNCER_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lora_syncer",
        "proxy",
        "--rules",
        str(rules),
        "--server",
        upstream,
        "--proxy-host",
        "127.0.0.1",
        "--proxy-port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), WAIT)).decode()
        if not line:
            pytest.fail("proxy exited before listening")
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))


async def stop_process(proc: asyncio.subprocess.Process, *, signalled: bool = False) -> int:
    """Stop with SIGTERM (unless the test `signalled` already: a second signal exits at once, status 1)."""
    if proc.returncode is None and not signalled:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.communicate(), WAIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


class TestProxyCommand:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
    async def test_serves_and_exits_cleanly(
        self, emulator: Emulator, tmp_path: Path, sig: signal.Signals
    ) -> None:
        """The standalone proxy rewrites, serves /readyz /status /metrics, and exits 0 on SIGTERM or SIGINT."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        metrics_port = free_port()
        proc, port = await start_proxy(rules, emulator.url, metrics_port)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "small-segment-lora", "messages": [{"role": "user", "content": "x"}]},
                ) as resp:
                    assert (await resp.json())["model"] == V1
                async with http.get(f"http://127.0.0.1:{metrics_port}/readyz") as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{metrics_port}/status") as resp:
                    status = await resp.json()
                    assert status["proxy"]["aliases"]["small-segment-lora"]["targets"] == {V1: 1}
                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                    text = await resp.text()
                    assert (
                        'lora_syncer_proxy_requests_total{alias="small-segment-lora",status="200",target="'
                        in text
                    )
            proc.send_signal(sig)
            assert await stop_process(proc, signalled=True) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def test_requires_rules(self) -> None:
        """Without --rules the command explains and exits 2."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lora_syncer",
            "proxy",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "LORA_SYNCER_RULES"},
        )
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode == 2
        assert b"--rules" in err
