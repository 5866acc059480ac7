"""`lora-syncer` as a real process: `run` (and the upstream image's flag-only and env-only forms),
SIGTERM in the middle of a pass, a restart picking up the server's state, `check` and `plan`.

The emulated vLLM runs in the test process; the syncer is `python -m lora_syncer` in a child.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sync_harness import adapters_yaml, eventually

from lora_syncer.emulator import Emulator
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.processes import Child as ProcessChild
from tests.support.processes import clean_env
from tests.support.seeds import EXAMPLES

EXIT_WAIT = 20.0  # bound on waiting for a child to exit (never reached when it behaves)


class Child(ProcessChild):
    """`python -m lora_syncer ...` (tests.support.processes.Child) with what these tests ask of it."""

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    async def wait_exit(self) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=EXIT_WAIT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(f"process did not exit within {EXIT_WAIT}s; log:\n{self.log_text()[-3000:]}")

    async def terminate(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    async def get(self, http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
        async with http.get(f"http://127.0.0.1:{self.metrics_port}{path}") as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        async def ready() -> bool:
            if self.proc.returncode is not None:
                pytest.fail(f"process exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            try:
                code, _ = await self.get(http, "/readyz")
            except aiohttp.ClientConnectionError:
                return False
            return code == 200

        await eventually(ready, "the child's /readyz 200", within=30)


@pytest_asyncio.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await spawn(args, env=..., metrics_port=...)` -> Child; every child is killed at teardown."""
    children: list[Child] = []

    async def start(
        args: Sequence[str], *, env: dict[str, str] | None = None, metrics_port: int | None = None
    ) -> Child:
        # No metrics port: 0, never asked for (`get` and `wait_ready` are for children given one).
        log_path = tmp_path / f"child{len(children)}.log"
        child = await Child.spawn(args, log_path, metrics_port or 0, env=env or clean_env())
        children.append(child)
        return child

    yield start
    for child in children:
        await child.kill()


