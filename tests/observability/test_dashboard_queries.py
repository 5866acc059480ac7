"""Every query of the shipped Grafana dashboard against a real Prometheus scraping a real
`lora-syncer run` (syncer + rewrite proxy) in front of the emulated vLLM, after some traffic.

Each query, its template variables substituted as Grafana would, must parse (the query API
answers success). A query whose metrics all exist in Prometheus must also return data; queries on
metrics that no component emits yet only have to parse, and the test prints which returned data.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.config.rules.kinds import KINDS
from lora_syncer.emulator import Emulator
from tests.support.fixtures import EmulatorFactory, VolumeFactory
from tests.support.http import wait_until_answers
from tests.support.net import free_port
from tests.support.processes import Child, clean_env, run_args
from tests.support.prometheus import Prometheus, PrometheusFactory
from tests.support.seeds import seed_file
from tests.support.wait import eventually

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "lora-syncer" / "dashboards" / "lora-syncer.json"
ALIAS = "small-segment-lora"
REQUESTS = 24
FAILURES = 3
# Rollouts run in the rules file once the AdapterRollout kind is registered (the controller's
# branch); until then the rollout panels only have to parse.
ROLLOUTS = "AdapterRollout" in KINDS
ROLLOUT_MODEL = "segment-rollout"
ROLLOUT_DOCUMENT = f"""\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {{name: segment-rollout-v2}}
spec:
  model: {ROLLOUT_MODEL}
  stable: small-segment-lora-v1
  canary: small-segment-lora-v2
  steps:
  - setWeight: 50
  - pause: {{duration: 1h}}
  analysis: {{interval: 2s, minRequests: 1, maxErrorRate: 0.5}}
