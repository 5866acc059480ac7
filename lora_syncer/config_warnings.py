"""`run`'s cross-check of its two files: findings of `config.crosscheck` kept current and reported.

Recomputed only when either file's generation changes (not per pass); each new finding is
logged once, all of them show in `/status` (`crossCheck`) and as the gauge
`lora_syncer_config_warnings{kind}`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any, get_args

import structlog
from prometheus_client import CollectorRegistry, Gauge

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.crosscheck import Finding, FindingKind, cross_check
from lora_syncer.config.rules import RuleSet
from lora_syncer.config.source import Loaded

log = structlog.get_logger("lora_syncer.crosscheck")


class ConfigWarnings:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "lora_syncer_config_warnings",
            "Disagreements between the adapters file and the rules file, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in get_args(FindingKind):
            self.gauge.labels(kind=kind).set(0)
        self._key: tuple[str, str] | None = None
        self.findings: tuple[Finding, ...] = ()

    def update(
        self,
        adapters: Loaded[AdaptersConfig] | None,
        rules: Loaded[RuleSet] | None,
        base_models: Collection[str] = (),
    ) -> None:
        """Re-check when either file changed since the last call; log the findings that are new."""
        if adapters is None or rules is None:
            return
        key = (adapters.generation, rules.generation)
        if key == self._key:
            return
        self._key = key
        before = set(self.findings)
        self.findings = cross_check(adapters.value, rules.value, base_models or None).findings
        counts = Counter(f.kind for f in self.findings)
        for kind in get_args(FindingKind):
            self.gauge.labels(kind=kind).set(counts.get(kind, 0))
        for f in self.findings:
            if f not in before:
                log.warning(
                    "adapters file and rules file disagree",
                    kind=f.kind,
                    subject=f.subject,
                    rule=f.rule,
                    detail=f.message,
                )

    def status(self) -> dict[str, Any]:
        return {
            "adaptersGeneration": self._key[0] if self._key else None,
            "rulesGeneration": self._key[1] if self._key else None,
            "warnings": [f.to_dict() for f in self.findings],
        }
