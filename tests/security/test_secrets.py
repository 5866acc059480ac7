"""Health, status and metrics are read-only and show no secrets: a real `lora-syncer run` child with
`--api-key`, proxied requests carrying a client's bearer token and a prompt; none of the three
strings appears in /status, /metrics, /healthz, /readyz or the process's JSON log lines."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp

from lora_syncer.emulator import EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.emulator import running_emulator
from tests.support.http import wait_until_answers
from tests.support.net import free_port
from tests.support.processes import Child, run_args
from tests.support.reliability.files import KEY, RULES_KEY, adapters_yaml, rules_yaml
from tests.support.reliability.proxy_scenarios import ALIAS, V1, V2


async def test_no_secret_or_prompt_in_outputs_and_logs(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """API key, client Authorization and prompt never appear in /status, /metrics, probes or debug logs."""
    api_key = f"SEKRIT-{uuid.uuid4().hex}"
    client_secret = f"CLIENT-SECRET-{uuid.uuid4().hex}"
    prompt = f"PROMPT-CANARY-{uuid.uuid4().hex}"
    canaries = (api_key, client_secret, prompt)
    async with running_emulator(EmulatorConfig(seed=1)) as emulator:
        volume = ConfigMapVolume(tmp_path / "cm")
        volume.write({KEY: adapters_yaml([V1, V2]), RULES_KEY: rules_yaml(ALIAS, [(V1, 50), (V2, 50)])})
        metrics_port, proxy_port = free_port(), free_port()
        args = run_args(volume.path(KEY), emulator.url, metrics_port)
        args += [
            "--api-key", api_key,
            "--rules", str(volume.path(RULES_KEY)),
            "--proxy-host", "127.0.0.1",
            "--proxy-port", str(proxy_port),
            "--log-level", "debug",
        ]  # fmt: skip
        child = await Child.spawn(args, tmp_path / "child.log", metrics_port)
        try:
            base = f"http://127.0.0.1:{metrics_port}"

            await wait_until_answers(
                http, base + "/readyz", proc=child.proc, detail=lambda: child.log_text()[-2000:]
            )
            proxy = f"http://127.0.0.1:{proxy_port}"
            auth = {"Authorization": f"Bearer {client_secret}"}
            chat = {
                "model": ALIAS,
                "messages": [{"role": "user", "content": prompt}],
                "max_completion_tokens": 2,
            }
            statuses = []
            for body in (
                chat,
                {**chat, "stream": True},
                {**chat, "model": "no-such-model"},  # an upstream error
                {**chat, "messages": prompt},  # a request vLLM refuses
            ):
                async with http.post(proxy + "/v1/chat/completions", json=body, headers=auth) as resp:
                    statuses.append(resp.status)
                    await resp.read()
            for raw in (
                b'{"model": "canary", "prompt": "' + prompt.encode() + b'"',
                prompt.encode(),
            ):  # not JSON
                async with http.post(
                    proxy + "/v1/completions", data=raw, headers={**auth, "Content-Type": "application/json"}
                ) as resp:
                    statuses.append(resp.status)
            async with http.post(
                proxy + "/v1/load_lora_adapter", json={"lora_name": prompt, "lora_path": prompt}, headers=auth
            ) as resp:
                statuses.append(resp.status)
            emulator.faults.update(
                {"failure_mode": "drop", "failure_rate": {"chat": 1.0}}
            )  # a broken upstream
            async with http.post(proxy + "/v1/chat/completions", json=chat, headers=auth) as resp:
                statuses.append(resp.status)
            emulator.reset_faults()
            assert (
                statuses[:2] == [200, 200] and statuses[2] >= 400 and statuses[-1] == 502 and 403 in statuses
            )

            outputs = {}
            for path in ("/status", "/metrics", "/healthz", "/readyz", "/livez"):
                async with http.get(base + path) as resp:
                    outputs[path] = await resp.text()
                # Read-only: no method but GET (and HEAD) is routed.
                for method in ("POST", "PUT", "DELETE", "PATCH"):
                    async with http.request(method, base + path, data=b"{}") as resp:
                        assert resp.status == 405, (method, path)
            assert "lora_syncer_proxy_requests" in outputs["/metrics"] and '"proxy"' in outputs["/status"]
        finally:
            code = await child.stop()
        await asyncio.sleep(0)
    assert code == 0
    logs = child.log_text()
    # The log was really captured, including the warning about the broken upstream answer.
    assert '"event": "proxy listening"' in logs and '"level": "warning"' in logs
    for name, text in {**outputs, "log": logs}.items():
        for canary in canaries:
            assert canary not in text, f"{canary[:14]}... appears in {name}"
