"""`lora-syncer emulator` as a real process: flags take effect, SIGTERM/SIGINT stop it with exit code 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

import aiohttp
import pytest

from tests.support.http import wait_until_answers
from tests.support.processes import clean_env


async def start(*flags: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lora_syncer",
        "emulator",
        "--log-format",
        "json",
        *flags,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(**(env or {})),
    )


async def wait_healthy(http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    await wait_until_answers(http, url + "/health", proc=proc)


async def stop(proc: asyncio.subprocess.Process, sig: signal.Signals) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_flags_and_clean_stop(free_port: Callable[[], int], sig: signal.Signals) -> None:
    """Served names, --lora-modules and disabled runtime updating apply; a stop signal exits 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await start(
        "--port", str(port), "--served-model-name", "base", "alias", "--lora-modules", "s=org/s",
        "--runtime-lora-updating", "false", "--version", "0.15.1",
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await wait_healthy(http, url, proc)
            async with http.get(url + "/v1/models") as resp:
                assert [m["id"] for m in (await resp.json())["data"]] == ["base", "alias", "s"]
            async with http.get(url + "/version") as resp:
                assert await resp.json() == {"version": "0.15.1"}
            async with http.post(
                url + "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "org/a"}
            ) as r:
                assert (r.status, await r.json()) == (404, {"detail": "Not Found"})
    finally:
        code = await stop(proc, sig)
    assert code == 0


async def test_faults_from_environment(free_port: Callable[[], int]) -> None:
    """Fault flags can come from LORA_SYNCER_* variables and show in the control API."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LORA_SYNCER_FAILURE_RATE": "models=1,chat=0.5", "LORA_SYNCER_LOAD_DELAY": "0.01"}
    proc = await start("--port", str(port), env=env)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await wait_healthy(http, url, proc)
            async with http.get(url + "/v1/models") as resp:
                assert resp.status == 500
            async with http.get(url + "/_emulator/faults") as resp:
                faults = await resp.json()
            assert (faults["failure_rate"], faults["load_delay"]) == ({"models": 1.0, "chat": 0.5}, 0.01)
    finally:
        code = await stop(proc, signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize(
    "flags", [["--latency", "nowhere=1"], ["--failure-rate", "chat=2"], ["--lora-modules", "x"]]
)
async def test_bad_flags_exit_2(flags: list[str]) -> None:
    """Invalid fault or module flags end with exit code 2 and a message, not a traceback."""
    proc = await start("--port", "0", *flags)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    assert stderr.startswith(b"lora-syncer: error: " + flags[0].encode()), stderr
    assert stderr.count(b"\n") == 1 and b"Traceback" not in stderr
    assert b"Traceback" not in stderr


async def test_bad_lora_module_path_exit_2() -> None:
    """A --lora-modules path that cannot load refuses to start (exit 2) with vLLM's reason."""
    proc = await start("--port", "0", "--lora-modules", "bad=/definitely/missing", "--no-hub-ids")
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    assert b"No adapter found" in stderr
