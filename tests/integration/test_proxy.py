"""The rewrite proxy on 127.0.0.1 in front of the vLLM emulator (or a tiny upstream where the
emulator cannot show what is tested: received headers, a cancelled request)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.wait import eventually as support_eventually

V1, V2 = "small-segment-lora-v1", "small-segment-lora-v2"
ALIAS = "small-segment-lora"
SOURCE = "ttt421/nec119-small-segment-lora"
KEY = "rules.yaml"
WAIT = 15.0
TIMEOUT = aiohttp.ClientTimeout(total=20)


def rewrite_rules(*targets: tuple[str, int | None]) -> str:
    """The guide 002's InferenceModelRewrite with the given targets."""
    lines = [
        "apiVersion: inference.networking.x-k8s.io/v1alpha2",
        "kind: InferenceModelRewrite",
        "metadata:",
        "  name: small-segment-lora-rewrite",
        "spec:",
        "  poolRef:",
        "    group: inference.networking.k8s.io",
        "    name: vllm-qwen3-32b",
        "  rules:",
        "    - matches:",
        "        - model:",
        "            type: Exact",
        f"            value: {ALIAS}",
        "      targets:",
    ]
    for name, weight in targets:
        lines.append(f'        - modelRewrite: "{name}"')
        if weight is not None:
            lines.append(f"          weight: {weight}")
    return "\n".join(lines) + "\n"


def chat(model: str | None = ALIAS, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "test"}], "max_completion_tokens": 1}
    if model is not None:
        body["model"] = model
    body.update(extra)
    return body


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def eventually(predicate: Callable[[], Any], what: str, within: float = WAIT) -> Any:
    """tests.support.wait.eventually, with this module's (predicate, what) call shape."""
    return await support_eventually(predicate, timeout=within, message=f"waiting for: {what}")


