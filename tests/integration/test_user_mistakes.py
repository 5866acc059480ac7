"""A user's mistakes, made the way a user makes them: a real file, `lora-syncer` as a child
process, the emulated vLLM on 127.0.0.1. Each test checks the message and that nothing was
unloaded or misrouted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sync_harness import adapters_yaml

from lora_syncer.emulator import Emulator
from tests.support.emulator import running_emulator
from tests.support.kubelet import configmap_volume
from tests.support.net import free_port
from tests.support.processes import Child, run_args
from tests.support.wait import WAIT, eventually

THREE = [("ad-a", "org/adapter-a"), ("ad-b", "org/adapter-b"), ("ad-c", "org/adapter-c")]


@pytest_asyncio.fixture
async def vllm() -> AsyncIterator[Emulator]:
    async with running_emulator() as emulator:
        yield emulator


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, None


def _adapters_file(tmp_path: Path, adapters: Sequence[tuple[str, str] | tuple[str, str, str]]) -> Path:
    config = tmp_path / "adapters.yaml"
    config.write_text(adapters_yaml(adapters))
    return config


@contextlib.asynccontextmanager
async def _spawned(args: Sequence[str], log_path: Path, port: int) -> AsyncIterator[Child]:
    """`python -m lora_syncer ARGS`, stopped when the block ends."""
    child = await Child.spawn(args, log_path, port)
    try:
        yield child
    finally:
        await child.stop()


def _running(tmp_path: Path, config: Path, server: str, *extra: str) -> AbstractAsyncContextManager[Child]:
    """`lora-syncer run` on `config` against `server` (run_args), stopped when the block ends."""
    port = free_port()
    return _spawned(run_args(config, server, port, *extra), tmp_path / "syncer.log", port)


def _tail(child: Child) -> Callable[[], str]:
    """What an unmet wait shows: the end of the child's log."""
    return lambda: child.log_text()[-3000:]


def _unloads(vllm: Emulator) -> list[str]:
    return [c.name for c in vllm.calls if c.op == "unload"]


async def _synced(http: aiohttp.ClientSession, child: Child, vllm: Emulator, names: set[str]) -> None:
    async def ready() -> bool:
        status, _ = await _json(http, child.url + "/readyz")
        return status == 200 and set(vllm.loaded()) == names

    await eventually(ready, message=_tail(child))


async def _passes(http: aiohttp.ClientSession, child: Child) -> int:
    _, body = await _json(http, child.url + "/status")
    return int(body["syncer"]["sync"]["passes"]) if isinstance(body, dict) else 0


async def _more_passes(http: aiohttp.ClientSession, child: Child, count: int) -> None:
    """Wait until `count` more reconcile passes (resyncs included) have run."""
    start = await _passes(http, child)

    async def enough() -> bool:
        return await _passes(http, child) >= start + count

    await eventually(enough, message=_tail(child))


@pytest.mark.asyncio
async def test_slow_writer_is_not_acted_on_until_it_closes_the_file(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """An editor writes a valid prefix declaring one adapter, flushes, pauses, then writes the rest."""
    config = tmp_path / "adapters.yaml"
    full = adapters_yaml(THREE)
    config.write_text(full)
    # --prune-max 100%: only the close-write wait stands between the prefix and two unloads.
    async with _running(tmp_path, config, vllm.url, "--prune", "--prune-max", "100%") as child:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        cut = full.index("    - id: ad-b")
        prefix, rest = full[:cut], full[cut:]
        with config.open("w") as handle:  # ONE open handle, as an editor or `cat > file` holds it
            handle.write(prefix)
            handle.flush()
            await _more_passes(http, child, 3)  # several resyncs see the half-written file
            assert _unloads(vllm) == []
            assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}
            handle.write(rest)
        await _more_passes(http, child, 3)
        assert _unloads(vllm) == [], _tail(child)()
        assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}


