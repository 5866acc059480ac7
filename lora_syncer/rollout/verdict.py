"""The verdict of one analysis window: PASS, FAIL or NO_VERDICT, with the values that decided it (pure).

A window holds this pod's counts for the stable and the canary, the canary weight (and mirror
percent) in force during it, and any external results (Prometheus values, the webhook's answer).
Every check in the analysis is optional; the window PASSes only when every check given passes,
FAILs when any fails, and otherwise gives no verdict. Missing-data rules, in order:

1. The canary gets no traffic (weight 0, no mirror): no verdict; such a step has no gate.
2. The stable breaks the error limit too: no verdict (the server is sick, not the canary).
3. The canary has fewer than minRequests requests: this pod's checks give no verdict, except
   that canary errors >= max(1, ceil(maxErrorRate x minRequests)) fail the window at once (that
   many errors break the limit whatever the next requests do).
4. The stable gets no traffic (canary at 100%): checks comparing with it are skipped.
5. A Prometheus value that is NaN or empty (None) is no verdict for that check; a webhook that
   gave no answer (None) likewise.

p95 is nearest-rank: the ceil(0.95 x n)-th smallest of the n samples (always a real sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from lora_syncer.rollout.spec import Analysis


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_VERDICT = "no-verdict"


@dataclass(frozen=True)
class TargetCounts:
    """One target's traffic in a window. Answers = requests - errors; `empty` and tokens count answers."""

    requests: int = 0
    errors: int = 0
    ttft: Sequence[float] = ()  # time-to-first-token samples in seconds, sorted or not
    empty: int = 0
    completion_tokens: int = 0

    @property
    def answers(self) -> int:
        return max(0, self.requests - self.errors)


@dataclass(frozen=True)
class Window:
    """One analysis window's inputs. `canary_weight`/`mirror_percent` are those in force during it."""

    stable: TargetCounts
    canary: TargetCounts
    canary_weight: int
    mirror_percent: int = 0


@dataclass(frozen=True)
class External:
    """Results from outside this pod. None means not asked or no answer; NaN means no value."""

    prometheus_error_rate: float | None = None
    prometheus_latency_ratio: float | None = None
    webhook_pass: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    reason: str
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class WindowVerdict:
    outcome: Outcome
    reason: str
    checks: tuple[CheckResult, ...] = ()