@dataclass
class ProxyEnv:
    """An emulator with both adapters loaded, a ConfigMap volume for the rules, and proxies."""

    emulator: Emulator
    volume: ConfigMapVolume
    http: aiohttp.ClientSession
    proxies: list[ProxyService] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @property
    def rules_path(self) -> Path:
        return self.volume.path(KEY)

    def write_rules(self, text: str) -> None:
        self.volume.write({KEY: text})

    async def start(
        self, loaded: Callable[[], frozenset[str]] | None = None, **overrides: Any
    ) -> ProxyService:
        values: dict[str, Any] = {
            "upstream": self.emulator.url,
            "rules_path": self.rules_path,
            "host": "127.0.0.1",
            "port": 0,
            "poll_interval": 0.05,
        }
        values.update(overrides)
        self.registry = CollectorRegistry()
        proxy = ProxyService(ProxyOptions(**values), registry=self.registry, loaded=loaded)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    async def served(self, proxy: ProxyService, n: int, **headers: str) -> Counter[str]:
        """Send n chat requests for the alias; count the `model` of the answers."""
        counts: Counter[str] = Counter()
        for _ in range(n):
            async with self.http.post(
                url(proxy, "/v1/chat/completions"), json=chat(), headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                counts[(await resp.json())["model"]] += 1
        return counts

    async def set_rules(self, proxy: ProxyService, text: str) -> None:
        """Swap the rules file the kubelet way and wait until the proxy has it in force."""
        before = proxy.status()["generation"]
        self.write_rules(text)
        await eventually(lambda: proxy.status()["generation"] not in (before, None), "new rules in force")


def url(proxy: ProxyService, path: str) -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[ProxyEnv]:
    emulator = Emulator(EmulatorConfig())
    await emulator.start()
    http = aiohttp.ClientSession(timeout=TIMEOUT)
    e = ProxyEnv(emulator, ConfigMapVolume(tmp_path / "rules"), http)
    try:
        for name in (V1, V2):
            async with http.post(
                emulator.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": SOURCE}
            ) as r:
                assert r.status == 200, await r.text()
        e.write_rules(rewrite_rules((V1, None)))
        yield e
    finally:
        for proxy in e.proxies:
            await proxy.stop(grace=1.0)
        await http.close()
        await emulator.stop()


class TestSplitting:
    async def test_seed_002_sequence(self, env: ProxyEnv) -> None:
        """The guide's v1 -> 90/10 -> 50/50 -> 0/100 sequence gives exactly 20/0, 18/2, 10/10, 0/20 per 20 requests."""
        proxy = await env.start()
        assert await env.served(proxy, 20) == {V1: 20}
        await env.set_rules(proxy, rewrite_rules((V1, 90), (V2, 10)))
        assert await env.served(proxy, 20) == {V1: 18, V2: 2}
        await env.set_rules(proxy, rewrite_rules((V1, 50), (V2, 50)))
        assert await env.served(proxy, 20) == {V1: 10, V2: 10}
        await env.set_rules(proxy, rewrite_rules((V2, 100)))
        assert await env.served(proxy, 20) == {V2: 20}

    async def test_inference_model_document(self, env: ProxyEnv) -> None:
        """An InferenceModel (guide 000 shape) splits its modelName across targetModels."""
        env.write_rules(
            "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModel\nmetadata: {name: sl}\n"
            f"spec:\n  modelName: {ALIAS}\n  targetModels:\n  - {{name: {V1}, weight: 1}}\n  - {{name: {V2}, weight: 1}}\n"
        )
        proxy = await env.start()
        assert await env.served(proxy, 10) == {V1: 5, V2: 5}

    async def test_readiness_aware(self, env: ProxyEnv) -> None:
        """Targets the syncer has not confirmed loaded get no traffic; once loaded they get their share."""
        env.write_rules(rewrite_rules((V1, 50), (V2, 50)))
        loaded = {V1}
        proxy = await env.start(loaded=lambda: frozenset(loaded))
        assert await env.served(proxy, 10) == {V1: 10}
        loaded.add(V2)
        assert await env.served(proxy, 10) == {V1: 5, V2: 5}

    async def test_nothing_loaded_still_forwards(self, env: ProxyEnv) -> None:
        """With no target loaded the request goes to the first target and vLLM answers."""
        env.write_rules(rewrite_rules((V1, 50), (V2, 50)))
        proxy = await env.start(loaded=frozenset)
        assert await env.served(proxy, 3) == {V1: 3}

    async def test_all_drained_503(self, env: ProxyEnv) -> None:
        """Every target at weight 0 gives a 503 in OpenAI's error shape."""
        env.write_rules(rewrite_rules((V1, 0), (V2, 0)))
        proxy = await env.start()
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat()) as resp:
            assert resp.status == 503
            body = await resp.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == 503
        assert metric(env.registry, "lora_syncer_model_rewrite_decisions_total", target="drained") == 1

    async def test_sticky_header(self, env: ProxyEnv) -> None:
        """With --sticky-header each header value keeps its target; different values spread over both."""
        env.write_rules(rewrite_rules((V1, 50), (V2, 50)))
        proxy = await env.start(sticky_header="x-user-id")
        per_user = {}
        for user in range(12):
            got = await env.served(proxy, 4, **{"x-user-id": f"user-{user}"})
            assert len(got) == 1
            per_user[user] = next(iter(got))
        assert set(per_user.values()) == {V1, V2}
        # Without the header the request falls back to the rotation.
        assert await env.served(proxy, 4) == {V1: 2, V2: 2}