@pytest.mark.asyncio
async def test_truncated_file_is_held_by_prune_max_and_withdrawn_when_fixed(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """A file cut short (closed, valid) would prune two of three adapters: held, reported, then fixed."""
    config = _adapters_file(tmp_path, THREE)
    # A long resync: the hold cannot be confirmed while the test looks at it.
    async with _running(tmp_path, config, vllm.url, "--prune", "--reconcile-trigger", "300") as child:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:1]))

        async def held() -> Any:
            _, body = await _json(http, child.url + "/status")
            return body["syncer"]["sync"]["pruneHold"] if isinstance(body, dict) else None

        hold = await eventually(held, message=_tail(child))
        assert hold["adapters"] == ["ad-b", "ad-c"]
        assert hold["limit"] == 1  # 50% of 3 loaded, rounded down
        assert "--prune-max" in hold["reason"]
        _, metrics = await _json(http, child.url + "/metrics")
        assert "lora_syncer_prune_held_adapters 2.0" in metrics
        lines = [e for e in child.logs() if str(e.get("event", "")).startswith("prune held")]
        assert len(lines) == 1 and lines[0]["adapters"] == ["ad-b", "ad-c"]

        config.write_text(adapters_yaml(THREE))  # the user notices and restores the file

        async def released() -> bool:
            return await held() is None

        await eventually(released, message=_tail(child))
        assert _unloads(vllm) == []
        assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}
        assert any(str(e.get("event", "")).startswith("prune hold withdrawn") for e in child.logs())


@pytest.mark.asyncio
async def test_prune_hold_is_confirmed_by_one_more_unchanged_resync(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """A deliberate cut (the file stays as it is) goes through after one more resync."""
    config = _adapters_file(tmp_path, THREE)
    async with _running(tmp_path, config, vllm.url, "--prune") as child:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:1]))
        await eventually(lambda: set(vllm.loaded()) == {"ad-a"}, message=_tail(child))
        assert sorted(_unloads(vllm)) == ["ad-b", "ad-c"]
        events = [str(e.get("event", "")) for e in child.logs()]
        held = next(i for i, e in enumerate(events) if e.startswith("prune held"))
        confirmed = next(i for i, e in enumerate(events) if e.startswith("prune confirmed"))
        assert held < confirmed


@pytest.mark.asyncio
async def test_small_prune_within_the_limit_is_not_held(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    config = _adapters_file(tmp_path, THREE)
    async with _running(
        tmp_path, config, vllm.url, "--prune", "--prune-max", "1", "--reconcile-trigger", "300"
    ) as child:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:2]))
        await eventually(lambda: _unloads(vllm) == ["ad-c"], message=_tail(child))
        assert not any(str(e.get("event", "")).startswith("prune held") for e in child.logs())


CLASS_NAMES = ("ClientConnectorError", "ClientConnectorDNSError", "NonHttpUrlClientError", "ClientOSError")


async def _readyz(http: aiohttp.ClientSession, child: Child) -> tuple[int, str]:
    status, body = await _json(http, child.url + "/readyz")
    return status, "; ".join(body["reasons"]) if isinstance(body, dict) else ""


