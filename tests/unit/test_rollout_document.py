"""The AdapterRollout document: parsing, defaults, errors located by path and line, identity, durations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.config.errors import with_file
from lora_syncer.config.yamldoc import load_documents
from lora_syncer.rollout.document import parse_adapter_rollout, rollouts_from_documents
from lora_syncer.rollout.spec import (
    Analysis,
    Mirror,
    Pause,
    PrometheusCheck,
    SetWeight,
    WebhookCheck,
    format_duration,
    identity,
    parse_duration,
    render_template,
)

ISSUE_EXAMPLE = """\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {name: small-segment-lora-v2}
spec:
  model: small-segment-lora
  stable: small-segment-lora-v1
  canary: small-segment-lora-v2
  startTime: "2026-12-01T10:00:00Z"
  steps:
  - setWeight: 10
  - pause: {duration: 5m}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
  - mirror: {percent: 20, duration: 1h30m}
  progressDeadline: 30m
  analysis:
    interval: 30s
    minRequests: 50
    failureLimit: 2
    maxErrorRate: 0.02
    maxLatencyRatio: 1.5
    maxEmptyRate: 0.1
    maxLengthRatio: 2
    prometheus:
      url: http://prometheus:9090
      bearerTokenFile: /var/run/secrets/token
      caFile: /var/run/secrets/ca.crt
      errorRateQuery: 'sum(rate(errors{model="{{canary}}"}[{{interval}}]))'
      latencyRatioQuery: 'q{model="{{ model }}", stable="{{stable}}"}'
    webhook: {url: http://evals:8080/check}
  promotedStep: 0
  paused: false
  abort: false
"""


def parse(text: str) -> list:  # type: ignore[type-arg]
    return rollouts_from_documents(load_documents(text))


def errors_of(text: str) -> list[str]:
    (result,) = parse(text)
    assert result.spec is None
    return [i.format() for i in with_file(result.issues, "rules.yaml") if i.severity == "error"]


def test_the_issue_example_parses_every_field() -> None:
    (result,) = parse(ISSUE_EXAMPLE)
    assert result.issues == ()
    s = result.spec
    assert s is not None
    assert (s.name, s.model, s.stable, s.canary) == (
        "small-segment-lora-v2",
        "small-segment-lora",
        "small-segment-lora-v1",
        "small-segment-lora-v2",
    )
    assert s.start_time == 1796119200.0
    assert s.steps == (
        SetWeight(10),
        Pause(300),
        SetWeight(50),
        Pause(None),
        SetWeight(100),
        Mirror(20, 5400),
    )
    assert s.progress_deadline == 1800
    assert s.analysis == Analysis(
        interval=30,
        min_requests=50,
        failure_limit=2,
        max_error_rate=0.02,
        max_latency_ratio=1.5,
        max_empty_rate=0.1,
        max_length_ratio=2.0,
        prometheus=PrometheusCheck(
            url="http://prometheus:9090",
            error_rate_query='sum(rate(errors{model="{{canary}}"}[{{interval}}]))',
            latency_ratio_query='q{model="{{ model }}", stable="{{stable}}"}',
            bearer_token_file="/var/run/secrets/token",
            ca_file="/var/run/secrets/ca.crt",
        ),
        webhook=WebhookCheck("http://evals:8080/check"),
    )
    assert (s.promoted_step, s.paused, s.abort, s.line) == (0, False, False, 1)


MINIMAL = """\
kind: AdapterRollout
metadata: {name: r}
spec:
  model: m
  stable: m-v1
  canary: m-v2
  steps:
  - setWeight: 100
"""


def test_the_reference_example_parses_and_its_gate_is_step_3() -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "rollout-reference.md"
    block = reference.read_text(encoding="utf-8").split("```yaml\n", 1)[1].split("```", 1)[0]
    assert "promotedStep >= 3" in block
    (result,) = parse(block)
    assert result.spec is not None
    assert result.spec.steps[3] == Pause(None)


def test_defaults() -> None:
    (result,) = parse(MINIMAL)
    s = result.spec
    assert s is not None
    assert (s.start_time, s.progress_deadline, s.analysis, s.promoted_step, s.paused, s.abort) == (
        None,
        None,
        None,
        0,
        False,
        False,
    )
    (with_analysis,) = parse(MINIMAL + "  analysis: {maxErrorRate: 0.1}\n")
    assert with_analysis.spec is not None
    assert with_analysis.spec.analysis == Analysis(
        interval=30, min_requests=50, failure_limit=0, max_error_rate=0.1
    )


def test_a_bare_pause_is_a_manual_gate() -> None:
    (result,) = parse(MINIMAL.replace("  - setWeight: 100\n", "  - pause:\n  - setWeight: 100\n"))
    assert result.spec is not None
    assert result.spec.steps[0] == Pause(None)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  - setWeight: 100\n", "  - setWeight: 101\n"),
            "rules.yaml:8: error: spec.steps[0].setWeight: is out of range: weights are whole numbers from 0 to 100",
        ),
        (
            ("  - setWeight: 100\n", "  - setWeight: -1\n"),
            "rules.yaml:8: error: spec.steps[0].setWeight: is out of range",
        ),
        (
            ("  - setWeight: 100\n", "  - setWeight: '10'\n"),
            "rules.yaml:8: error: spec.steps[0].setWeight: must be a whole number",
        ),
        (("  steps:\n  - setWeight: 100\n", "  steps: []\n"), "rules.yaml:7: error: spec.steps: is empty"),
        (
            ("  canary: m-v2\n", "  canary: m-v1\n"),
            "rules.yaml:6: error: spec.canary: is the same adapter as stable",
        ),
        (
            ("  stable: m-v1\n", "  stable: m\n"),
            "rules.yaml:5: error: spec.stable: is the client-facing model name",
        ),
        (
            ("  - setWeight: 100\n", "  - pause: {duration: 0s}\n"),
            "rules.yaml:8: error: spec.steps[0].pause.duration: must be a positive duration",
        ),
        (
            ("  - setWeight: 100\n", "  - pause: {duration: 5 minutes}\n"),
            "rules.yaml:8: error: spec.steps[0].pause.duration: '5 minutes' is not a duration",
        ),
        (
            ("  - setWeight: 100\n", "  - pause: {duraton: 5m}\n"),
            "rules.yaml:8: error: spec.steps[0].pause.duraton: unknown key",
        ),
        (
            ("  - setWeight: 100\n", "  - wait: 5m\n"),
            "rules.yaml:8: error: spec.steps[0]: a step is one of setWeight, pause or mirror (found wait)",
        ),
        (
            ("  - setWeight: 100\n", "  - {setWeight: 5, pause: {}}\n"),
            "rules.yaml:8: error: spec.steps[0]: a step is one of",
        ),
        (
            ("  - setWeight: 100\n", "  - mirror: {percent: 0, duration: 1m}\n"),
            "rules.yaml:8: error: spec.steps[0].mirror.percent: is out of range",
        ),
        (
            ("  - setWeight: 100\n", "  - mirror: {percent: 5}\n"),
            "rules.yaml:8: error: spec.steps[0].mirror.duration: is required",
        ),
        (
            ("  model: m\n", "  model: m\n  startTime: yesterday\n"),
            "rules.yaml:5: error: spec.startTime: must be a timestamp",
        ),
        (
            ("  model: m\n", "  model: m\n  progressDeadline: 0\n"),
            "rules.yaml:5: error: spec.progressDeadline: must be a positive duration",
        ),
        (
            ("  model: m\n", "  model: m\n  paused: yes please\n"),
            "rules.yaml:5: error: spec.paused: must be true or false",
        ),
        (
            ("  model: m\n", "  model: m\n  promotedStep: -1\n"),
            "rules.yaml:5: error: spec.promotedStep: is out of range",
        ),
        (("  model: m\n", "  model: m\n  weight: 5\n"), "rules.yaml:5: error: spec.weight: unknown key"),
        (("  canary: m-v2\n", ""), "rules.yaml:3: error: spec.canary: is required"),
        (("metadata: {name: r}\n", ""), "rules.yaml:1: error: metadata: is required: name the rollout"),
    ],
)
def test_errors_are_located_by_path_and_line(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in MINIMAL
    found = errors_of(MINIMAL.replace(old, new))
    assert any(e.startswith(expected) for e in found), found


ANALYSIS_ERRORS = [
    ("interval: 0s", "spec.analysis.interval: must be a positive duration"),
    ("minRequests: 0", "spec.analysis.minRequests: is out of range: must be at least 1"),
    ("failureLimit: -1", "spec.analysis.failureLimit: is out of range: must be 0 or more"),
    ("maxErrorRate: 1.5", "spec.analysis.maxErrorRate: is out of range: a rate is a number from 0 to 1"),
    ("maxEmptyRate: -0.1", "spec.analysis.maxEmptyRate: is out of range"),
    ("maxLatencyRatio: 0", "spec.analysis.maxLatencyRatio: is out of range: a ratio must be greater than 0"),
    ("maxLengthRatio: -2", "spec.analysis.maxLengthRatio: is out of range"),
    ("maxErrorRate: '0.02'", "spec.analysis.maxErrorRate: must be a number"),
    ("maxErrorRate: .nan", "spec.analysis.maxErrorRate: must be a finite number"),
    (
        "webhook: {url: ftp://evals/check}",
        "spec.analysis.webhook.url: 'ftp://evals/check' is not an http:// or https:// URL",
    ),
    ("webhook: {url: evals:8080}", "spec.analysis.webhook.url: 'evals:8080' is not an http"),
    (
        "{maxErrorRate: 0.1, prometheus: {url: 'http://p', errorRateQuery: 'x{a=\"{{pod}}\"}'}}",
        "spec.analysis.prometheus.errorRateQuery: unknown placeholder {{pod}}",
    ),
    (
        "{maxErrorRate: 0.1, prometheus: {url: 'http://p', errorRateQuery: 'x{a=\"{{model\"}'}}",
        "spec.analysis.prometheus.errorRateQuery: has unbalanced {{ }}",
    ),
    (
        "{prometheus: {url: 'http://p', errorRateQuery: 'x'}}",
        "spec.analysis.prometheus.errorRateQuery: needs analysis.maxErrorRate",
    ),
    ("{maxLatencyRatio: 2, prometheus: {url: 'https://p'}}", "spec.analysis.prometheus: names no query"),
]


@pytest.mark.parametrize(("body", "expected"), ANALYSIS_ERRORS)
def test_analysis_errors(body: str, expected: str) -> None:
    text = MINIMAL + (f"  analysis: {body}\n" if body.startswith("{") else f"  analysis:\n    {body}\n")
    found = errors_of(text)
    assert any(expected in e for e in found), found
    assert all(e.startswith("rules.yaml:9") or e.startswith("rules.yaml:10") for e in found), found


def test_results_are_per_document_so_a_valid_abort_is_honoured() -> None:
    broken = MINIMAL.replace("name: r", "name: broken").replace("setWeight: 100", "setWeight: 500")
    aborting = MINIMAL.replace("name: r", "name: other") + "  abort: true\n"
    results = parse(aborting + "---\n" + broken)
    assert [r.name for r in results] == ["other", "broken"]
    assert results[1].spec is None
    assert results[1].issues[0].line == 18  # the second document's lines count from the file's start
    assert results[0].spec is not None
    assert results[0].spec.abort is True


def test_other_kinds_are_skipped_and_list_items_are_read() -> None:
    rewrite = "kind: InferenceModelRewrite\nmetadata: {name: x}\nspec: {rules: []}\n"
    listed = "kind: List\nitems:\n- " + MINIMAL.replace("\n", "\n  ").rstrip() + "\n"
    results = parse(rewrite + "---\n" + listed)
    assert len(results) == 1
    assert results[0].spec is not None
    assert results[0].spec.line == 7  # the `- kind: AdapterRollout` item


def test_two_rollouts_with_one_name_refuse_the_later() -> None:
    results = parse(MINIMAL + "---\n" + MINIMAL)
    assert results[0].spec is not None
    assert results[1].spec is None
    assert "names must be unique" in results[1].issues[-1].message


def test_wrong_api_group_is_a_warning() -> None:
    (result,) = parse("apiVersion: example.com/v1\n" + MINIMAL)
    assert result.spec is not None
    assert [i.severity for i in result.issues] == ["warning"]


def test_not_a_mapping() -> None:
    (doc,) = load_documents("- 1\n")
    result = parse_adapter_rollout(doc)
    assert result.spec is None
    assert "must be a mapping" in result.issues[0].message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1h0m5s", 3605), (90, 90), (" 30s ", 30)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "1m1h", "1.5m", "-5s", "0s", 0, True, None, 1.5])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (1, 59, 60, 3600, 5400, 3605, 86400):
        assert parse_duration(format_duration(seconds)) == seconds


def test_render_template() -> None:
    out = render_template(
        "a{{model}}b{{ canary }}c{{interval}}",
        {"model": "m", "canary": "c2", "stable": "s", "interval": "30s"},
    )
    assert out == "amb" + "c2c30s"


def test_identity_ignores_hand_controls_and_tuning_only() -> None:
    (result,) = parse(ISSUE_EXAMPLE)
    s = result.spec
    assert s is not None
    same = replace(
        s, paused=True, abort=True, promoted_step=3, analysis=None, progress_deadline=None, line=99
    )
    assert identity(same) == identity(s)
    for changed in (
        replace(s, name="x"),
        replace(s, model="x"),
        replace(s, stable="x"),
        replace(s, canary="x"),
        replace(s, steps=s.steps[:-1]),
        replace(s, steps=(SetWeight(11), *s.steps[1:])),
        replace(s, start_time=None),
    ):
        assert identity(changed) != identity(s)


_yamlish = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["model", "stable", "canary", "steps", "analysis", "startTime", "progressDeadline", "paused"]
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(_keys, _yamlish, max_size=6))
def test_any_spec_gives_a_spec_or_located_errors_never_an_exception(raw: dict[str, object]) -> None:
    (doc,) = load_documents("kind: AdapterRollout\nmetadata: {name: r}\nspec: {}\n")
    doc.data["spec"] = raw
    result = parse_adapter_rollout(doc)
    if result.spec is None:
        assert any(i.severity == "error" and i.line is not None for i in result.issues)