class TestForwarding:
    async def test_streaming_chunks_pass_as_they_come(self, env: ProxyEnv) -> None:
        """A streamed answer reaches the client as several chunks, ending with [DONE], with the served header."""
        env.emulator.faults.token_delay = 0.05
        proxy = await env.start()
        chunks: list[bytes] = []
        async with env.http.post(
            url(proxy, "/v1/chat/completions"), json=chat(stream=True, max_completion_tokens=5)
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers[SERVED_MODEL_HEADER] == V1
            async for chunk in resp.content.iter_any():
                chunks.append(chunk)
        assert len(chunks) >= 3
        text = b"".join(chunks).decode()
        assert text.rstrip().endswith("data: [DONE]")
        models = {json.loads(line[6:])["model"] for line in text.splitlines() if line.startswith("data: {")}
        assert models == {V1}

    async def test_response_model_requested(self, env: ProxyEnv) -> None:
        """--response-model=requested puts the alias in JSON answers and in every SSE chunk; the header names the target."""
        env.write_rules(rewrite_rules((V1, 50), (V2, 50)))
        proxy = await env.start(response_model="requested")
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat()) as resp:
            assert (await resp.json())["model"] == ALIAS
            assert resp.headers[SERVED_MODEL_HEADER] == V1
        async with env.http.post(
            url(proxy, "/v1/chat/completions"), json=chat(stream=True, max_completion_tokens=4)
        ) as resp:
            text = (await resp.read()).decode()
            assert resp.headers[SERVED_MODEL_HEADER] == V2
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert len(events) >= 4
        assert {e["model"] for e in events} == {ALIAS}

    async def test_completions_endpoint(self, env: ProxyEnv) -> None:
        """/v1/completions bodies are rewritten too."""
        proxy = await env.start()
        async with env.http.post(
            url(proxy, "/v1/completions"), json={"model": ALIAS, "prompt": "hi", "max_tokens": 2}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["model"] == V1

    async def test_models_lists_aliases(self, env: ProxyEnv) -> None:
        """GET /v1/models lists vLLM's models plus one entry per alias."""
        proxy = await env.start()
        async with env.http.get(url(proxy, "/v1/models")) as resp:
            body = await resp.json()
        ids = [m["id"] for m in body["data"]]
        assert ids == ["Qwen/Qwen3-32B", V1, V2, ALIAS]
        assert body["data"][-1]["root"] == V1

    async def test_unknown_model_passes_through(self, env: ProxyEnv) -> None:
        """A model no rule matches is forwarded unchanged, and vLLM's answer comes back as it is."""
        proxy = await env.start()
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat("nope")) as resp:
            assert resp.status == 404
            assert "nope" in (await resp.json())["error"]["message"]
            assert resp.headers[SERVED_MODEL_HEADER] == "nope"
        async with env.http.get(url(proxy, "/health")) as resp:
            assert resp.status == 200

    async def test_admin_routes_refused(self, env: ProxyEnv) -> None:
        """Adapter and control routes answer 403 through the proxy and never reach vLLM."""
        proxy = await env.start()
        calls_before = len(env.emulator.calls)
        for path in (
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "//v1/unload_lora_adapter",
            "/sleep",
        ):
            async with env.http.post(url(proxy, path), json={"lora_name": V1, "lora_path": SOURCE}) as resp:
                assert resp.status == 403, path
                assert (await resp.json())["error"]["code"] == 403
        async with env.http.delete(url(proxy, f"/adapters/{V1}")) as resp:
            assert resp.status == 403
        assert len(env.emulator.calls) == calls_before
        assert set(env.emulator.loaded()) == {V1, V2}

    async def test_admin_routes_allowed_by_flag(self, env: ProxyEnv) -> None:
        """With --allow-admin-routes the load route is forwarded."""
        proxy = await env.start(allow_admin_routes=True)
        async with env.http.post(
            url(proxy, "/v1/load_lora_adapter"), json={"lora_name": "v3", "lora_path": SOURCE}
        ) as resp:
            assert resp.status == 200
        assert "v3" in env.emulator.loaded()