@pytest.mark.asyncio
async def test_unreachable_server_readyz_and_log_say_why_in_words(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`--server` names a port nothing listens on: /readyz and the wait's progress lines say so."""
    config = _adapters_file(tmp_path, THREE)
    server = f"http://127.0.0.1:{free_port()}"
    async with _running(tmp_path, config, server) as child:

        async def refused() -> str | None:
            status, reason = await _readyz(http, child)
            return reason if status == 503 and "connection refused" in reason else None

        reason = await eventually(refused, message=_tail(child))
        assert reason.startswith("vLLM server unreachable") and server in reason
        assert "first reconcile pass" not in reason

        def progress() -> dict[str, Any] | None:
            return next((e for e in child.logs() if e.get("event") == "waiting for the vLLM server"), None)

        line = await eventually(progress, message=_tail(child))
        assert line["server"] == server and "connection refused" in line["error"]
        assert line["waited_seconds"] > 0
        assert not any(name in child.log_text() for name in CLASS_NAMES)


@pytest.mark.asyncio
async def test_unknown_host_is_said_in_words(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = _adapters_file(tmp_path, THREE)
    async with _running(tmp_path, config, "http://no-such-host.invalid:8000") as child:

        async def not_found() -> bool:
            status, reason = await _readyz(http, child)
            return status == 503 and "host name not found" in reason

        await eventually(not_found, message=_tail(child))
        assert not any(name in child.log_text() for name in CLASS_NAMES)


@pytest.mark.asyncio
async def test_load_failed_names_the_source(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    config = _adapters_file(tmp_path, [("ad-a", "org/adapter-a"), ("ad-x", "/no/such/adapter")])
    async with _running(tmp_path, config, vllm.url) as child:

        def failed() -> dict[str, Any] | None:
            return next((e for e in child.logs() if e.get("event") == "load failed"), None)

        line = await eventually(failed, message=_tail(child))
        assert line["adapter"] == "ad-x" and line["source"] == "/no/such/adapter"
        assert "attempts" in line
        assert _unloads(vllm) == []


@pytest.mark.asyncio
async def test_runtime_updating_off_is_not_logged_with_zero_attempts(tmp_path: Path) -> None:
    from lora_syncer.emulator import EmulatorConfig

    config = _adapters_file(tmp_path, THREE)
    off_config = EmulatorConfig(runtime_lora_updating=False)
    async with running_emulator(off_config) as off, _running(tmp_path, config, off.url) as child:

        def said() -> bool:
            return "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in child.log_text()

        await eventually(said, message=_tail(child))
        await _more_passes_log(child)
        for line in child.logs():
            if str(line.get("event", "")).startswith("load failed"):
                assert line.get("attempts") != 0, line


async def _more_passes_log(child: Child) -> None:
    """A few more passes, judged by the log (the server refuses every load)."""
    start = len([e for e in child.logs() if e.get("event") == "reconcile pass done"])
    await eventually(
        lambda: len([e for e in child.logs() if e.get("event") == "reconcile pass done"]) >= start + 2,
        message=_tail(child),
    )


RULES = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: rewrite
spec:
  rules:
    - matches:
        - model:
            type: Exact
            value: small-segment-lora
      targets:
        - modelRewrite: "ad-typo-v1"
          weight: 90
        - modelRewrite: "ad-typo-v2"
          weight: 10
"""


@pytest.mark.asyncio
async def test_alias_with_no_loaded_target_makes_run_not_ready(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """The rules name versions the adapters file never declares (a typo): /readyz says which alias."""
    config = _adapters_file(tmp_path, THREE)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    args = ("--rules", str(rules), "--proxy-host", "127.0.0.1", "--proxy-port", str(free_port()))
    async with _running(tmp_path, config, vllm.url, *args) as child:
        expected = "proxy: alias 'small-segment-lora': none of its targets is loaded (ad-typo-v1, ad-typo-v2)"

        async def dead_alias() -> bool:
            # Once every declared adapter is loaded and the pass is over, the alias is the only reason left.
            status, reason = await _readyz(http, child)
            return status == 503 and reason == expected and set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}

        await eventually(dead_alias, message=_tail(child))
        rules.write_text(RULES.replace("ad-typo-v1", "ad-a"))  # fixed: one target is loaded

        async def ready() -> bool:
            return (await _readyz(http, child))[0] == 200

        await eventually(ready, message=_tail(child))


@pytest.mark.asyncio
async def test_metrics_and_proxy_on_the_same_port_is_said(tmp_path: Path) -> None:
    config = _adapters_file(tmp_path, THREE)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    args = run_args(config, "http://127.0.0.1:1", port, "--rules", str(rules), "--proxy-port", str(port))
    child = await Child.spawn(args, tmp_path / "syncer.log", port)
    assert await asyncio.wait_for(child.proc.wait(), timeout=WAIT) == 2
    assert "--proxy-port and --metrics-port are the same port" in child.log_text()


@pytest.mark.asyncio
async def test_status_drops_declared_for_adapters_the_file_no_longer_names(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    config = _adapters_file(tmp_path, THREE)
    async with _running(tmp_path, config, vllm.url) as child:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:1]))  # no --prune: b and c stay loaded

        async def undeclared() -> bool:
            _, body = await _json(http, child.url + "/status")
            adapters = body["syncer"]["adapters"] if isinstance(body, dict) else {}
            return {k: v["declared"] for k, v in adapters.items()} == {
                "ad-a": "present",
                "ad-b": "undeclared",
                "ad-c": "undeclared",
            }

        await eventually(undeclared, message=_tail(child))
        assert (await _readyz(http, child))[0] == 200
        assert _unloads(vllm) == []


async def _command(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`python -m lora_syncer ARGS` to completion: (exit code, stdout and stderr)."""
    child = await Child.spawn(list(args), tmp_path / "command.log", 0)
    code = await asyncio.wait_for(child.proc.wait(), timeout=WAIT)
    return code, child.log_text()


@pytest.mark.asyncio
async def test_plan_with_v1_on_the_server_url_says_to_drop_it(tmp_path: Path, vllm: Emulator) -> None:
    config = _adapters_file(tmp_path, THREE)
    code, out = await _command(tmp_path, "plan", "--config", str(config), "--server", vllm.url + "/v1")
    assert code == 2
    assert "drop the /v1" in out and repr(vllm.url) in out
    assert vllm.calls == []


@pytest.mark.asyncio
async def test_run_with_v1_on_the_server_url_says_to_drop_it(tmp_path: Path, vllm: Emulator) -> None:
    config = _adapters_file(tmp_path, THREE)
    code, out = await _command(tmp_path, *run_args(config, vllm.url + "/v1/", free_port()))
    assert code == 2 and "drop the /v1" in out
    assert vllm.loaded() == {}


@pytest.mark.asyncio
async def test_plan_does_not_say_nothing_to_do_above_skips(tmp_path: Path, vllm: Emulator) -> None:
    config = _adapters_file(tmp_path, [("ad-a", "org/adapter-a", "meta-llama/Other-8B")])
    code, out = await _command(
        tmp_path, "plan", "--config", str(config), "--server", vllm.url, "--base-model-policy", "enforce"
    )
    assert code == 0, out
    assert "skip    ad-a  -- base_model_mismatch" in out
    assert "nothing to do" not in out
    assert "nothing to load or unload now" in out


@pytest.mark.asyncio
async def test_plan_shows_a_prune_that_run_would_hold(tmp_path: Path, vllm: Emulator) -> None:
    vllm.preload({"ad-a": "org/adapter-a", "ad-b": "org/adapter-b", "ad-c": "org/adapter-c"})
    config = _adapters_file(tmp_path, THREE[:1])
    code, out = await _command(tmp_path, "plan", "--config", str(config), "--server", vllm.url, "--prune")
    assert code == 0, out
    assert "held    ad-b" in out and "held    ad-c" in out and "--prune-max (1)" in out
    assert "unload" not in out.split("held")[0]


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qwen3-32b-rewrite"
V1_V2 = {"small-segment-lora-v1", "small-segment-lora-v2"}


async def _chat(http: aiohttp.ClientSession, url: str, model: str) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with http.post(url + "/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


def _proxy(tmp_path: Path, metrics_port: int, *flags: str) -> AbstractAsyncContextManager[Child]:
    """`lora-syncer proxy FLAGS` on 127.0.0.1 logging JSON, stopped when the block ends."""
    port = free_port()
    args = ["proxy", *flags, "--proxy-host", "127.0.0.1", "--proxy-port", str(port)]
    args += ["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port), "--log-format", "json"]
    return _spawned(args, tmp_path / "proxy.log", port)


async def _first_answer(http: aiohttp.ClientSession, child: Child, model: str) -> int:
    """The status of the first chat answer once the proxy listens."""

    async def answers() -> int:
        try:
            return (await _chat(http, child.url, model))[0]
        except aiohttp.ClientError:
            return 0

    status: int = await eventually(answers, message=_tail(child))
    return status


@pytest.mark.asyncio
async def test_run_takes_the_configmap_manifest_and_rules_manifest(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """The user points `run` at the files they `kubectl apply`, not at the mounted keys."""
    proxy_port = free_port()
    args = (
        "--rules",
        str(EXAMPLE / "02-rules-90-10.yaml"),
        "--proxy-host",
        "127.0.0.1",
        "--proxy-port",
        str(proxy_port),
    )
    async with _running(tmp_path, EXAMPLE / "00-adapters.yaml", vllm.url, *args) as child:
        await _synced(http, child, vllm, V1_V2)
        status, body = await _chat(http, f"http://127.0.0.1:{proxy_port}", "small-segment-lora")
        assert status == 200, body
        _, state = await _json(http, child.url + "/status")
        assert set(state["proxy"]["aliases"]["small-segment-lora"]["targets"]) == V1_V2


@pytest.mark.asyncio
async def test_proxy_takes_the_rules_manifest(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    vllm.preload(dict.fromkeys(V1_V2, "ttt421/nec119-small-segment-lora"))
    rules = ("--rules", str(EXAMPLE / "02-rules-90-10.yaml"), "--server", vllm.url)
    async with _proxy(tmp_path, free_port(), *rules) as child:
        assert await _first_answer(http, child, "small-segment-lora") == 200


@pytest.mark.asyncio
async def test_proxy_pools_without_a_rules_file(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """The README's `proxy --pool old=URL@90 --pool new=URL@10`: no rules file needed."""
    async with running_emulator() as old, running_emulator() as new:
        metrics = free_port()
        pools = ("--pool", f"old={old.url}@90", "--pool", f"new={new.url}@10")
        async with _proxy(tmp_path, metrics, *pools) as child:
            assert await _first_answer(http, child, "Qwen/Qwen3-32B") == 200
            for _ in range(19):
                assert (await _chat(http, child.url, "Qwen/Qwen3-32B"))[0] == 200
            _, status = await _json(http, f"http://127.0.0.1:{metrics}/status")
            assert {p["name"]: p["weight"] for p in status["proxy"]["pools"]} == {"old": 90, "new": 10}


@pytest.mark.asyncio
async def test_run_reports_rules_naming_an_undeclared_adapter_once(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """The rules send 10% to a version the adapters file does not declare: a warning, a metric, one log line."""
    config = _adapters_file(tmp_path, [("ad-typo-v1", "org/adapter-a")])
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    args = ("--rules", str(rules), "--proxy-host", "127.0.0.1", "--proxy-port", str(free_port()))
    async with _running(tmp_path, config, vllm.url, *args) as child:
        await _synced(http, child, vllm, {"ad-typo-v1"})

        async def warnings() -> list[dict[str, Any]]:
            _, body = await _json(http, child.url + "/status")
            return body.get("crossCheck", {}).get("warnings", []) if isinstance(body, dict) else []

        found = await eventually(warnings, message=_tail(child))
        assert [(w["kind"], w["subject"]) for w in found] == [("undeclared_target", "ad-typo-v2")]
        _, metrics = await _json(http, child.url + "/metrics")
        assert 'lora_syncer_config_warnings{kind="undeclared_target"} 1.0' in metrics
        await _more_passes(http, child, 3)

        def lines() -> list[dict[str, Any]]:
            return [e for e in child.logs() if e.get("event") == "adapters file and rules file disagree"]

        assert len(lines()) == 1 and lines()[0]["subject"] == "ad-typo-v2"
        fixed = RULES.replace('        - modelRewrite: "ad-typo-v2"\n          weight: 10\n', "")
        fixed = fixed.replace("weight: 90", "weight: 100")
        assert fixed != RULES
        rules.write_text(fixed)

        async def cleared() -> bool:
            return await warnings() == []

        await eventually(cleared, message=_tail(child))
        _, metrics = await _json(http, child.url + "/metrics")
        assert 'lora_syncer_config_warnings{kind="undeclared_target"} 0.0' in metrics
        assert len(lines()) == 1
        assert _unloads(vllm) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["edited in place", "kubelet swap"])
async def test_a_rejected_rules_edit_is_logged_once(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession, how: str
) -> None:
    """A rules edit with a typo in `weight`: one log line, the last good rules keep routing."""
    config = _adapters_file(tmp_path, [("ad-typo-v1", "org/adapter-a"), ("ad-typo-v2", "org/adapter-b")])
    volume = configmap_volume(tmp_path / "rules", {"rules.yaml": RULES})
    plain = tmp_path / "rules.yaml"
    plain.write_text(RULES)
    rules = plain if how == "edited in place" else volume.path("rules.yaml")
    proxy_port = free_port()
    args = ("--rules", str(rules), "--proxy-host", "127.0.0.1", "--proxy-port", str(proxy_port))
    async with _running(tmp_path, config, vllm.url, *args) as child:
        await _synced(http, child, vllm, {"ad-typo-v1", "ad-typo-v2"})
        broken = RULES.replace("weight: 10", "weight: ten")
        if how == "edited in place":
            plain.write_text(broken)
        else:
            volume.write({"rules.yaml": broken})

        def rejected() -> list[dict[str, Any]]:
            return [e for e in child.logs() if str(e.get("event", "")).startswith("rules file rejected")]

        await eventually(rejected, message=_tail(child))
        await _more_passes(http, child, 3)
        assert len(rejected()) == 1, rejected()
        assert "weight" in " ".join(rejected()[0]["errors"])
        served = {(await _chat(http, f"http://127.0.0.1:{proxy_port}", "small-segment-lora"))[1]["model"]}
        assert served <= {"ad-typo-v1", "ad-typo-v2"}
