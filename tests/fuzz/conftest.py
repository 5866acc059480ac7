"""Fixtures of the fuzz tier: Hypothesis settings (no deadline: a shared 2-core machine is noisy;
bounded example counts keep the tier to seconds) and, for the proxy, an emulator and a proxy
running on their own event loop in a background thread so Hypothesis can drive them with a
plain blocking client (any method, path, header or body, byte for byte).

The "fuzz" profile applies to this tier only: Hypothesis fixes a test's settings when its module
is imported (the default profile then, or the parent of an explicit @settings), so the profile
is in force while this directory's modules are collected and the previous one is restored after.
Unit-tier properties keep Hypothesis's defaults when the whole suite runs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.threaded import ProxyThread, background_loop

PROFILE = "fuzz"
settings.register_profile(
    PROFILE,
    deadline=None,
    max_examples=300,
    derandomize=True,  # the same examples every run: a failure here is reproducible, not flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_HERE = Path(__file__).parent


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Import this tier's test modules (where @given fixes their settings) under the fuzz profile."""
    if not isinstance(collector, pytest.Module) or _HERE not in collector.path.parents:
        return (yield)
    previous = settings.get_current_profile_name()
    settings.load_profile(PROFILE)
    try:
        return (yield)
    finally:
        settings.load_profile(previous)


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
    servers: list[Emulator | ProxyService] = []

    async def start() -> ProxyThread:
        emulator = Emulator(EmulatorConfig(seed=1))
        emulator.preload({"canary-v1": "org/canary-v1", "canary-v2": "org/canary-v2"})
        await emulator.start()
        servers.append(emulator)
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
        servers.append(proxy)
        return ProxyThread(proxy.port, emulator.port)

    async def stop(_: ProxyThread) -> None:
        for server in reversed(servers):
            if isinstance(server, ProxyService):
                await server.stop(1.0)
            else:
                await server.stop()

    with background_loop(start, stop) as ports:
        yield ports
