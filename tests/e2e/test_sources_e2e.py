"""An adapter from S3 served by a real vLLM: made at test time (lora_syncer/realvllm/assets.py,
through the real-vLLM fixture), uploaded to a moto S3 server, declared as `s3://…` with its
checksum, fetched into the cache by `lora-syncer run` (a real process) and served; then a new
version is declared, fetched and reloaded, and the old version's files go only after vLLM no
longer lists it and the grace has passed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.realvllm.launcher import RealVLLM
from lora_syncer.sources.digest import directory_checksum
from tests.support.net import free_port
from tests.support.processes import popen_run, stop_popen
from tests.support.sources_servers import s3_env
from tests.support.wait import eventually

TIMEOUT = aiohttp.ClientTimeout(total=60)
WAIT = 120.0
BUCKET = "e2e-adapters"
GRACE = 3.0


def upload(moto_endpoint: str, directory: Path, prefix: str) -> str:
    """Every file of `directory` under `prefix`; the checksum to declare for it."""
    import boto3

    env = s3_env(moto_endpoint)
    client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=moto_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(directory).as_posix()}")
    return str(directory_checksum(directory))


def adapters_file(source: str, checksum: str) -> str:
    return (
        "vLLMLoRAConfig:\n  defaultBaseModel: base\n  ensureExist:\n    models:\n"
        f"    - id: sql\n      source: {source}\n      checksum: {checksum}\n"
    )


async def listed(session: aiohttp.ClientSession, server: RealVLLM) -> dict[str, str]:
    async with session.get(f"{server.url}/v1/models") as resp:
        body = await resp.json()
    return {m["id"]: m["root"] for m in body["data"] if m.get("parent") is not None}


async def chat(session: aiohttp.ClientSession, server: RealVLLM) -> dict[str, Any]:
    async with session.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "sql", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def exists(path: str) -> bool:
    return os.path.exists(path)


def spawn(
    config: Path, server: str, port: int, cache: Path, moto_endpoint: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """`lora-syncer run` with the adapter cache, as its own process logging JSON lines."""
    flags = ["--reconcile-trigger", "0.5", "--adapter-cache", str(cache)]
    # A one-byte budget: every version that may go, goes once unlisted for the grace.
    flags += ["--adapter-cache-max-bytes", "1"]
    flags += ["--adapter-cache-gc-grace", str(GRACE), "--upstream-timeout", str(GRACE)]
    return popen_run(config, server, port, log_path, *flags, env=s3_env(moto_endpoint))


async def test_s3_adapter_fetched_served_replaced_and_collected(
    vllm: RealVLLM, moto_endpoint: str, tmp_path: Path
) -> None:
    v1_dir, v2_dir = vllm.adapter_dirs[:2]
    v1 = await asyncio.to_thread(upload, moto_endpoint, v1_dir, "sql/v1")
    v2 = await asyncio.to_thread(upload, moto_endpoint, v2_dir, "sql/v2")
    cache = tmp_path / "cache"
    volume = ConfigMapVolume(tmp_path / "config")
    volume.write({"configmap.yaml": adapters_file(f"s3://{BUCKET}/sql/v1/", v1)})
    port = free_port()
    log_path = tmp_path / "syncer.log"
    proc = spawn(volume.path("configmap.yaml"), vllm.url, port, cache, moto_endpoint, log_path)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

            async def served_from_cache() -> str | None:
                root = (await listed(session, vllm)).get("sql")
                return root if root and os.path.dirname(root) == str(cache) else None

            old_root = await eventually(served_from_cache, timeout=WAIT, interval=0.2)
            assert (await chat(session, vllm))["model"] == "sql"

            volume.write({"configmap.yaml": adapters_file(f"s3://{BUCKET}/sql/v2/", v2)})

            async def reloaded() -> str | None:
                root = await served_from_cache()
                return root if root and root != old_root else None

            new_root = await eventually(reloaded, timeout=WAIT, interval=0.1)
            unlisted_at = time.monotonic()
            assert (await chat(session, vllm))["model"] == "sql"
            await eventually(lambda: not exists(old_root), timeout=WAIT, interval=0.1)
            # Never sooner than the grace after vLLM stopped listing it.
            assert time.monotonic() - unlisted_at >= GRACE
            assert exists(new_root)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
            assert "lora_syncer_source_download_seconds_count 2.0" in metrics
    finally:
        code = await stop_popen(proc)
    log_text = log_path.read_text(errors="replace")
    assert code == 0, log_text[-3000:]
    assert s3_env(moto_endpoint)["AWS_SECRET_ACCESS_KEY"] not in log_text
