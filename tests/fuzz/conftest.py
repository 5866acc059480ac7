"""Fixtures of the fuzz tier: Hypothesis settings (no deadline: a shared 2-core machine is noisy;
bounded example counts keep the tier to seconds) and, for the proxy, an emulator and a proxy
running on their own event loop in a background thread so Hypothesis can drive them with a
plain blocking client (any method, path, header or body, byte for byte)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_rig import ProxyThread
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService

settings.register_profile(
    "fuzz",
    deadline=None,
    max_examples=300,
    derandomize=True,  # the same examples every run: a failure here is reproducible, not flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("fuzz")

RULES = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: fuzz}
spec:
  rules:
  - matches: [{model: {type: Exact, value: canary}}]
    targets: [{modelRewrite: canary-v1, weight: 50}, {modelRewrite: canary-v2, weight: 50}]
"""


@pytest.fixture(scope="session")
def proxy_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    """An emulator (both canary targets loaded) and a proxy (64 KiB body limit) in a background loop."""
    volume = ConfigMapVolume(tmp_path_factory.mktemp("fuzz-rules"))
    volume.write({"rules.yaml": RULES})
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        emulator = Emulator(EmulatorConfig(seed=1))
        emulator.preload({"canary-v1": "org/canary-v1", "canary-v2": "org/canary-v2"})
        await emulator.start()
        proxy = ProxyService(
            ProxyOptions(
                upstream=emulator.url,
                rules_path=Path(volume.path("rules.yaml")),
                host="127.0.0.1",
                port=0,
                max_body_size=64 * 1024,
                client_body_timeout=2.0,
                upstream_timeout=5.0,
                poll_interval=0.5,
            ),
            registry=CollectorRegistry(),
        )
        await proxy.start()
        started["value"] = ProxyThread(proxy.port, emulator.port)
        ready.set()
        try:
            await stop.wait()
        finally:
            await proxy.stop(1.0)
            await emulator.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        pytest.fail("the fuzz proxy did not start within 30 s")
    value = started["value"]
    assert isinstance(value, ProxyThread)
    yield value
    assert stop is not None
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=10)
    loop.close()
