"""`--allowed-sources` keeps a ConfigMap editor from loading adapters from places the operator did
not allow: sources outside the allowed directory, or escaping it with `..`, are refused, shown as
`forbidden_source` in /status, and never sent to the server."""

from __future__ import annotations

import json
from pathlib import Path

from lora_syncer.config.adapters import parse_adapters
from tests.support.reliability.files import KEY
from tests.support.reliability.world import world
from tests.support.wait import eventually


def adapter_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    return d


def file_with(sources: dict[str, str]) -> str:
    lines = ["vLLMLoRAConfig:", "  ensureExist:", "    models:"]
    for name, source in sources.items():
        lines += [f"    - id: {name}", f"      source: '{source}'"]
    return "\n".join(lines) + "\n"


async def _refused_and_unsent(
    tmp_path: Path, allowed: str, good: dict[str, str], bad: dict[str, str]
) -> None:
    async with world(tmp_path) as w:
        text = file_with({**good, **bad})
        parse_adapters(text.encode(), KEY)  # a valid file: only the policy may refuse these
        w.write(text)
        sidecar = await w.start_sidecar(allowed_sources=(allowed,))
        assert sidecar.reconciler is not None
        status = sidecar.reconciler.status

        def settled() -> bool:
            states = {a.id: a.state.value for a in status.adapters.values()}
            return set(good) <= w.emulator.loaded().keys() and all(
                states.get(n) == "forbidden_source" for n in bad
            )

        await eventually(settled, message=lambda: sidecar.syncer_status()["adapters"])
        await sidecar.reconciler.run_pass({"manual"})  # one more pass: still nothing sent for them
        sent = {(c.name, c.path) for c in w.emulator.calls if c.op == "load"}
        assert sent == {(n, s) for n, s in good.items()}
        shown = sidecar.syncer_status()["adapters"]
        for name in bad:
            assert "allowed-sources" in (shown[name]["lastError"] or ""), shown[name]


async def test_traversal_out_of_the_allowed_directory_is_refused(tmp_path: Path) -> None:
    """With --allowed-sources <dir>/, `..` escapes, sibling prefixes and other directories are refused and never sent."""
    base = tmp_path / "adapters"
    adapter_dir(base, "ok")
    adapter_dir(tmp_path, "outside")
    adapter_dir(tmp_path / "adapters-evil", "x")
    bad = {
        "dotdot": f"{base}/../outside",
        "dotdot-deep": f"{base}/ok/../../outside",
        "dot-then-dotdot": f"{base}/./../outside",
        "sibling-prefix": f"{tmp_path}/adapters-evil/x",
        "elsewhere": str(tmp_path / "outside"),
        "etc": "/etc",
        "hub": "someorg/adapter",
        "relative": "adapters/ok",
    }
    await _refused_and_unsent(tmp_path / "w", f"{base}/", {"ok": str(base / "ok")}, bad)


async def test_traversal_behind_a_hub_prefix_is_refused(tmp_path: Path) -> None:
    """With --allowed-sources myorg/, a source `myorg/../../<dir>` is refused like any other escape."""
    await _refused_and_unsent(
        tmp_path,
        "myorg/",
        {"ok": "myorg/good-adapter"},
        {"escape": "myorg/../../tmp/outside", "escape-deeper": "myorg/x/../../../etc"},
    )
