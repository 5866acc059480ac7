"""Declared remote sources through the whole syncer: a real S3-compatible server (moto) and a
local HTTP server as sources, the emulator as vLLM, the sidecar in-process (or as a process).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from sync_harness import SyncEnv, eventually, metric_sum, metric_value

from lora_syncer.sources.cache import MARKER_SUFFIX, TMP_DIR
from lora_syncer.sources.digest import directory_checksum
from tests.support.emulator import running_emulator
from tests.support.kubelet import ConfigMapVolume
from tests.support.net import free_port
from tests.support.processes import Child, clean_env, run_args
from tests.support.sources_servers import FileServer, s3_client, tar_gz

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "models"


def adapter_files(rank: int = 8, salt: str = "") -> dict[str, bytes]:
    """A PEFT adapter's files (config and stand-in weights: the emulator checks the rank)."""
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "Qwen/Qwen3-32B",
    }
    return {
        "adapter_config.json": json.dumps(config).encode(),
        "adapter_model.safetensors": hashlib.sha256(salt.encode()).digest() * 4096,
    }


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def adapters_file(entries: list[dict[str, str]]) -> str:
    """An adapters file whose ensureExist holds `entries` ({id, source, checksum?})."""
    lines = ["vLLMLoRAConfig:", "  defaultBaseModel: Qwen/Qwen3-32B", "  ensureExist:", "    models:"]
    for e in entries:
        lines.append(f"    - id: {e['id']}")
        lines.extend(f"      {k}: {v}" for k, v in e.items() if k != "id")
    return "\n".join(lines) + "\n"


def isdir(path: str) -> bool:
    return os.path.isdir(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def versions(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.is_dir() and p.name != TMP_DIR}


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Client:
    return s3_client(moto_endpoint, monkeypatch, BUCKET)


def upload(s3: S3Client, prefix: str, files: dict[str, bytes], tmp: Path) -> str:
    """Put `files` under `prefix`; the checksum `lora-syncer digest` prints for them."""
    for name, data in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=data)
    return str(directory_checksum(write_dir(tmp / prefix.replace("/", "_"), files)))


