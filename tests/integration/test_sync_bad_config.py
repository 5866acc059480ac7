"""A bad adapters file arriving mid-run: nothing is unloaded, the last good file stays in force,
the error is visible (file, path, line) in /status and metrics, and a good file recovers."""

from __future__ import annotations

from typing import Any

import pytest
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_value

GOOD = adapters_yaml([("a", "org/a"), ("b", "org/b")], name="good")
RECOVERED = adapters_yaml([("b", "org/b"), ("c", "org/c")], not_exist=["a"], name="recovered")

DUPLICATE_IDS = """\
vLLMLoRAConfig:
  name: dup
  ensureExist:
    models:
    - id: a
      source: org/a
    - id: x
      source: org/x
    - id: a
      source: org/a2
"""

MALFORMED_YAML = """\
vLLMLoRAConfig:
  name: broken
  ensureExist:
    models:
    - id: a
      source: [org/a
"""

WRONG_TYPES = """\
vLLMLoRAConfig:
  name: typed
  port: eighty
  ensureExist:
    models:
    - id: a
      source: org/a
    - id: 42
      source: org/x
"""

MISSING_SOURCE = """\
vLLMLoRAConfig:
  name: nosource
  ensureExist:
    models:
    - id: a
      source: org/a
    - id: x
"""

# (file, expected (path, line) among the reported errors; line None: only check the path)
CASES: dict[str, tuple[str, str, int | None]] = {
    "duplicate ids": (DUPLICATE_IDS, "vLLMLoRAConfig.ensureExist.models[2].id", 9),
    "malformed yaml": (MALFORMED_YAML, "", None),
    "wrong types": (WRONG_TYPES, "vLLMLoRAConfig.ensureExist.models[1].id", 8),
    "missing source": (MISSING_SOURCE, "vLLMLoRAConfig.ensureExist.models[1].source", None),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_file_mid_run_keeps_last_good_config(sync_env: SyncEnv, case: str) -> None:
    """A bad file mid-run unloads nothing, shows file+path+line in /status, sets config_valid 0, and a good file recovers."""
    env = sync_env
    text, path, line = CASES[case]
    env.write(GOOD)
    await env.start(reconcile_trigger=0.2)
    await env.wait_loaded({"a": "org/a", "b": "org/b"})
    good_generation = (await env.status())["config"]["generation"]

    env.write(text)

    async def rejected() -> dict[str, Any] | None:
        st = await env.status()
        return st if st["config"]["error"] else None

    st = await eventually(rejected, f"{case} reported in /status")
    errors = [e for e in st["config"]["error"] if e["severity"] == "error"]
    assert errors, st["config"]["error"]
    assert all(e["file"] == str(env.config_path) for e in errors)
    assert any(e["path"] == path for e in errors), errors
    if line is not None:
        assert any(e["path"] == path and e["line"] == line for e in errors), errors
    assert all(e["line"] is not None for e in errors if case != "missing source"), errors
    # The last good file is still the one in force, and it is still being applied.
    assert st["config"]["generation"] == good_generation and st["config"]["name"] == "good"
    metrics = await env.metrics()
    assert metric_value(metrics, "lora_syncer_config_valid") == 0
    assert (metric_value(metrics, "lora_syncer_config_reloads_total", result="error") or 0) >= 1

    before = await env.passes()

    async def more_passes() -> bool:
        return await env.passes() >= before + 2

    await eventually(more_passes, "two more passes on the bad file")
    assert env.calls("unload") == []
    assert env.emulator.loaded() == {"a": "org/a", "b": "org/b"}
    assert env.calls("load", "x") == []

    env.write(RECOVERED)
    await env.wait_loaded({"b": "org/b", "c": "org/c"})
    st = await env.status()
    assert st["config"]["error"] is None and st["config"]["name"] == "recovered"
    metrics = await env.metrics()
    assert metric_value(metrics, "lora_syncer_config_valid") == 1
    since = metric_value(metrics, "lora_syncer_config_seconds_since_last_success")
    assert since is not None and since >= 0
    env.assert_no_declared_unloaded()


async def test_bad_file_at_start_loads_nothing_until_fixed(sync_env: SyncEnv) -> None:
    """Starting on a bad file loads and unloads nothing, /readyz says why, and the fixed file is applied."""
    env = sync_env
    async with env.http.post(
        env.emulator.url + "/v1/load_lora_adapter", json={"lora_name": "old", "lora_path": "org/old"}
    ) as resp:
        assert resp.status == 200
    env.write(MALFORMED_YAML)
    await env.start(reconcile_trigger=0.2, prune=True)

    async def passes_made() -> bool:
        return await env.passes() >= 2

    await eventually(passes_made, "two passes on the bad file")
    code, body = await env.get("/readyz")
    assert code == 503 and "no valid adapters file" in " ".join(body["reasons"])
    assert env.calls() == [call for call in env.calls() if call.name == "old"]  # only our own preload
    assert env.emulator.loaded() == {"old": "org/old"}  # even --prune does nothing without a good file
    st = await env.status()
    assert st["sync"]["lastPassResult"] == "no_config"

    env.write(adapters_yaml([("old", "org/old"), ("new", "org/new")]))
    await env.wait_loaded({"old": "org/old", "new": "org/new"})
    await eventually(lambda: _ready(env), "/readyz 200")


async def _ready(env: SyncEnv) -> bool:
    code, _ = await env.get("/readyz")
    return code == 200
