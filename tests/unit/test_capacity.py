"""The capacity check's pure part: vLLM's limits from /metrics, and the verdict."""

from __future__ import annotations

import pytest

from lora_syncer.emulator.engine_metrics import EngineMetrics
from lora_syncer.sync.capacity import CapacityReport, ServerLimits, assess, limits_from_metrics

# What vLLM 0.32 exposes (docs/vllm-api.md): only max_lora on vllm:lora_requests_info.
VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 0.0
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="a",waiting_lora_adapters=""} 1.6e+09
"""


class TestLimitsFromMetrics:
    def test_max_lora_from_vllms_info_gauge(self) -> None:
        assert limits_from_metrics(VLLM_TEXT) == ServerLimits(max_lora=4, max_cpu_loras=None)

    def test_the_emulators_metrics_read_the_same(self) -> None:
        text = EngineMetrics("m", max_loras=3).render().decode()
        assert limits_from_metrics(text) == ServerLimits(max_lora=3)

    def test_a_max_cpu_loras_label_is_taken_when_a_server_has_one(self) -> None:
        text = VLLM_TEXT.replace('max_lora="4",', 'max_cpu_loras="16",max_lora="4",')
        assert limits_from_metrics(text) == ServerLimits(max_lora=4, max_cpu_loras=16)

    @pytest.mark.parametrize("text", ["", "# HELP x y\n# TYPE x gauge\nx 1\n"])
    def test_no_lora_metrics_means_unknown(self, text: str) -> None:
        assert limits_from_metrics(text) == ServerLimits()

    def test_a_nonsense_label_is_ignored(self) -> None:
        assert limits_from_metrics(VLLM_TEXT.replace('max_lora="4"', 'max_lora="x"')) == ServerLimits()


class TestAssess:
    def test_the_flag_wins(self) -> None:
        r = assess(5, 8, ServerLimits(max_lora=2, max_cpu_loras=4))
        assert r == CapacityReport(5, 8, "--max-cpu-loras", 2)
        assert not r.exceeded and r.warning is None

    def test_the_servers_max_cpu_loras_before_its_max_lora(self) -> None:
        r = assess(5, None, ServerLimits(max_lora=2, max_cpu_loras=4))
        assert (r.limit, r.limit_from, r.exceeded) == (4, "server max_cpu_loras", True)
        assert r.warning is not None and "(vLLM's max_cpu_loras from its /metrics)" in r.warning

    def test_max_lora_is_the_default_limit(self) -> None:
        r = assess(3, None, ServerLimits(max_lora=2))
        assert (r.limit, r.limit_from, r.exceeded) == (2, "server max_lora", True)

    def test_equal_is_within(self) -> None:
        assert not assess(2, None, ServerLimits(max_lora=2)).exceeded

    @pytest.mark.parametrize("server", [None, ServerLimits()])
    def test_unknown_limit_never_warns(self, server: ServerLimits | None) -> None:
        r = assess(100, None, server)
        assert r == CapacityReport(100, None, None, None) and r.warning is None