async def test_s3_source_with_checksum_is_fetched_then_loaded_from_the_cache(
    sync_env: SyncEnv, s3: S3Client, tmp_path: Path
) -> None:
    env = sync_env
    cache = tmp_path / "cache"
    checksum = upload(s3, "sql/v1", adapter_files(salt="v1"), tmp_path)
    env.write(adapters_file([{"id": "sql", "source": f"s3://{BUCKET}/sql/v1/", "checksum": checksum}]))
    await env.start(adapter_cache=cache, reconcile_trigger=0.2)

    loaded = await env.wait_state("sql", "loaded")
    root = env.emulator.loaded()["sql"]
    assert Path(root).parent == cache and isdir(root)
    assert loaded["observedRoot"] == root
    assert sorted(os.listdir(root)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (cache / (Path(root).name + MARKER_SUFFIX)).is_file()

    # Later passes compare with the cached path: no reload, no new download.
    passes = await env.passes()
    await eventually(lambda: _more(env, passes + 3), "three more passes")
    assert len(env.calls("load", "sql")) == 1
    metrics = await env.metrics()
    assert metric_sum(metrics, "lora_syncer_source_download_bytes_total") >= 8192 * 16
    assert metric_sum(metrics, "lora_syncer_source_download_seconds_count") == 1
    assert (metric_value(metrics, "lora_syncer_adapter_cache_bytes") or 0) > 0
    status = await env.status()
    assert status["adapterCache"]["versions"] == 1
    assert status["adapterCache"]["overflowBytes"] == 0
    # Credentials never reach /status nor the logs' view of it.
    assert "moto-test-secret" not in json.dumps(status)


async def _more(env: SyncEnv, n: float) -> bool:
    return bool(await env.passes() >= n)


async def test_checksum_mismatch_fails_and_never_loads(
    sync_env: SyncEnv, s3: S3Client, tmp_path: Path
) -> None:
    env = sync_env
    cache = tmp_path / "cache"
    upload(s3, "bad/v1", adapter_files(salt="bad"), tmp_path)
    wrong = "sha256:" + "0" * 64
    env.write(adapters_file([{"id": "bad", "source": f"s3://{BUCKET}/bad/v1", "checksum": wrong}]))
    await env.start(adapter_cache=cache, reconcile_trigger=0.1, backoff_initial=0.1, backoff_max=30.0)

    failed = await env.wait_state("bad", "failed")
    assert "checksum mismatch" in failed["lastError"] and wrong in failed["lastError"]
    # Retried only at the longest backoff (30 s, ±10% jitter), not the initial 0.1 s.
    assert failed["nextRetryInSeconds"] > 20
    passes = await env.passes()
    await eventually(lambda: _more(env, passes + 5), "five more passes")
    assert env.calls("load", "bad") == []
    assert versions(cache) == set() and os.listdir(cache / TMP_DIR) == []
    metrics = await env.metrics()
    assert (
        metric_value(metrics, "lora_syncer_source_download_failures_total", reason="checksum_mismatch") == 1
    )


async def test_two_adapters_sharing_one_source_share_one_download(sync_env: SyncEnv, tmp_path: Path) -> None:
    env = sync_env
    server = FileServer(files={"/a/sql.tar.gz": tar_gz(adapter_files(salt="shared"))})
    server.chunk_delay = 0.01  # both declarations arrive while the download is running
    await server.start()
    try:
        url = server.url("/a/sql.tar.gz")
        checksum = "sha256:" + hashlib.sha256(server.files["/a/sql.tar.gz"]).hexdigest()
        env.write(
            adapters_file(
                [
                    {"id": "one", "source": url, "checksum": checksum},
                    {"id": "two", "source": url, "checksum": checksum},
                ]
            )
        )
        await env.start(
            adapter_cache=tmp_path / "cache", allowed_sources=(f"http://127.0.0.1:{server.port}",)
        )
        await env.wait_loaded(["one", "two"])
        roots = env.emulator.loaded()
        assert roots["one"] == roots["two"]
        assert server.requests["/a/sql.tar.gz"] == 1
        assert len(versions(tmp_path / "cache")) == 1
    finally:
        await server.stop()


async def test_a_download_runs_beside_the_passes_and_a_joining_adapter_shows_its_bytes(
    sync_env: SyncEnv, tmp_path: Path
) -> None:
    """Passes go on (and load other adapters) while a download runs; a second adapter declaring
    the same source joins the download in flight and shows its bytes, not 0."""
    env = sync_env
    archive = tar_gz({**adapter_files(salt="bg"), "extra.bin": os.urandom(1024 * 1024)})
    server = FileServer(files={"/bg.tar.gz": archive})
    server.midway = asyncio.Event()  # the second half waits until the test lets it go
    await server.start()
    try:
        url = server.url("/bg.tar.gz")
        checksum = "sha256:" + hashlib.sha256(archive).hexdigest()
        local = write_dir(tmp_path / "local", adapter_files(salt="local"))
        remote_one = {"id": "one", "source": url, "checksum": checksum}
        env.write(adapters_file([remote_one, {"id": "local", "source": str(local)}]))
        await env.start(
            adapter_cache=tmp_path / "cache",
            allowed_sources=(f"http://127.0.0.1:{server.port}", str(tmp_path)),
            reconcile_trigger=0.1,
        )

        async def half_downloaded(adapter_id: str) -> dict[str, Any] | None:
            a = await env.adapter(adapter_id)
            if a is None or a["state"] != "downloading":
                return None
            return a if a["progress"]["bytesDone"] >= len(archive) // 2 else None

        one = await eventually(lambda: half_downloaded("one"), "one half downloaded")
        assert one["progress"]["bytesTotal"] == len(archive)
        # The pass that started the download did not wait for it: the local adapter is loaded and
        # passes keep running.
        await env.wait_state("local", "loaded")
        passes = await env.passes()
        await eventually(lambda: _more(env, passes + 3), "three more passes during the download")

        env.write(
            adapters_file(
                [
                    remote_one,
                    {"id": "two", "source": url, "checksum": checksum},
                    {"id": "local", "source": str(local)},
                ]
            )
        )
        two = await eventually(lambda: half_downloaded("two"), "two joined the download")
        assert two["progress"] == (await env.adapter("one") or {})["progress"]
        assert "one" not in env.emulator.loaded()

        server.midway.set()
        await env.wait_loaded(["one", "two", "local"])
        roots = env.emulator.loaded()
        assert roots["one"] == roots["two"]
        assert server.requests["/bg.tar.gz"] == 1
        assert len(versions(tmp_path / "cache")) == 1
    finally:
        await server.stop()


async def test_remote_sources_need_the_cache_and_an_http_rule(sync_env: SyncEnv, tmp_path: Path) -> None:
    env = sync_env
    env.write(
        adapters_file(
            [{"id": "s3a", "source": "s3://models/x/"}, {"id": "web", "source": "https://h.example/a.tgz"}]
        )
    )
    await env.start()
    s3a = await env.wait_state("s3a", "forbidden_source")
    assert "s3:// sources need --adapter-cache DIR" in s3a["lastError"]
    web = await env.wait_state("web", "forbidden_source")
    assert "https:// sources need --adapter-cache DIR" in web["lastError"]
    assert env.calls("load") == []


async def test_new_version_is_fetched_and_reloaded_old_files_go_after_unlisted_and_grace(
    sync_env: SyncEnv, s3: S3Client, tmp_path: Path
) -> None:
    env = sync_env
    cache = tmp_path / "cache"
    grace = 1.5
    v1 = upload(s3, "chat/v1", adapter_files(salt="c1"), tmp_path)
    v2 = upload(s3, "chat/v2", adapter_files(salt="c2"), tmp_path)
    env.write(adapters_file([{"id": "chat", "source": f"s3://{BUCKET}/chat/v1/", "checksum": v1}]))
    # A budget of one byte: every version that may go, goes (once unlisted for the grace).
    await env.start(
        adapter_cache=cache, adapter_cache_max_bytes=1, adapter_cache_gc_grace=grace, reconcile_trigger=0.1
    )
    await env.wait_state("chat", "loaded")
    old_root = env.emulator.loaded()["chat"]
    # Loaded and declared: over budget, yet kept and reported as overflow.
    st = await eventually(lambda: _cache_status(env), "adapterCache in /status")
    assert st["overflowBytes"] > 0
    assert (metric_value(await env.metrics(), "lora_syncer_adapter_cache_overflow_bytes") or 0) > 0

    env.write(adapters_file([{"id": "chat", "source": f"s3://{BUCKET}/chat/v2/", "checksum": v2}]))
    await eventually(lambda: env.emulator.loaded().get("chat") not in (None, old_root), "chat reloaded")
    unlisted_at = time.monotonic()
    new_root = env.emulator.loaded()["chat"]
    assert Path(new_root).parent == cache and isdir(old_root)
    await eventually(lambda: not exists(old_root), "old version removed", within=30)
    # The GC clock counts the grace from the first pass that saw it unlisted: never sooner.
    assert time.monotonic() - unlisted_at >= grace
    assert not exists(old_root + MARKER_SUFFIX)
    assert isdir(new_root)
    assert len(env.calls("load", "chat")) == 2


async def _cache_status(env: SyncEnv) -> dict[str, Any] | None:
    st: dict[str, Any] | None = (await env.status()).get("adapterCache")
    return st if st and st["overflowBytes"] else None


async def test_a_listed_undeclared_version_is_never_removed(
    sync_env: SyncEnv, s3: S3Client, tmp_path: Path
) -> None:
    env = sync_env
    cache = tmp_path / "cache"
    v1 = upload(s3, "keep/v1", adapter_files(salt="k1"), tmp_path)
    env.write(adapters_file([{"id": "keep", "source": f"s3://{BUCKET}/keep/v1/", "checksum": v1}]))
    await env.start(
        adapter_cache=cache, adapter_cache_max_bytes=1, adapter_cache_gc_grace=0.2, reconcile_trigger=0.1
    )
    await env.wait_state("keep", "loaded")
    root = env.emulator.loaded()["keep"]
    # Undeclared (no --prune): vLLM still lists it, so its files stay whatever the budget.
    env.write(adapters_file([]).replace("  ensureExist:\n    models:\n", ""))
    passes = await env.passes()
    await eventually(lambda: _more(env, passes + 10), "ten more passes")
    assert isdir(root) and env.emulator.loaded() == {"keep": root}


def test_no_boto3_import_with_local_sources_only(tmp_path: Path) -> None:
    """A pass with local sources (cache on) leaves boto3 unimported: checked in a fresh interpreter."""
    adapter = write_dir(tmp_path / "local", adapter_files())
    config = tmp_path / "config.yaml"
    config.write_text(adapters_file([{"id": "local", "source": str(adapter)}]))
    script = f"""
import asyncio, sys
from lora_syncer.app import Sidecar
from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.settings import SyncerSettings

async def main():
    emulator = Emulator(EmulatorConfig())
    await emulator.start("127.0.0.1", 0)
    sidecar = Sidecar(SyncerSettings(config={str(config)!r}, server=emulator.url, metrics_port=0,
                                     metrics_host="127.0.0.1", adapter_cache={str(tmp_path / "cache")!r}))
    await sidecar.start()
    for _ in range(3000):
        if sidecar.reconciler.status.passes >= 2 and emulator.loaded():
            break
        await asyncio.sleep(0.01)
    await sidecar.stop()
    await emulator.stop()
    print(sorted(emulator.loaded()), "boto3" in sys.modules, "botocore" in sys.modules)

asyncio.run(main())
"""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['local'] False False"


async def test_sidecar_killed_mid_download_recovers_at_next_start(tmp_path: Path) -> None:
    """`lora-syncer run` SIGKILLed while a slow server sends the archive: the next start cleans up and loads."""
    archive = tar_gz({**adapter_files(salt="slow"), "big.bin": os.urandom(3 * 1024 * 1024)})
    server = FileServer(files={"/slow.tar.gz": archive})
    server.chunk_delay = 0.05  # ~2.5 s for 3 MiB: plenty of time to kill it mid-way
    await server.start()
    cache = tmp_path / "cache"
    volume = ConfigMapVolume(tmp_path / "config")
    url = server.url("/slow.tar.gz")
    checksum = "sha256:" + hashlib.sha256(archive).hexdigest()
    volume.write({"configmap.yaml": adapters_file([{"id": "slow", "source": url, "checksum": checksum}])})
    try:
        async with running_emulator() as emulator, aiohttp.ClientSession() as http:

            async def start(name: str) -> Child:
                port = free_port()
                args = run_args(
                    volume.path("configmap.yaml"),
                    emulator.url,
                    port,
                    "--adapter-cache",
                    str(cache),
                    "--allowed-sources",
                    f"http://127.0.0.1:{server.port}",
                )
                return await Child.spawn(args, tmp_path / f"{name}.log", port, env=clean_env())

            async def downloading(child: Child) -> bool:
                try:
                    async with http.get(child.url + "/status") as resp:
                        body = await resp.json()
                except (aiohttp.ClientError, ValueError):
                    return False
                a = body["syncer"]["adapters"].get("slow") or {}
                return a.get("state") == "downloading" and a.get("progress", {}).get("bytesDone", 0) > 0

            first = await start("first")
            try:
                await eventually(lambda: downloading(first), "first sidecar downloading", within=60)
                first.proc.send_signal(signal.SIGKILL)
                await first.proc.wait()
            finally:
                await first.kill()
            leftovers = os.listdir(cache / TMP_DIR)
            assert leftovers, "a killed download leaves its temporary directory"
            assert versions(cache) == set() and emulator.loaded() == {}

            server.chunk_delay = 0.0
            second = await start("second")
            try:
                await eventually(lambda: "slow" in emulator.loaded(), "loaded after restart", within=60)
                assert Path(emulator.loaded()["slow"]).parent == cache
                assert not set(os.listdir(cache / TMP_DIR)) & set(leftovers)
                assert "adapter_cache_cleaned" in second.log_text()
            finally:
                assert await second.stop() == 0
    finally:
        await server.stop()


def test_grace_shorter_than_the_upstream_timeout_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lora_syncer.cli import main

    code = main(["run", "--adapter-cache", str(tmp_path / "c"), "--adapter-cache-gc-grace", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--adapter-cache-gc-grace 10 is shorter than --upstream-timeout 600" in err[0]
    assert not (tmp_path / "c").exists()
