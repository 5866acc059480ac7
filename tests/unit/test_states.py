"""The per-adapter state machine: every event's transition, pure and deterministic."""

from __future__ import annotations

import pytest

from lora_syncer.sync.plan import Op, SkipReason
from lora_syncer.sync.states import (
    AdapterMachine,
    AdapterState,
    Downloaded,
    Due,
    Failed,
    Gone,
    InSync,
    Progress,
    Redeclared,
    ServerLost,
    Skipped,
    Started,
    Succeeded,
    Warming,
    transition,
)
from lora_syncer.sync.status import AdapterStatus


def doubling(attempts: int) -> float:
    return 5.0 * 2 ** (attempts - 1)


FAILED = AdapterMachine(AdapterState.FAILED, reason="boom", attempts=2, next_retry_at=110.0)


class TestPlanEvents:
    def test_in_sync_is_loaded_with_a_clean_slate(self) -> None:
        assert transition(FAILED, InSync()) == AdapterMachine(AdapterState.LOADED)

    def test_gone_is_absent_with_a_clean_slate(self) -> None:
        assert transition(FAILED, Gone()) == AdapterMachine(AdapterState.ABSENT)

    @pytest.mark.parametrize(
        ("reason", "state"),
        [
            (SkipReason.CONFLICT, AdapterState.CONFLICT),
            (SkipReason.BASE_MODEL_MISMATCH, AdapterState.BASE_MODEL_MISMATCH),
            (SkipReason.FORBIDDEN_SOURCE, AdapterState.FORBIDDEN_SOURCE),
        ],
    )
    def test_skipped_takes_the_reason_as_state_and_detail(
        self, reason: SkipReason, state: AdapterState
    ) -> None:
        after = transition(AdapterMachine(), Skipped(reason, "why"))
        assert (after.state, after.reason) == (state, "why")

    @pytest.mark.parametrize("state", [AdapterState.LOADED, AdapterState.ABSENT, AdapterState.CONFLICT])
    def test_due_makes_an_adapter_pending(self, state: AdapterState) -> None:
        assert transition(AdapterMachine(state), Due()).state == AdapterState.PENDING

    def test_due_keeps_a_failed_adapter_failed_with_its_backoff(self) -> None:
        assert transition(FAILED, Due()) == FAILED

    def test_redeclared_drops_the_backoff_but_keeps_the_state(self) -> None:
        after = transition(FAILED, Redeclared())
        assert after == AdapterMachine(AdapterState.FAILED, reason=None, attempts=0, next_retry_at=None)
        assert not after.backing_off(0.0)


class TestCallEvents:
    @pytest.mark.parametrize(
        ("op", "state"),
        [
            (Op.LOAD, AdapterState.LOADING),
            (Op.RELOAD, AdapterState.LOADING),
            (Op.UNLOAD, AdapterState.UNLOADING),
        ],
    )
    def test_started(self, op: Op, state: AdapterState) -> None:
        after = transition(FAILED, Started(op))
        assert after.state == state
        assert after.attempts == 2  # a retry in progress still counts the earlier failures

    @pytest.mark.parametrize(
        ("op", "state"),
        [(Op.LOAD, AdapterState.LOADED), (Op.RELOAD, AdapterState.LOADED), (Op.UNLOAD, AdapterState.ABSENT)],
    )
    def test_succeeded_resets_attempts_and_error(self, op: Op, state: AdapterState) -> None:
        assert transition(transition(FAILED, Started(op)), Succeeded(op)) == AdapterMachine(state)

    def test_failed_counts_the_attempt_and_schedules_the_retry(self) -> None:
        once = transition(AdapterMachine(AdapterState.LOADING), Failed("no such path", 100.0, doubling))
        assert once == AdapterMachine(
            AdapterState.FAILED, reason="no such path", attempts=1, next_retry_at=105.0
        )
        twice = transition(once, Failed("no such path", 200.0, doubling))
        assert (twice.attempts, twice.next_retry_at) == (2, 210.0)
        assert twice.backing_off(209.9) and not twice.backing_off(210.0)

    def test_failed_not_counted_still_waits_at_least_one_step(self) -> None:
        after = transition(AdapterMachine(), Failed("updates disabled", 0.0, doubling, count_attempt=False))
        assert (after.state, after.attempts, after.next_retry_at) == (AdapterState.FAILED, 0, 5.0)

    def test_server_lost_is_pending_without_backoff(self) -> None:
        start = AdapterMachine(AdapterState.LOADING, attempts=1, next_retry_at=None)
        after = transition(start, ServerLost("refused"))
        assert after == AdapterMachine(AdapterState.PENDING, reason="refused", attempts=1)


class TestComingStates:
    def test_downloading_carries_progress_and_loading_drops_it(self) -> None:
        dl = transition(transition(AdapterMachine(), Started(Op.LOAD)), Downloaded(512, 2048))
        assert (dl.state, dl.progress) == (AdapterState.DOWNLOADING, Progress(512, 2048))
        more = transition(dl, Downloaded(2048, 2048))
        assert more.progress == Progress(2048, 2048)
        assert transition(more, Started(Op.LOAD)).progress is None

    def test_warming_comes_before_loaded(self) -> None:
        warm = transition(transition(AdapterMachine(), Started(Op.LOAD)), Warming())
        assert warm.state == AdapterState.WARMING
        assert transition(warm, Succeeded(Op.LOAD)).state == AdapterState.LOADED

    def test_a_failed_warm_up_is_failed_with_its_reason(self) -> None:
        after = transition(
            AdapterMachine(AdapterState.WARMING), Failed("warm-up request failed", 0.0, doubling)
        )
        assert (after.state, after.reason, after.progress) == (
            AdapterState.FAILED,
            "warm-up request failed",
            None,
        )


class TestAdapterStatus:
    def test_apply_reports_state_changes_and_stamps_them(self) -> None:
        a = AdapterStatus(id="x", declared="present")
        a.changed_at = 0.0
        assert a.apply(Due()) is False and a.changed_at == 0.0  # pending already
        assert a.apply(Started(Op.LOAD)) is True and a.changed_at > 0
        assert a.state == AdapterState.LOADING

    def test_views_follow_the_machine(self) -> None:
        a = AdapterStatus(id="x", declared="present")
        a.apply(Failed("bad", 10.0, doubling))
        assert (a.state, a.last_error, a.attempts, a.next_retry_at) == (AdapterState.FAILED, "bad", 1, 15.0)
        assert a.backing_off(14.0) and not a.backing_off(15.0)
