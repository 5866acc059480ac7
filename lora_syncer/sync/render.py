"""Readiness and the syncer's `/status` section, rendered from the sync state (pure, no I/O).

Keys are camelCase, the same style as the proxy's section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.errors import ConfigError
from lora_syncer.config.source import Loaded
from lora_syncer.sources.uri import redact_url
from lora_syncer.sync.capacity import CapacityReport
from lora_syncer.sync.states import AdapterState
from lora_syncer.sync.status import AdapterStatus, ServerStatus, SyncStatus


class ConfigView(Protocol):
    """What rendering needs of the adapters file: its path, the value in force and the last error."""

    @property
    def path(self) -> Any: ...

    @property
    def current(self) -> Loaded[AdaptersConfig] | None: ...

    @property
    def error(self) -> ConfigError | None: ...


def readiness(status: SyncStatus, config: ConfigView, mode: str = "synced") -> tuple[bool, str]:
    """(ready, reason): the reason says what is missing, in words a person can act on."""
    if mode == "started":
        return True, ""
    if config.current is None:
        err = config.error
        return False, f"no valid adapters file yet: {err.summary() if err else 'not read yet'}"
    if status.server.reachable is False:
        return False, f"vLLM server unreachable: {status.server.last_error or 'no answer yet'}"
    if not status.synced_once:
        return False, "first reconcile pass has not completed"
    if not status.server.reachable:
        return False, f"vLLM server unreachable: {status.server.last_error or 'no answer yet'}"
    # An adapter that already failed and is being retried counts like a failed one, so a broken
    # adapter's retries do not make readiness flap.
    missing = [i for i in status.unsynced() if status.adapters[i].attempts == 0]
    if missing:
        shown = ", ".join(sorted(missing)[:10])
        warming = sum(1 for i in missing if status.adapters[i].state == AdapterState.WARMING)
        note = f" ({warming} warming up)" if warming else ""
        return False, f"{len(missing)} declared adapter(s) not loaded yet{note}: {shown}"
    return True, ""


def alias_readiness(aliases: Mapping[str, Sequence[str]], loaded: frozenset[str]) -> tuple[bool, str]:
    """Not ready while a rules alias has no target the server serves: its clients would get 404s."""
    dead = {alias: targets for alias, targets in aliases.items() if targets and not set(targets) & loaded}
    if not dead:
        return True, ""
    shown = "; ".join(
        f"alias {alias!r}: none of its targets is loaded ({', '.join(targets)})"
        for alias, targets in sorted(dead.items())[:5]
    )
    return False, f"proxy: {shown}"


def render_server(server: ServerStatus) -> dict[str, Any]:
    return {
        "url": server.url,
        "reachable": server.reachable,
        "version": server.version,
        "supportsLoadInplace": server.supports_inplace,
        "runtimeUpdatingDisabled": server.runtime_updating_disabled,
        "lastError": server.last_error,
        "lastSeenAt": server.last_seen_at,
        "baseModels": list(server.base_models),
    }


def render_adapter(a: AdapterStatus, now_monotonic: float) -> dict[str, Any]:
    m = a.machine
    retry_in = None
    if m.next_retry_at is not None:
        retry_in = round(max(0.0, m.next_retry_at - now_monotonic), 3)
    body: dict[str, Any] = {
        "declared": a.declared,
        # A pre-signed URL carries its signature in the query: never shown.
        "source": redact_url(a.source) if a.source and "://" in a.source else a.source,
        "baseModel": a.base_model,
        "observedRoot": a.observed_root,
        "state": m.state.value,
        "lastError": m.reason,
        "attempts": m.attempts,
        "nextRetryInSeconds": retry_in,
        "stateSince": a.changed_at,
    }
    if m.progress is not None:
        body["progress"] = {"bytesDone": m.progress.done, "bytesTotal": m.progress.total}
    return body


def render_capacity(report: CapacityReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "declaredAdapters": report.declared,
        "maxCpuLoras": report.limit,
        "maxCpuLorasFrom": report.limit_from,
        "maxLoras": report.max_lora,
        "exceeded": report.exceeded,
    }


def render_prune_hold(status: SyncStatus) -> dict[str, Any] | None:
    hold = status.prune_hold
    if hold is None:
        return None
    return {
        "adapters": list(hold.adapters),
        "count": len(hold.adapters),
        "limit": hold.limit,
        "generation": hold.generation,
        "since": hold.since,
        "reason": f"would unload {len(hold.adapters)} undeclared adapter(s), more than --prune-max "
        f"allows ({hold.limit}); unloaded only if the file stays unchanged for one more resync",
    }


def render_status(status: SyncStatus, config: ConfigView, now_monotonic: float) -> dict[str, Any]:
    """The `syncer` section of `/status`."""
    current = config.current
    err = config.error
    return {
        "config": {
            "file": str(config.path),
            "name": current.value.name if current else None,
            "generation": current.generation if current else None,
            "loadedAt": current.loaded_at if current else None,
            "error": [i.to_dict() for i in err.issues] if err else None,
            "warnings": [w.to_dict() for w in current.value.warnings] if current else [],
        },
        "server": render_server(status.server),
        "sync": {
            "passes": status.passes,
            "lastPassAt": status.last_pass_at,
            "lastPassSeconds": status.last_pass_seconds,
            "lastPassResult": status.last_pass_result,
            "counts": {k: v for k, v in status.counts().items() if v},
            "pruneHold": render_prune_hold(status),
        },
        "capacity": render_capacity(status.capacity),
        "warnings": [w for w in (status.capacity.warning if status.capacity else None,) if w],
        "adapters": {
            a.id: render_adapter(a, now_monotonic)
            for a in sorted(status.adapters.values(), key=lambda x: x.id)
        },
        **({"adapterCache": status.adapter_cache} if status.adapter_cache is not None else {}),
    }
