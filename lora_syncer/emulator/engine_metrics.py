"""The engine figures vLLM exposes at `GET /metrics`, under vLLM's names, for the emulator.

Only a handful of vLLM's series are kept (those a sidecar or a dashboard reads: requests running,
token and success counters, and `vllm:lora_requests_info`); everything is plain integers updated
by the inference handlers and rendered as Prometheus text only when scraped.

`vllm:lora_requests_info` works as in vLLM: one series per distinct set of running adapters
(label `running_lora_adapters`, comma-separated), valued with the time it was last current, so
the newest timestamp marks the set running now. An idle server shows the empty set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# vLLM's exposition: prometheus_client in multiprocess mode, text format 1.0.0.
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
_MAX_LORA_SERIES = 100  # vLLM keeps every set it has seen; the emulator keeps the newest ones


def go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float format: `1.0`, `1.79e+09`)."""
    text = repr(float(value))
    if text in ("inf", "-inf", "nan"):
        return {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}[text]
    dot = text.find(".")
    if value > 0 and dot > 6 and "e" not in text:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def escape_label(value: str) -> str:
    """A label value escaped for the text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class EngineMetrics:
    """Counters behind the emulator's `/metrics` (one engine, `engine="0"`)."""

    def __init__(self, model_name: str, max_loras: int, clock: Callable[[], float] = time.time) -> None:
        self.model_name = model_name
        self.max_loras = max_loras
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Back to a fresh server's figures (a restarted vLLM starts from zero)."""
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished_length = 0
        self._adapters_running: dict[str, int] = {}
        self._lora_series: dict[str, float] = {"": self._clock()}
        self._current = ""

    def begin(self, adapter: str | None) -> None:
        """A request starts running (`adapter` None for the base model)."""
        self.running += 1
        if adapter is not None:
            count = self._adapters_running.get(adapter, 0)
            self._adapters_running[adapter] = count + 1
            if count == 0:
                self._adapters_changed()

    def end(self, adapter: str | None, prompt_tokens: int, generated: int) -> None:
        """A request finished (always for length: the emulator stops at `max_tokens`)."""
        self.running -= 1
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += generated
        self.finished_length += 1
        if adapter is not None:
            count = self._adapters_running[adapter] - 1
            if count:
                self._adapters_running[adapter] = count
            else:
                del self._adapters_running[adapter]
                self._adapters_changed()

    def running_adapters(self) -> str:
        """The `running_lora_adapters` label now: adapter names in flight, sorted, comma-separated."""
        return self._current

    def _adapters_changed(self) -> None:
        key = ",".join(sorted(self._adapters_running))
        self._current = key
        series = self._lora_series
        series.pop(key, None)  # re-inserted last: the dict stays ordered oldest first
        series[key] = self._clock()
        if len(series) > _MAX_LORA_SERIES:
            del series[next(iter(series))]

    def render(self) -> bytes:
        """The Prometheus text exposition of the kept series."""
        series = self._lora_series
        series.pop(self._current, None)
        series[self._current] = self._clock()  # the current set is refreshed at every scrape
        base = f'engine="0",model_name="{escape_label(self.model_name)}"'
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.")
        lines.append(f"vllm:num_requests_running{{{base}}} {go_float(self.running)}")
        family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.")
        lines.append(f"vllm:num_requests_waiting{{{base}}} 0.0")
        family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.")
        lines.append(f"vllm:kv_cache_usage_perc{{{base}}} 0.0")
        family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.")
        lines.append(f"vllm:prompt_tokens_total{{{base}}} {go_float(self.prompt_tokens)}")
        family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.")
        lines.append(f"vllm:generation_tokens_total{{{base}}} {go_float(self.generation_tokens)}")
        family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
        for reason in FINISH_REASONS:
            value = self.finished_length if reason == "length" else 0
            lines.append(
                f'vllm:request_success_total{{engine="0",finished_reason="{reason}",'
                f'model_name="{escape_label(self.model_name)}"}} {go_float(value)}'
            )
        family("vllm:lora_requests_info", "gauge", "Running stats on lora requests.")
        for running, stamp in series.items():
            lines.append(
                f'vllm:lora_requests_info{{max_lora="{self.max_loras}",'
                f'running_lora_adapters="{escape_label(running)}",waiting_lora_adapters=""}} {go_float(stamp)}'
            )
        return ("\n".join(lines) + "\n").encode()
