"""Capacity: are more adapters declared than vLLM keeps in memory?

vLLM keeps at most `max_cpu_loras` adapters' weights in CPU memory (an LRU cache) and
`max_loras` of them in GPU slots. More adapters than GPU slots is normal: they take turns. More
than `max_cpu_loras` means vLLM evicts adapters and reads them from disk again on demand, which
shows as latency spikes, so the syncer warns (a log line, a `/status` warning, a gauge).

The limit is `--max-cpu-loras` when given. Otherwise it comes from vLLM's `GET /metrics`: a
`max_cpu_loras` label on `vllm:lora_requests_info` if the server has one, else its `max_lora`
label, because vLLM sets `max_cpu_loras` to `max_loras` unless started with `--max-cpu-loras`
(vLLM 0.32 exposes only `max_lora`). A server started with a larger `--max-cpu-loras` therefore
needs the same number here, or the warning comes too early.

`assess` and `limits_from_metrics` are pure; `CapacityCheck` does the scrape and the logging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.sync.errors import VLLMError

if TYPE_CHECKING:
    from lora_syncer.sync.metrics import SyncMetrics
    from lora_syncer.sync.status import SyncStatus
    from lora_syncer.sync.vllm_client import VLLMClient

log = structlog.get_logger("lora_syncer.sync")

INFO_METRIC = "vllm:lora_requests_info"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server's `/metrics` says (None for a label it does not carry)."""

    max_lora: int | None = None
    max_cpu_loras: int | None = None


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """Declared adapters against the CPU cache limit in use, and where that limit came from."""

    declared: int
    limit: int | None  # None: unknown (no flag and nothing read from the server yet)
    limit_from: str | None  # "--max-cpu-loras" | "server max_cpu_loras" | "server max_lora"
    max_lora: int | None

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.declared > self.limit

    @property
    def warning(self) -> str | None:
        """The one-line warning, or None when within the limit (or the limit is unknown)."""
        if not self.exceeded:
            return None
        why = {
            "--max-cpu-loras": "--max-cpu-loras",
            "server max_cpu_loras": "vLLM's max_cpu_loras from its /metrics",
            "server max_lora": (
                "vLLM's max_lora from its /metrics, which is its max_cpu_loras unless vLLM was started "
                "with --max-cpu-loras; if it was, pass the same number to --max-cpu-loras"
            ),
        }.get(self.limit_from or "", "the limit")
        return (
            f"{self.declared} adapters declared in ensureExist but the server keeps only {self.limit} in "
            f"memory ({why}): vLLM will evict adapters and reload them from disk on demand; raise vLLM's "
            "--max-cpu-loras or declare fewer adapters"
        )


def limits_from_metrics(text: str) -> ServerLimits:
    """`max_lora` / `max_cpu_loras` labels of `vllm:lora_requests_info` in Prometheus text.

    Raises ValueError when the text is not Prometheus exposition at all.
    """
    max_lora: int | None = None
    max_cpu: int | None = None
    for family in text_string_to_metric_families(text):
        if family.name != INFO_METRIC:
            continue
        for sample in family.samples:
            max_lora = _whole(sample.labels.get("max_lora")) or max_lora
            max_cpu = _whole(sample.labels.get("max_cpu_loras")) or max_cpu
    return ServerLimits(max_lora=max_lora, max_cpu_loras=max_cpu)


def _whole(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    number = int(value)
    return number if number > 0 else None


def assess(declared: int, flag: int | None, server: ServerLimits | None) -> CapacityReport:
    """The report for `declared` adapters: the flag wins, then the server's labels."""
    max_lora = server.max_lora if server else None
    if flag is not None:
        return CapacityReport(declared, flag, "--max-cpu-loras", max_lora)
    if server is not None and server.max_cpu_loras is not None:
        return CapacityReport(declared, server.max_cpu_loras, "server max_cpu_loras", max_lora)
    if max_lora is not None:
        return CapacityReport(declared, max_lora, "server max_lora", max_lora)
    return CapacityReport(declared, None, None, None)


class CapacityCheck:
    """Run after each pass: reads the server's limits when needed, updates status, gauges, the log.

    `/metrics` is read every `refresh` seconds once it showed the limits (a restarted vLLM may
    have others; with `--max-cpu-loras` only for the `max_lora` shown beside it), and every pass
    until then: vLLM writes its first `vllm:lora_requests_info` sample only after its engine has
    run a request. The capacity log line comes only when the verdict or the numbers change.
    """

    refresh = 60.0

    def __init__(self, client: VLLMClient, metrics: SyncMetrics, flag: int | None) -> None:
        self.client = client
        self.metrics = metrics
        self.flag = flag
        self._server: ServerLimits | None = None
        self._read_at: float | None = None  # monotonic
        self._told_unknown = False
        self._logged: tuple[int, int | None] | None = None

    async def check(self, status: SyncStatus, declared: int) -> CapacityReport:
        now = time.monotonic()
        due = self._read_at is None or now - self._read_at >= self.refresh
        if due and status.server.reachable:
            scraped = await self._scrape()
            if scraped is not None and scraped != ServerLimits():
                self._server = scraped
                self._read_at = now
            elif self._server is not None:
                self._read_at = now  # keep what an earlier read showed until the next refresh
        report = assess(declared, self.flag, self._server)
        status.capacity = report
        self.metrics.set_capacity(report)
        self._log(report)
        return report

    async def _scrape(self) -> ServerLimits | None:
        try:
            text = await self.client.metrics_text()
            limits = limits_from_metrics(text)
        except (VLLMError, ValueError) as exc:
            message = exc.message if isinstance(exc, VLLMError) else str(exc)
            if not self._told_unknown:
                self._told_unknown = True
                log.warning(
                    "cannot read vLLM's /metrics for its LoRA limits; no capacity check until it "
                    "answers, or give --max-cpu-loras",
                    error=message,
                )
            return None
        if limits == ServerLimits() and self.flag is None and not self._told_unknown:
            self._told_unknown = True
            log.info(
                f"vLLM's /metrics shows no {INFO_METRIC} sample yet (vLLM writes it once it has run a "
                "request; is --enable-lora on?): no capacity check until it does, or give --max-cpu-loras"
            )
        return limits

    def _log(self, report: CapacityReport) -> None:
        key = (report.declared, report.limit) if report.exceeded else None
        if key == self._logged:
            return
        if report.warning is not None:
            log.warning(
                report.warning,
                declared=report.declared,
                max_cpu_loras=report.limit,
                limit_from=report.limit_from,
                max_lora=report.max_lora,
            )
        elif self._logged is not None:
            log.info(
                "declared adapters fit the server's memory again",
                declared=report.declared,
                limit=report.limit,
            )
        self._logged = key


__all__ = ["CapacityCheck", "CapacityReport", "ServerLimits", "assess", "limits_from_metrics"]