class TestErrors:
    async def test_bad_json_and_missing_model(self, env: ProxyEnv) -> None:
        """A body that is not JSON, or a chat request without a model, is a 400 in OpenAI's shape."""
        proxy = await env.start()
        async with env.http.post(
            url(proxy, "/v1/chat/completions"), data=b"{nope", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            assert "not valid JSON" in (await resp.json())["error"]["message"]
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat(None)) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "model"

    async def test_body_too_large(self, env: ProxyEnv) -> None:
        """A body over --max-body-size is a 413, whether its length is declared or chunked."""
        proxy = await env.start(max_body_size=1024)
        big = chat(padding="x" * 4096)
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=big) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 512

        async with env.http.post(
            url(proxy, "/v1/chat/completions"), data=chunks(), headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 413

    async def test_upstream_down_502(self, env: ProxyEnv) -> None:
        """When vLLM does not accept connections the proxy answers 502 and counts a connect error."""
        proxy = await env.start()
        await env.emulator.go_down()
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat()) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["type"] == "BadGatewayError"
        assert metric(env.registry, "lora_syncer_proxy_upstream_errors_total", kind="connect") == 1
        await env.emulator.come_up(forget_adapters=False)

    async def test_upstream_timeout_504(self, env: ProxyEnv) -> None:
        """A model server slower than --upstream-timeout gives a 504."""
        env.emulator.faults.latency = {"chat": 5.0}
        proxy = await env.start(upstream_timeout=0.2)
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat()) as resp:
            assert resp.status == 504
        assert metric(env.registry, "lora_syncer_proxy_upstream_errors_total", kind="timeout") == 1


class TestLifecycle:
    async def test_port_taken(self, env: ProxyEnv) -> None:
        """A port already in use fails start() with OSError and leaves nothing running."""
        first = await env.start()
        second = ProxyService(
            ProxyOptions(
                upstream=env.emulator.url, rules_path=env.rules_path, host="127.0.0.1", port=first.port
            ),
            registry=CollectorRegistry(),
        )
        with pytest.raises(OSError):
            await second.start()
        assert second.ready()[0] is False
        assert second.core.session is None

    async def test_expect_header_not_forwarded(self, env: ProxyEnv) -> None:
        """A client's Expect: 100-continue is handled by the proxy, not passed on."""
        proxy = await env.start()
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat(), expect100=True) as resp:
            assert resp.status == 200
            assert (await resp.json())["model"] == V1


class TestRulesFile:
    async def test_bad_file_keeps_last_good_rules(self, env: ProxyEnv) -> None:
        """A rules file that does not validate leaves the last good rules in force and shows the error in /status."""
        env.write_rules(rewrite_rules((V1, 90), (V2, 10)))
        proxy = await env.start()
        env.write_rules(rewrite_rules((V1, 90), (V2, None)))  # mixed weights: invalid
        await eventually(lambda: proxy.status()["error"] is not None, "rules error reported")
        status = proxy.status()
        assert "every target must have one" in status["error"]["summary"]
        assert status["error"]["issues"][0]["line"] is not None
        assert await env.served(proxy, 20) == {V1: 18, V2: 2}
        assert metric(env.registry, "lora_syncer_proxy_rules_file_valid") == 0
        assert proxy.ready() == (True, "")

    async def test_missing_file_at_start(self, env: ProxyEnv) -> None:
        """Without a rules file the proxy serves (no rewrites) but is not ready; the file appearing fixes both."""
        env.volume.remove_key(KEY)
        proxy = await env.start()
        ready, reason = proxy.ready()
        assert not ready and "no valid rules file" in reason
        async with env.http.post(url(proxy, "/v1/chat/completions"), json=chat(V2)) as resp:
            assert (await resp.json())["model"] == V2
        env.write_rules(rewrite_rules((V2, 1)))
        await eventually(lambda: proxy.ready()[0], "proxy ready")
        assert await env.served(proxy, 3) == {V2: 3}

    async def test_status_section(self, env: ProxyEnv) -> None:
        """status() shows the rules in force, their documents, the generation and no error."""
        env.write_rules(rewrite_rules((V1, 90), (V2, 10)))
        proxy = await env.start()
        status = proxy.status()
        assert status["aliases"] == {
            ALIAS: {"rule": "InferenceModelRewrite/small-segment-lora-rewrite#0", "targets": {V1: 90, V2: 10}}
        }
        assert status["documents"][0]["name"] == "small-segment-lora-rewrite"
        assert status["error"] is None and status["generation"]
        json.dumps(status)  # JSON-able


