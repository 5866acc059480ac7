"""`python -m lora_syncer ...` as a child process, with a clean environment and its output in a file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tests.support.wait import WAIT

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without LORA_SYNCER_* and the other variables the CLI reads, the checkout first on PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LORA_SYNCER_") and k not in ("DYNAMIC_LORA_ROLLOUT_CONFIG", "VLLM_API_KEY")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@dataclass
class Child:
    """One `python -m lora_syncer ...` process; its stdout and stderr (JSON log lines) go to a file."""

    proc: asyncio.subprocess.Process
    log_path: Path
    port: int

    @classmethod
    async def spawn(
        cls, args: Sequence[str], log_path: Path, port: int, env: dict[str, str] | None = None
    ) -> Self:
        """Start `python -m lora_syncer ARGS`; `port` is the one it was told to serve on."""
        log = await asyncio.to_thread(log_path.open, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lora_syncer",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env if env is not None else clean_env(),
                cwd=str(log_path.parent),
            )
        finally:
            log.close()
        return cls(proc, log_path, port)

    @property
    def metrics_port(self) -> int:
        """The port of `lora-syncer run`'s health and metrics server (the one it was given)."""
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """The log lines that are JSON objects."""
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def stop(self, sig: int = signal.SIGTERM, within: float = WAIT) -> int:
        """Send `sig` and wait for the exit code; kill it (and return -9) if it outlives `within`."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def run_args(config: Path, server: str, metrics_port: int, *extra: str) -> list[str]:
    """`lora-syncer run` flags for a quick syncer on 127.0.0.1 logging JSON."""
    return [
        "run",
        "--config",
        str(config),
        "--server",
        server,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
        "--health-check-interval",
        "0.05",
        "--reconcile-trigger",
        "0.5",
        "--backoff-initial",
        "0.2",
        "--log-format",
        "json",
        *extra,
    ]


def popen_run(
    config: Path, server: str, metrics_port: int, log_path: Path, *flags: str, env: Mapping[str, str] = {}
) -> subprocess.Popen[bytes]:
    """`lora-syncer run FLAGS` as a plain (not asyncio) process logging JSON lines to `log_path`,
    in this environment plus `env`, unbuffered: the e2e tier's syncer next to a real vLLM."""
    args = ["run", "--config", str(config), "--server", server]
    args += [
        "--metrics-port",
        str(metrics_port),
        "--metrics-host",
        "127.0.0.1",
        "--health-check-interval",
        "0.2",
    ]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lora_syncer", *args, *flags, "--log-format", "json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )


async def stop_popen(proc: subprocess.Popen[bytes], within: float = 30) -> int:
    """SIGTERM to a `popen_run` process, then its exit code; killed (TimeoutExpired raised) if it
    outlives `within` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(proc.wait, within)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def run_demo(*args: str, timeout: float, env: Mapping[str, str] = {}) -> subprocess.CompletedProcess[str]:
    """`python -m lora_syncer demo ARGS` to completion from the checkout's root, stdin closed, in
    this environment plus `env` with NO_COLOR set (plain text, as a pipe gets it)."""
    return subprocess.run(
        [sys.executable, "-m", "lora_syncer", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", **env},
        check=False,
        cwd=ROOT,
    )