def p95(samples: Sequence[float]) -> float | None:
    """Nearest-rank 95th percentile; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = math.ceil(0.95 * len(ordered))
    return ordered[rank - 1]


def fast_fail_errors(analysis: Analysis) -> int | None:
    """Canary errors that fail a window even below minRequests (None without maxErrorRate)."""
    if analysis.max_error_rate is None:
        return None
    # At least one: with maxErrorRate 0 the bound would otherwise be 0 errors, failing every window.
    return max(1, math.ceil(analysis.max_error_rate * analysis.min_requests - 1e-9))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def _external(name: str, value: float | None, limit: float, asked: bool) -> CheckResult:
    if value is None or math.isnan(value):
        what = "no answer" if value is None else "NaN"
        return CheckResult(name, Outcome.NO_VERDICT, f"Prometheus gave {what}" if asked else "not queried")
    if value > limit:
        return CheckResult(name, Outcome.FAIL, f"{value:.4g} > {limit:.4g}", value, limit)
    return CheckResult(name, Outcome.PASS, f"{value:.4g} <= {limit:.4g}", value, limit)


def judge(window: Window, analysis: Analysis, external: External | None = None) -> WindowVerdict:
    """The verdict of `window` under `analysis` (see the module docstring for the missing-data rules)."""
    ext = external or External()
    stable, canary = window.stable, window.canary
    if window.canary_weight <= 0 and window.mirror_percent <= 0:
        return WindowVerdict(Outcome.NO_VERDICT, "the canary gets no traffic at this step: no gate")
    stable_has_traffic = window.canary_weight < 100
    max_err = analysis.max_error_rate
    fast = fast_fail_errors(analysis)
    prom = analysis.prometheus

    if max_err is not None and stable_has_traffic and fast is not None:
        stable_rate = _rate(stable.errors, stable.requests)
        sick = (
            stable.errors >= fast if stable.requests < analysis.min_requests else (stable_rate or 0) > max_err
        )
        if sick:
            return WindowVerdict(
                Outcome.NO_VERDICT,
                f"the stable breaks the error limit too ({stable.errors}/{stable.requests}): the server is sick, not the canary",
            )

    checks: list[CheckResult] = []
    enough = canary.requests >= analysis.min_requests
    short = f"{canary.requests} canary requests < minRequests {analysis.min_requests}"

    if max_err is not None:
        if prom is not None and prom.error_rate_query is not None:
            checks.append(_external("errorRate", ext.prometheus_error_rate, max_err, True))
        elif not enough:
            if fast is not None and canary.errors >= fast:
                checks.append(
                    CheckResult(
                        "errorRate",
                        Outcome.FAIL,
                        f"{canary.errors} canary errors >= {fast}: over the limit whatever follows ({short})",
                        float(canary.errors),
                        float(fast),
                    )
                )
            else:
                checks.append(CheckResult("errorRate", Outcome.NO_VERDICT, short))
        else:
            rate = canary.errors / canary.requests
            outcome = Outcome.FAIL if rate > max_err else Outcome.PASS
            sign = ">" if outcome is Outcome.FAIL else "<="
            checks.append(
                CheckResult("errorRate", outcome, f"{rate:.4g} {sign} {max_err:.4g}", rate, max_err)
            )

    if analysis.max_latency_ratio is not None:
        limit = analysis.max_latency_ratio
        if prom is not None and prom.latency_ratio_query is not None:
            checks.append(_external("latencyRatio", ext.prometheus_latency_ratio, limit, True))
        elif not stable_has_traffic:
            checks.append(CheckResult("latencyRatio", Outcome.PASS, "skipped: the stable gets no traffic"))
        elif not enough:
            checks.append(CheckResult("latencyRatio", Outcome.NO_VERDICT, short))
        else:
            c95, s95 = p95(canary.ttft), p95(stable.ttft)
            if c95 is None or s95 is None or s95 <= 0:
                checks.append(
                    CheckResult(
                        "latencyRatio", Outcome.NO_VERDICT, "no time-to-first-token samples to compare"
                    )
                )
            else:
                ratio = c95 / s95
                outcome = Outcome.FAIL if ratio > limit else Outcome.PASS
                sign = ">" if outcome is Outcome.FAIL else "<="
                checks.append(
                    CheckResult(
                        "latencyRatio",
                        outcome,
                        f"canary p95 TTFT {c95:.4g}s / stable {s95:.4g}s = {ratio:.4g} {sign} {limit:.4g}",
                        ratio,
                        limit,
                    )
                )

    if analysis.max_empty_rate is not None:
        limit = analysis.max_empty_rate
        if not enough:
            checks.append(CheckResult("emptyRate", Outcome.NO_VERDICT, short))
        elif canary.answers == 0:
            checks.append(CheckResult("emptyRate", Outcome.NO_VERDICT, "the canary gave no answers"))
        else:
            rate = canary.empty / canary.answers
            outcome = Outcome.FAIL if rate > limit else Outcome.PASS
            sign = ">" if outcome is Outcome.FAIL else "<="
            checks.append(CheckResult("emptyRate", outcome, f"{rate:.4g} {sign} {limit:.4g}", rate, limit))

    if analysis.max_length_ratio is not None:
        # Two-sided: a broken adapter truncates as often as it runs on, so the canary's mean length
        # must lie within [1/bound, bound] x the stable's, where bound = max(r, 1/r).
        bound = max(analysis.max_length_ratio, 1 / analysis.max_length_ratio)
        if not stable_has_traffic:
            checks.append(CheckResult("lengthRatio", Outcome.PASS, "skipped: the stable gets no traffic"))
        elif not enough:
            checks.append(CheckResult("lengthRatio", Outcome.NO_VERDICT, short))
        elif canary.answers == 0 or stable.answers == 0 or stable.completion_tokens == 0:
            checks.append(CheckResult("lengthRatio", Outcome.NO_VERDICT, "no completion lengths to compare"))
        else:
            ratio = (canary.completion_tokens / canary.answers) / (stable.completion_tokens / stable.answers)
            spread = max(ratio, 1 / ratio) if ratio > 0 else math.inf
            outcome = Outcome.FAIL if spread > bound else Outcome.PASS
            sign = "outside" if outcome is Outcome.FAIL else "within"
            checks.append(
                CheckResult(
                    "lengthRatio",
                    outcome,
                    f"mean length ratio {ratio:.4g} {sign} [{1 / bound:.4g}, {bound:.4g}]",
                    ratio,
                    bound,
                )
            )

    if analysis.webhook is not None:
        if ext.webhook_pass is None:
            checks.append(CheckResult("webhook", Outcome.NO_VERDICT, "the webhook gave no answer"))
        else:
            outcome = Outcome.PASS if ext.webhook_pass else Outcome.FAIL
            checks.append(CheckResult("webhook", outcome, f"the webhook answered pass={ext.webhook_pass}"))

    return _combine(tuple(checks))


def _combine(checks: tuple[CheckResult, ...]) -> WindowVerdict:
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    if failed:
        return WindowVerdict(Outcome.FAIL, "; ".join(f"{c.name}: {c.reason}" for c in failed), checks)
    open_ = [c for c in checks if c.outcome is Outcome.NO_VERDICT]
    if open_:
        return WindowVerdict(Outcome.NO_VERDICT, "; ".join(f"{c.name}: {c.reason}" for c in open_), checks)
    if not checks:
        return WindowVerdict(Outcome.NO_VERDICT, "the analysis names no check", checks)
    return WindowVerdict(Outcome.PASS, "every check passed", checks)
