"""A real Prometheus server (the `prometheus` binary) on 127.0.0.1 for tests.

`running_prometheus(workdir, jobs)` writes a config scraping each job's targets every second,
starts `prometheus` on an ephemeral port with its storage under `workdir`, waits until
`/-/ready` answers and stops it (SIGTERM, then SIGKILL) on exit. The fixture
`prometheus_factory` (import it into a conftest.py) does the same per test:
`prom = await prometheus_factory({"job": ["127.0.0.1:PORT"]})` (`tls=(cert, key)` serves HTTPS).

Tests wait for what they need (`wait_scraped`, `wait_for`), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from tests.support.net import free_port
from tests.support.wait import WAIT, eventually

SCRAPE_INTERVAL = "1s"
# Start-up is a few seconds even on a loaded machine; the bound is never reached when it works.
START_WAIT = 60.0

PrometheusFactory = Callable[..., Awaitable["Prometheus"]]


def binary() -> str:
    """The `prometheus` binary (scripts/tools.sh installs it); a clear failure when missing."""
    found = shutil.which("prometheus")
    assert found, "the prometheus binary is needed: run scripts/tools.sh"
    return found


def config_text(jobs: Mapping[str, Sequence[str]], scrape_interval: str = SCRAPE_INTERVAL) -> str:
    """A Prometheus configuration scraping each job's `host:port` targets at /metrics."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in jobs.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Prometheus:
    """A running Prometheus; `api` calls its HTTP API and returns the `data` of a success."""

    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    session: aiohttp.ClientSession
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def raw(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        """POST a form to `/api/v1/PATH`: (HTTP status, the JSON answer)."""
        async with self.session.post(f"{self.url}/api/v1/{path}", data=params) as resp:
            return resp.status, await resp.json()

    async def api(self, path: str, **params: str) -> Any:
        status, doc = await self.raw(path, **params)
        assert status == 200 and doc.get("status") == "success", f"{path} {params}: {status} {doc}"
        return doc["data"]

    async def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector of `promql` (at `at`, Unix seconds, when given)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def names(self) -> set[str]:
        """Every metric name Prometheus has stored."""
        async with self.session.get(f"{self.url}/api/v1/label/__name__/values") as resp:
            doc = await resp.json()
        return set(doc["data"])

    async def wait_for(self, promql: str, timeout: float = WAIT) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """The first non-empty result of `promql`, polling until `timeout`."""
        return list(
            await eventually(lambda: self.query(promql), timeout=timeout, interval=0.2, message=promql)
        )

    async def wait_scraped(self, job: str, scrapes: int = 1, timeout: float = WAIT) -> None:  # noqa: ASYNC109
        """Until every target of `job` is up and was scraped `scrapes` times (increase() needs 2)."""

        async def done() -> bool:
            up = await self.query(f'up{{job="{job}"}}')
            if not up or any(s["value"][1] != "1" for s in up):
                return False
            counts = await self.query(f'count_over_time(up{{job="{job}"}}[1h])')
            return all(float(s["value"][1]) >= scrapes for s in counts)

        await eventually(
            done, timeout=timeout, interval=0.2, message=lambda: f"job {job} not scraped {scrapes}x"
        )


def _write_config(
    workdir: Path, jobs: Mapping[str, Sequence[str]], scrape_interval: str, tls: tuple[Path, Path] | None
) -> list[str]:
    """Write the configuration (and the web configuration for TLS); the flags naming them."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(config_text(jobs, scrape_interval))
    flags = [f"--config.file={config}"]
    if tls is not None:
        web = workdir / "web.yml"
        web.write_text(
            yaml.safe_dump({"tls_server_config": {"cert_file": str(tls[0]), "key_file": str(tls[1])}})
        )
        flags.append(f"--web.config.file={web}")
    return flags


@contextlib.asynccontextmanager
async def running_prometheus(
    workdir: Path,
    jobs: Mapping[str, Sequence[str]],
    scrape_interval: str = SCRAPE_INTERVAL,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[Prometheus]:
    """A Prometheus scraping `jobs` ({job: ["host:port", ...]}), ready; stopped on exit.

    `tls` = (certificate, key): serve HTTPS with them (the certificate must be valid for 127.0.0.1;
    the test's client trusts it as its own CA).
    """
    flags = await asyncio.to_thread(_write_config, workdir, jobs, scrape_interval, tls)
    client_ssl: ssl.SSLContext | bool = True
    if tls is not None:
        client_ssl = ssl.create_default_context(cafile=str(tls[0]))
    port = free_port()
    log_path = workdir / "prometheus.log"
    log = await asyncio.to_thread(log_path.open, "wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            binary(),
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *flags,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=str(workdir),
        )
    finally:
        log.close()
    connector = aiohttp.TCPConnector(ssl=client_ssl)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15), connector=connector) as session:
        prom = Prometheus(proc, port, log_path, session, "https" if tls is not None else "http")
        try:

            async def ready() -> bool:
                assert proc.returncode is None, f"prometheus exited:\n{prom.log_text()[-3000:]}"
                try:
                    async with session.get(f"{prom.url}/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=START_WAIT, interval=0.1, message=lambda: prom.log_text()[-3000:])
            yield prom
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=WAIT)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@pytest_asyncio.fixture
async def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrometheusFactory]:
    """`await prometheus_factory({job: [targets]})`: a ready Prometheus scraping them every second."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            jobs: Mapping[str, Sequence[str]],
            scrape_interval: str = SCRAPE_INTERVAL,
            tls: tuple[Path, Path] | None = None,
        ) -> Prometheus:
            workdir = tmp_path_factory.mktemp("prometheus")
            return await stack.enter_async_context(running_prometheus(workdir, jobs, scrape_interval, tls))

        yield make