def _run_args(config: Path, server: str | None, port: int, *extra: str) -> list[str]:
    args = ["run", "--config", str(config), "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
    if server is not None:
        args += ["--server", server]
    return [*args, "--health-check-interval", "0.05", "--log-format", "json", *extra]


ADAPTERS = [(f"p-{i}", f"org/p-{i}") for i in range(8)]


class TestRun:
    async def test_run_syncs_and_exits_zero_on_sigterm(
        self, emulator: Emulator, http: aiohttp.ClientSession, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """`lora-syncer run` loads the file's adapters, serves /readyz, and exits 0 on SIGTERM without unloading."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": adapters_yaml(ADAPTERS[:3])})
        port = free_port()
        child = await spawn(_run_args(vol.path("configmap.yaml"), emulator.url, port), metrics_port=port)
        await child.wait_ready(http)
        assert emulator.loaded() == dict(ADAPTERS[:3])
        vol.write({"configmap.yaml": adapters_yaml(ADAPTERS[1:4], not_exist=["p-0"])})
        await eventually(lambda: emulator.loaded() == dict(ADAPTERS[1:4]), "the swap applied")
        assert await child.terminate() == 0
        assert [c.name for c in emulator.calls if c.op == "unload"] == ["p-0"]
        assert child.events("lora-syncer stopped")
        # JSON log lines about an adapter carry adapter=<id>.
        assert {e["adapter"] for e in child.events("load done")} == {"p-0", "p-1", "p-2", "p-3"}

    async def test_upstream_flags_without_subcommand(
        self, emulator: Emulator, http: aiohttp.ClientSession, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """The old image's form `--config X --reconcile-trigger 1` (server from the file's host/port) runs the syncer."""
        cfg = tmp_path / "configmap.yaml"
        cfg.write_text(adapters_yaml(ADAPTERS[:2], host="127.0.0.1", port=emulator.port))
        port = free_port()
        env = clean_env(LORA_SYNCER_METRICS_PORT=str(port), LORA_SYNCER_METRICS_HOST="127.0.0.1")
        child = await spawn(["--config", str(cfg), "--reconcile-trigger", "1"], env=env, metrics_port=port)
        await child.wait_ready(http)
        assert emulator.loaded() == dict(ADAPTERS[:2])
        assert await child.terminate() == 0

    async def test_upstream_environment_variable_only(
        self, emulator: Emulator, http: aiohttp.ClientSession, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """With no arguments at all, DYNAMIC_LORA_ROLLOUT_CONFIG names the file, as in the old image."""
        cfg = tmp_path / "adapters.yaml"
        cfg.write_text(adapters_yaml(ADAPTERS[:2], host="127.0.0.1", port=emulator.port))
        port = free_port()
        env = clean_env(
            DYNAMIC_LORA_ROLLOUT_CONFIG=str(cfg),
            LORA_SYNCER_METRICS_PORT=str(port),
            LORA_SYNCER_METRICS_HOST="127.0.0.1",
            LORA_SYNCER_HEALTH_CHECK_INTERVAL="0.05",
        )
        child = await spawn([], env=env, metrics_port=port)
        await child.wait_ready(http)
        assert emulator.loaded() == dict(ADAPTERS[:2])
        code, body = await child.get(http, "/status")
        assert code == 200 and body["syncer"]["config"]["file"] == str(cfg)
        assert await child.terminate() == 0

    async def test_invalid_setting_is_a_clean_exit(self, spawn: Any, tmp_path: Path) -> None:
        """A bad flag value exits non-zero with the flag named and no traceback."""
        child = await spawn(["run", "--config", str(tmp_path / "x.yaml"), "--metrics-port", "70000"])
        assert await child.wait_exit() != 0
        text = child.log_path.read_text()
        assert "--metrics-port" in text and "Traceback" not in text


class TestSigterm:
    async def test_second_signal_exits_at_once(
        self, emulator: Emulator, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """A second SIGTERM during the graceful shutdown ends the process at once, with status 1."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": adapters_yaml(ADAPTERS)})
        emulator.faults.load_delay = 10.0  # in-flight loads hold the graceful shutdown (grace 120 s)
        port = free_port()
        args = _run_args(vol.path("configmap.yaml"), emulator.url, port, "--shutdown-grace", "120")
        child = await spawn(args, metrics_port=port)
        await eventually(lambda: emulator.call_log.admin_in_flight >= 1, "loads in flight", within=30)
        child.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: child.events("shutting down"), "the graceful shutdown started", within=30)
        child.proc.send_signal(signal.SIGTERM)
        assert await child.wait_exit() == 1
        assert [e["signal"] for e in child.events("second signal: exiting now")] == ["SIGTERM"]
        assert not child.events("lora-syncer stopped")  # it did not wait for the grace period
        emulator.faults.load_delay = 0.0

    async def test_sigterm_mid_pass_then_restart_resumes_from_the_server(
        self, emulator: Emulator, http: aiohttp.ClientSession, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """SIGTERM during slow loads: in-flight loads finish within the grace, exit 0, nothing unloaded; a restart loads only what is missing."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": adapters_yaml(ADAPTERS)})
        emulator.faults.load_delay = 0.8
        port = free_port()
        args = _run_args(
            vol.path("configmap.yaml"), emulator.url, port, "--max-concurrency", "4", "--shutdown-grace", "10"
        )
        child = await spawn(args, metrics_port=port)
        await eventually(lambda: emulator.call_log.admin_in_flight >= 2, "loads in flight", within=30)
        child.proc.send_signal(signal.SIGTERM)
        assert await child.wait_exit() == 0
        emulator.faults.load_delay = 0.0
        await eventually(lambda: emulator.call_log.admin_in_flight == 0, "the server idle")

        loaded_at_exit = emulator.loaded()
        assert 1 <= len(loaded_at_exit) < len(ADAPTERS)  # stopped mid-pass
        assert all(c.op == "load" and c.status == 200 for c in emulator.calls)  # no unload, nothing cut off
        # Every load the server completed was seen completed by the syncer (not cancelled mid-call).
        assert {e["adapter"] for e in child.events("load done")} == set(loaded_at_exit)
        assert not child.events("shutdown grace period over; cancelled in-flight calls")

        emulator.clear_calls()
        port2 = free_port()
        again = await spawn(_run_args(vol.path("configmap.yaml"), emulator.url, port2), metrics_port=port2)
        await again.wait_ready(http)
        assert emulator.loaded() == dict(ADAPTERS)
        reloaded = {c.name for c in emulator.calls if c.op == "load"}
        assert reloaded == set(ADAPTERS_NAMES) - set(loaded_at_exit)  # no duplicates, nothing lost
        assert all(c.op == "load" and c.status == 200 for c in emulator.calls)
        assert await again.terminate() == 0
        assert not [c for c in emulator.calls if c.op == "unload"]

    async def test_sigterm_with_loads_longer_than_the_grace(
        self, emulator: Emulator, spawn: Any, tmp_path: Path, free_port: Any
    ) -> None:
        """Loads outlasting --shutdown-grace are abandoned after the grace; the exit is still 0 and nothing is unloaded."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": adapters_yaml(ADAPTERS[:2])})
        emulator.faults.load_delay = 5.0
        port = free_port()
        args = _run_args(vol.path("configmap.yaml"), emulator.url, port, "--shutdown-grace", "0.2")
        child = await spawn(args, metrics_port=port)
        await eventually(lambda: emulator.call_log.admin_in_flight >= 1, "a load in flight", within=30)
        child.proc.send_signal(signal.SIGTERM)
        assert await child.wait_exit() == 0
        assert child.events("shutdown grace period over; cancelled in-flight calls")
        assert child.events("lora-syncer stopped")
        assert not [c for c in emulator.calls if c.op == "unload"]