class TestObservability:
    async def test_metrics(self, env: ProxyEnv) -> None:
        """Requests are counted by alias, target and status; decisions by rule and target; latency observed."""
        env.write_rules(rewrite_rules((V1, 90), (V2, 10)))
        proxy = await env.start()
        await env.served(proxy, 10)
        reg = env.registry
        assert metric(reg, "lora_syncer_proxy_requests_total", alias=ALIAS, target=V1, status="200") == 9
        assert metric(reg, "lora_syncer_proxy_requests_total", alias=ALIAS, target=V2, status="200") == 1
        rule = "InferenceModelRewrite/small-segment-lora-rewrite#0"
        assert metric(reg, "lora_syncer_model_rewrite_decisions_total", rule=rule, target=V2) == 1
        assert metric(reg, "lora_syncer_proxy_request_duration_seconds_count", alias=ALIAS) == 10
        assert metric(reg, "lora_syncer_proxy_active_requests") == 0
        assert metric(reg, "lora_syncer_proxy_active_streams") == 0


# --- a tiny upstream for what the emulator cannot show -------------------------------------------


@dataclass
class Recorder:
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def tiny(tmp_path: Path) -> AsyncIterator[tuple[str, Recorder, Path]]:
    rec = Recorder()

    async def echo(request: web.Request) -> web.Response:
        rec.requests.append((dict(request.headers), await request.read()))
        return web.json_response(
            {"model": "seen"}, headers={"Connection": "keep-alive", "Keep-Alive": "timeout=5"}
        )

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"model": "x"}\n\n')
        rec.stream_started.set()
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                await resp.write(b'data: {"model": "x"}\n\n')
        except (asyncio.CancelledError, ConnectionError):
            rec.stream_cancelled.set()
            raise
        return resp

    async def held(request: web.Request) -> web.Response:
        rec.stream_started.set()
        await rec.release.wait()
        return web.json_response({"model": "held"})

    async def big(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        payload = json.dumps({"model": body["model"], "text": "x" * 200_000}).encode()
        if request.query.get("chunked"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(payload), 7_000):
                await resp.write(payload[i : i + 7_000])
            await resp.write_eof()
            return resp
        return web.Response(body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_post("/big", big)
    app.router.add_post("/v1/chat/completions", echo)
    app.router.add_post("/stream", slow_stream)
    app.router.add_post("/held", held)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rules = tmp_path / "tiny" / KEY
    rules.parent.mkdir()
    rules.write_text(rewrite_rules((V1, 1)))
    try:
        yield f"http://127.0.0.1:{port}", rec, rules
    finally:
        rec.release.set()
        await runner.cleanup()


async def start_tiny_proxy(upstream: str, rules: Path, **kw: Any) -> ProxyService:
    proxy = ProxyService(
        ProxyOptions(upstream=upstream, rules_path=rules, host="127.0.0.1", port=0, **kw),
        registry=CollectorRegistry(),
    )
    await proxy.start()
    return proxy


class TestHeadersAndLifecycle:
    async def test_headers_and_body(self, tiny: tuple[str, Recorder, Path]) -> None:
        """Authorization reaches vLLM, hop-by-hop headers do not, only `model` changes, and nothing secret is logged."""
        upstream, rec, rules = tiny
        proxy = await start_tiny_proxy(upstream, rules)
        try:
            body = {
                "model": ALIAS,
                "messages": [{"role": "user", "content": "secret prompt"}],
                "temperature": 0.5,
            }
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                with capture_logs() as logs:
                    async with http.post(
                        url(proxy, "/v1/chat/completions"),
                        json=body,
                        headers={
                            "Authorization": "Bearer sk-very-secret",
                            "Connection": "keep-alive, X-Drop-Me",
                            "X-Drop-Me": "1",
                            "TE": "trailers",
                            "Proxy-Authorization": "Basic Zm9v",
                            "X-Keep": "yes",
                        },
                    ) as resp:
                        assert resp.status == 200
                        assert "Keep-Alive" not in resp.headers
                        assert resp.headers[SERVED_MODEL_HEADER] == V1
        finally:
            await proxy.stop()
        headers, raw = rec.requests[0]
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["authorization"] == "Bearer sk-very-secret"
        assert lower["x-keep"] == "yes"
        for dropped in ("x-drop-me", "te", "proxy-authorization"):
            assert dropped not in lower
        assert lower["x-forwarded-for"] == "127.0.0.1"
        assert json.loads(raw) == {**body, "model": V1}
        assert list(json.loads(raw)) == list(body)
        rendered = json.dumps(logs)
        assert "sk-very-secret" not in rendered and "secret prompt" not in rendered

    @pytest.mark.parametrize("response_model", ["served", "requested"])
    @pytest.mark.parametrize("chunked", [False, True])
    async def test_large_answers_arrive_whole(
        self, tiny: tuple[str, Recorder, Path], response_model: str, chunked: bool
    ) -> None:
        """A 200 kB JSON answer arrives complete, with or without a length, rewritten or not."""
        upstream, _, rules = tiny
        proxy = await start_tiny_proxy(upstream, rules, response_model=response_model)
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.post(
                    url(proxy, "/big" + ("?chunked=1" if chunked else "")), json={"model": ALIAS}
                ) as resp,
            ):
                body = await resp.json()
        finally:
            await proxy.stop()
        assert len(body["text"]) == 200_000
        assert body["model"] == (ALIAS if response_model == "requested" else V1)

    async def test_client_disconnect_cancels_upstream(self, tiny: tuple[str, Recorder, Path]) -> None:
        """A client that leaves mid-stream makes the proxy drop the upstream request."""
        upstream, rec, rules = tiny
        registry = CollectorRegistry()
        proxy = ProxyService(
            ProxyOptions(upstream=upstream, rules_path=rules, host="127.0.0.1", port=0), registry=registry
        )
        await proxy.start()
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                resp = await http.post(url(proxy, "/stream"), json={"model": ALIAS})
                assert (await resp.content.readany()).startswith(b"data:")
                resp.close()  # the client goes away
            await asyncio.wait_for(rec.stream_cancelled.wait(), WAIT)
            await eventually(lambda: proxy.core.in_flight == 0, "proxy request finished")
            assert metric(registry, "lora_syncer_proxy_client_disconnects_total") >= 1
            assert metric(registry, "lora_syncer_proxy_active_streams") == 0
        finally:
            await proxy.stop()

    async def test_graceful_stop_drains_in_flight(self, tiny: tuple[str, Recorder, Path]) -> None:
        """stop() refuses new connections but lets a request in flight finish."""
        upstream, rec, rules = tiny
        proxy = await start_tiny_proxy(upstream, rules)
        port = proxy.port
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            pending = asyncio.create_task(http.post(url(proxy, "/held"), json={"model": ALIAS}))
            await asyncio.wait_for(rec.stream_started.wait(), WAIT)
            stopping = asyncio.create_task(proxy.stop(grace=10.0))
            await eventually(lambda: not proxy.ready()[0], "proxy stopped listening")
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as other:
                    await other.get(f"http://127.0.0.1:{port}/health")
            rec.release.set()
            resp = await pending
            assert resp.status == 200
            assert (await resp.json())["model"] == "held"
            await stopping
