"""The emulator's vLLM-named engine metrics: counters, the LoRA info series, the text format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.emulator.engine_metrics import EngineMetrics, escape_label, go_float


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def parsed(metrics: EngineMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = metrics.render().decode()
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


class TestFormat:
    def test_go_float(self) -> None:
        """Values are written as prometheus_client writes them (Go style for large numbers)."""
        assert [go_float(v) for v in (0, 3, 0.5, 1795433601.3493075, 1e6)] == [
            "0.0",
            "3.0",
            "0.5",
            "1.7954336013493075e+09",
            "1e+06",
        ]

    def test_escape_label(self) -> None:
        """Backslashes, quotes and newlines in label values are escaped."""
        assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'

    def test_render_is_valid_exposition(self) -> None:
        """The text parses, with vLLM's family names and types."""
        text = EngineMetrics("base", 4).render().decode()
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert families == {
            "vllm:num_requests_running": "gauge",
            "vllm:num_requests_waiting": "gauge",
            "vllm:kv_cache_usage_perc": "gauge",
            "vllm:prompt_tokens": "counter",
            "vllm:generation_tokens": "counter",
            "vllm:request_success": "counter",
            "vllm:lora_requests_info": "gauge",
        }


class TestCounters:
    def test_a_fresh_server_is_idle(self) -> None:
        """Nothing running, zero counters, one LoRA info series with no adapters and max_lora set."""
        fam = parsed(EngineMetrics("base", 4))
        labels = {"engine": "0", "model_name": "base"}
        assert fam["vllm:num_requests_running"] == [("vllm:num_requests_running", labels, 0.0)]
        assert fam["vllm:generation_tokens"] == [("vllm:generation_tokens_total", labels, 0.0)]
        info = fam["vllm:lora_requests_info"]
        assert [s[1] for s in info] == [
            {"max_lora": "4", "running_lora_adapters": "", "waiting_lora_adapters": ""}
        ]

    def test_requests_are_counted(self) -> None:
        """Finished requests add their tokens and count as finished by length."""
        m = EngineMetrics("base", 1)
        m.begin(None)
        m.end(None, 10, 3)
        m.begin("a1")
        m.end("a1", 5, 2)
        fam = parsed(m)
        assert fam["vllm:prompt_tokens"][0][2] == 15.0
        assert fam["vllm:generation_tokens"][0][2] == 5.0
        success = {s[1]["finished_reason"]: s[2] for s in fam["vllm:request_success"]}
        assert success == {"stop": 0.0, "length": 2.0, "abort": 0.0, "error": 0.0, "repetition": 0.0}

    def test_running_adapters(self) -> None:
        """Adapters in flight show, sorted and comma-separated; the base model does not."""
        m = EngineMetrics("base", 4)
        m.begin("zeta")
        m.begin("alpha")
        m.begin("alpha")
        m.begin(None)
        assert m.running == 4
        assert m.running_adapters() == "alpha,zeta"
        m.end("alpha", 1, 1)
        assert m.running_adapters() == "alpha,zeta"
        m.end("alpha", 1, 1)
        assert m.running_adapters() == "zeta"

    def test_newest_lora_series_is_the_current_set(self) -> None:
        """Every set seen stays as a series; the current one carries the newest timestamp."""
        m = EngineMetrics("base", 4, clock=FakeClock())
        m.begin("a1")
        info = parsed(m)["vllm:lora_requests_info"]
        assert {s[1]["running_lora_adapters"] for s in info} == {"", "a1"}
        newest = max(info, key=lambda s: s[2])
        assert newest[1]["running_lora_adapters"] == "a1"
        m.end("a1", 1, 1)
        newest = max(parsed(m)["vllm:lora_requests_info"], key=lambda s: s[2])
        assert newest[1]["running_lora_adapters"] == ""

    def test_series_are_bounded(self) -> None:
        """Many distinct adapter sets keep at most 100 series, the newest ones."""
        m = EngineMetrics("base", 4)
        for i in range(300):
            m.begin(f"a{i}")
            m.end(f"a{i}", 1, 1)
        info = parsed(m)["vllm:lora_requests_info"]
        assert len(info) <= 100
        assert "a299" in {s[1]["running_lora_adapters"] for s in info}

    def test_reset(self) -> None:
        """A reset is a fresh server: counters at zero, only the empty adapter set."""
        m = EngineMetrics("base", 4)
        m.begin("a1")
        m.end("a1", 3, 3)
        m.reset()
        fam = parsed(m)
        assert fam["vllm:generation_tokens"][0][2] == 0.0
        assert [s[1]["running_lora_adapters"] for s in fam["vllm:lora_requests_info"]] == [""]

    def test_label_values_are_escaped(self) -> None:
        """A served name with a quote still renders parseable text."""
        fam = parsed(EngineMetrics('we"ird', 1))
        assert fam["vllm:num_requests_running"][0][1]["model_name"] == 'we"ird'