ADAPTERS_NAMES = [name for name, _ in ADAPTERS]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lora_syncer", *args]


async def _run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *_cli(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
        cwd=str(cwd),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=EXIT_WAIT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# The guide's own ConfigMap manifest (two comment lines, then the ConfigMap).
SEED_MANIFEST = (EXAMPLES / "qwen3-32b-rewrite" / "00-adapters.yaml").read_text()

BAD_FILE = """\
vLLMLoRAConfig:
  ensureExist:
    models:
    - id: a
      source: org/a
    - id: b
      source: ""
"""


class TestCheck:
    async def test_good_file_and_manifest_pass(self, tmp_path: Path) -> None:
        """`check` exits 0 and says OK for a valid adapters file and for the guide's whole ConfigMap manifest."""
        good = tmp_path / "good.yaml"
        good.write_text(adapters_yaml(ADAPTERS[:2]))
        manifest = tmp_path / "cm.yaml"
        manifest.write_text(SEED_MANIFEST)
        code, out, err = await _run_cli("check", str(good), str(manifest), cwd=tmp_path)
        assert code == 0, err
        assert f"{good}: OK" in out and f"{manifest}: OK" in out
        assert "2 to keep loaded" in out

    async def test_bad_file_fails_with_file_line_and_path(self, tmp_path: Path) -> None:
        """`check` exits 1 and prints `file:line: error: path: message` for an invalid file."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(BAD_FILE)
        code, _, err = await _run_cli("check", str(bad), cwd=tmp_path)
        assert code == 1
        assert f"{bad}:7: error: vLLMLoRAConfig.ensureExist.models[1].source: must not be empty" in err
        assert f"{bad}: INVALID (1 error(s))" in err

    async def test_bad_manifest_reports_manifest_lines(self, tmp_path: Path) -> None:
        """An error inside a ConfigMap manifest's embedded file is reported at the manifest's line."""
        manifest = tmp_path / "cm.yaml"
        manifest.write_text(
            SEED_MANIFEST.replace("source: ttt421/nec119-small-segment-lora\n", "source: 7\n", 1)
        )
        code, _, err = await _run_cli("check", str(manifest), cwd=tmp_path)
        assert code == 1
        # Line 16 of the manifest holds `source: 7`.
        assert ":16: error: vLLMLoRAConfig.ensureExist.models[0].source: must be a string" in err, err


class TestPlan:
    async def test_plan_against_the_emulator_changes_nothing(
        self, emulator: Emulator, tmp_path: Path
    ) -> None:
        """`plan` prints the loads, reloads, unloads and skips one pass would make, and makes none of them."""
        async with aiohttp.ClientSession() as s:
            for name, path in (("keep", "org/keep"), ("old-version", "org/v1"), ("drop", "org/drop")):
                async with s.post(
                    emulator.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
                ) as resp:
                    assert resp.status == 200
        emulator.clear_calls()
        cfg = tmp_path / "adapters.yaml"
        cfg.write_text(
            adapters_yaml(
                [("keep", "org/keep"), ("old-version", "org/v2"), ("new", "org/new"), ("both", "org/both")],
                not_exist=["drop", "both"],
            )
        )
        code, out, err = await _run_cli("plan", "--config", str(cfg), "--server", emulator.url, cwd=tmp_path)
        assert code == 0, err
        assert f"Plan against {emulator.url}:" in out
        assert "load    new from org/new" in out
        assert "reload  old-version from org/v2 (in place)" in out
        assert "unload  drop" in out
        assert "skip    both  -- conflict" in out
        assert "1 loaded as declared: keep" in out
        assert emulator.calls == []
        assert emulator.loaded() == {"keep": "org/keep", "old-version": "org/v1", "drop": "org/drop"}

        code, out, _ = await _run_cli(
            "plan", "--config", str(cfg), "--server", emulator.url, "--output", "json", cwd=tmp_path
        )
        assert code == 0
        plan = json.loads(out)
        assert {(a["op"], a["adapter"]) for a in plan["actions"]} == {
            ("load", "new"),
            ("reload", "old-version"),
            ("unload", "drop"),
        }

    async def test_plan_with_server_down_exits_two(self, tmp_path: Path, free_port: Any) -> None:
        """`plan` against an unreachable server exits 2 and suggests --offline."""
        cfg = tmp_path / "adapters.yaml"
        cfg.write_text(adapters_yaml(ADAPTERS[:1]))
        server = f"http://127.0.0.1:{free_port()}"
        code, _, err = await _run_cli("plan", "--config", str(cfg), "--server", server, cwd=tmp_path)
        assert code == 2 and "--offline" in err