"""
# What Grafana puts in place of the variables: "All" is `.*` (the variables' allValue).
VARIABLES = {"__rate_interval": "30s", "alias": ALIAS, "target": ".*", "rollout": ".*"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_METRIC = re.compile(r"\blora_syncer_[a-z_]+")
_LABEL_VALUES = re.compile(r"label_values\((?:(.+),\s*)?(\w+)\)")


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def substitute(expr: str) -> str:
    return _VARIABLE.sub(lambda m: VARIABLES[m.group(1)], expr)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expression) of every panel target."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def variable_queries() -> list[tuple[str, str]]:
    return [
        (v["name"], v["query"]["query"]) for v in dashboard()["templating"]["list"] if v["type"] == "query"
    ]


def metrics_of(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


class TestDashboardShape:
    def test_panels_have_unique_ids_and_use_the_datasource_variable(self) -> None:
        panels = dashboard()["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        for panel in panels:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]

    def test_every_variable_used_is_defined(self) -> None:
        defined = {v["name"] for v in dashboard()["templating"]["list"]} | {"__rate_interval"}
        used = {m for _, expr in panel_queries() + variable_queries() for m in _VARIABLE.findall(expr)}
        assert used <= defined
        assert set(VARIABLES) - {"__rate_interval"} <= defined

    def test_covers_the_contract_metrics(self) -> None:
        """The panels show rollouts, per-target traffic, errors, latency, answers and the syncer."""
        used = set().union(*(metrics_of(expr) for _, expr in panel_queries()))
        assert {
            "lora_syncer_rollout_phase",
            "lora_syncer_rollout_step",
            "lora_syncer_rollout_canary_weight",
            "lora_syncer_rollout_windows_total",
            "lora_syncer_rollout_last_value",
            "lora_syncer_proxy_requests_total",
            "lora_syncer_proxy_target_errors_total",
            "lora_syncer_proxy_target_ttft_seconds_bucket",
            "lora_syncer_proxy_target_duration_seconds_bucket",
            "lora_syncer_proxy_target_finish_reasons_total",
            "lora_syncer_proxy_target_completion_tokens_total",
            "lora_syncer_adapters",
            "lora_syncer_config_valid",
            "lora_syncer_proxy_rules_file_valid",
        } <= used


@pytest_asyncio.fixture
async def served(
    emulator_factory: EmulatorFactory,
    volume_factory: VolumeFactory,
    prometheus_factory: PrometheusFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> AsyncIterator[Prometheus]:
    """A real `lora-syncer run` with the proxy, after REQUESTS requests, scraped by a real Prometheus."""
    emulator: Emulator = await emulator_factory()
    adapters = volume_factory("adapters", {"configmap.yaml": seed_file("qwen3-32b-rewrite", "00-adapters")})
    rules_text = seed_file("qwen3-32b-rewrite", "03-rules-50-50")
    if ROLLOUTS:
        rules_text += "---\n" + ROLLOUT_DOCUMENT
    rules = volume_factory("rules", {"rules.yaml": rules_text})
    metrics_port, proxy_port = free_port(), free_port()
    args = run_args(
        adapters.path("configmap.yaml"),
        emulator.url,
        metrics_port,
        "--rules",
        str(rules.path("rules.yaml")),
        "--proxy-host",
        "127.0.0.1",
        "--proxy-port",
        str(proxy_port),
    )
    child = await Child.spawn(args, tmp_path / "run.log", metrics_port, env=clean_env())
    try:
        await wait_until_answers(
            http, f"{child.url}/readyz", proc=child.proc, detail=lambda: child.log_text()[-3000:]
        )
        prom = await prometheus_factory({"lora-syncer": [f"127.0.0.1:{metrics_port}"]})
        await prom.wait_scraped("lora-syncer", scrapes=2)
        proxy = f"http://127.0.0.1:{proxy_port}"
        for i in range(REQUESTS):
            body = {
                "model": ROLLOUT_MODEL if ROLLOUTS and i % 3 == 0 else ALIAS,
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_completion_tokens": 4,
                "stream": i % 2 == 0,
            }
            async with http.post(f"{proxy}/v1/chat/completions", json=body) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()
        # A few upstream failures, so that error panels have something to show.
        emulator.faults.fail_next["chat"] = FAILURES
        for i in range(FAILURES):
            body = {"model": ALIAS, "messages": [{"role": "user", "content": f"failing {i}"}]}
            async with http.post(f"{proxy}/v1/chat/completions", json=body) as resp:
                await resp.read()
                assert resp.status >= 500, await resp.text()
        await prom.wait_for(f"sum(lora_syncer_proxy_requests_total) >= {REQUESTS + FAILURES}")
        yield prom
    finally:
        await child.stop()


async def returns_data(prom: Prometheus, expr: str) -> bool:
    return bool(await prom.query(expr))


async def test_every_dashboard_query_parses_and_todays_metrics_return_data(
    served: Prometheus, capsys: pytest.CaptureFixture[str]
) -> None:
    prom = served
    names = await prom.names()
    with_data: list[str] = []
    waiting_for_metrics: list[str] = []
    for where, raw in panel_queries():
        expr = substitute(raw)
        status, doc = await prom.raw("query", query=expr)
        assert status == 200 and doc["status"] == "success", f"{where}: {expr}\n{doc}"
        missing = metrics_of(expr) - names
        if not missing:
            await eventually(
                partial(returns_data, prom, expr), interval=0.5, message=f"{where} returned no data: {expr}"
            )
            with_data.append(where)
        elif doc["data"]["result"]:
            with_data.append(where)
        else:
            waiting_for_metrics.append(f"{where} (not yet emitted: {', '.join(sorted(missing))})")
    for name, raw in variable_queries():
        match = _LABEL_VALUES.fullmatch(raw)
        assert match, f"variable {name}: {raw} is not label_values(...)"
        selector, label = match.group(1), match.group(2)
        params = {"match[]": substitute(selector)} if selector else {}
        async with prom.session.get(f"{prom.url}/api/v1/label/{label}/values", params=params) as resp:
            doc = await resp.json()
        assert resp.status == 200 and doc["status"] == "success", f"variable {name}: {doc}"
        if selector and not metrics_of(selector) - names:
            assert doc["data"], f"variable {name} has no values"
    # Metrics the running process serves today: the syncer's, the proxy's, per-target requests.
    for today in ("Requests per second / A", "Adapters by state / A", "Files valid / A", "Files valid / B"):
        assert today in with_data
    rate = await prom.query(substitute(dict(panel_queries())["Requests per second / A"]))
    assert {s["metric"]["target"] for s in rate} == {"small-segment-lora-v1", "small-segment-lora-v2"}
    with capsys.disabled():
        print(f"\ndashboard queries with data ({len(with_data)}): {', '.join(with_data)}")
        print(f"dashboard queries that parse, waiting for metrics ({len(waiting_for_metrics)}):")
        for line in waiting_for_metrics:
            print(f"  - {line}")
