"""Warm-up in the state machine and in the proxy's routable names (pure)."""

from __future__ import annotations

from lora_syncer.sync.plan import Op
from lora_syncer.sync.states import (
    AdapterMachine,
    AdapterState,
    Due,
    Failed,
    InSync,
    Redeclared,
    ServerLost,
    Started,
    Succeeded,
    Warming,
    transition,
)
from lora_syncer.sync.status import AdapterStatus, SyncStatus


def doubling(attempts: int) -> float:
    return 5.0 * 2 ** (attempts - 1)


WARMING = AdapterMachine(AdapterState.WARMING, unwarmed=True)


def failed_warmup(attempts: int = 1) -> AdapterMachine:
    m = WARMING
    for _ in range(attempts):
        m = transition(transition(m, Warming(retry=True)), Failed("warm-up failed: boom", 100.0, doubling))
    return m


class TestWarming:
    def test_after_a_load_warming_is_a_fresh_start(self) -> None:
        loading = AdapterMachine(AdapterState.LOADING, reason="old", attempts=3, next_retry_at=1.0)
        assert transition(loading, Warming()) == WARMING

    def test_the_warmup_answering_makes_it_loaded_and_warm(self) -> None:
        assert transition(WARMING, Succeeded(Op.LOAD)) == AdapterMachine(AdapterState.LOADED)

    def test_in_sync_keeps_an_unwarmed_adapter_warming(self) -> None:
        assert transition(WARMING, InSync()) == WARMING

    def test_in_sync_keeps_a_failed_warmup_failed_with_its_backoff(self) -> None:
        m = failed_warmup()
        assert m == AdapterMachine(
            AdapterState.FAILED, reason="warm-up failed: boom", attempts=1, next_retry_at=105.0, unwarmed=True
        )
        assert transition(m, InSync()) == m

    def test_a_retry_keeps_attempts_and_error_so_the_backoff_grows(self) -> None:
        m = failed_warmup(2)
        retry = transition(m, Warming(retry=True))
        assert (retry.state, retry.attempts, retry.reason, retry.next_retry_at) == (
            AdapterState.WARMING,
            2,
            "warm-up failed: boom",
            None,
        )
        assert transition(retry, Failed("warm-up failed: boom", 200.0, doubling)).next_retry_at == 220.0

    def test_server_lost_while_warming_waits_without_backoff_and_warms_when_back(self) -> None:
        lost = transition(WARMING, ServerLost("refused"))
        assert (lost.state, lost.unwarmed, lost.next_retry_at) == (AdapterState.PENDING, True, None)
        assert transition(lost, InSync()).state == AdapterState.WARMING

    def test_a_reload_while_unwarmed_warms_again(self) -> None:
        m = transition(transition(failed_warmup(), Redeclared()), Due())
        assert m.state == AdapterState.FAILED  # waits for its retry like any failed adapter
        m = transition(m, Started(Op.RELOAD))
        assert m.state == AdapterState.LOADING and m.unwarmed
        assert transition(m, Warming()) == WARMING

    def test_unloading_forgets_the_warmup(self) -> None:
        m = transition(transition(WARMING, Started(Op.UNLOAD)), Succeeded(Op.UNLOAD))
        assert m == AdapterMachine(AdapterState.ABSENT)

    def test_without_warmup_in_sync_is_loaded_as_before(self) -> None:
        m = AdapterMachine(AdapterState.FAILED, reason="load failed", attempts=1, next_retry_at=5.0)
        assert transition(m, InSync()) == AdapterMachine(AdapterState.LOADED)


class TestRoutableNames:
    def status(self) -> SyncStatus:
        st = SyncStatus()
        st.set_served(["base", "warm", "warming", "failed", "static"])
        for name in ("warm", "warming", "failed"):
            st.adapters[name] = AdapterStatus(id=name, declared="present")
        st.adapters["warm"].apply(Succeeded(Op.LOAD))
        st.adapters["warming"].apply(Warming())
        st.adapters["failed"].apply(Failed("warm-up failed: boom", 1.0, doubling))
        return st

    def test_warming_and_failed_adapters_are_not_routable(self) -> None:
        assert self.status().loaded_names() == {"base", "warm", "static"}

    def test_a_state_change_shows_in_the_next_snapshot(self) -> None:
        st = self.status()
        assert "warming" not in st.loaded_names()
        st.adapters["warming"].apply(Succeeded(Op.LOAD))
        assert "warming" in st.loaded_names()
        st.adapters["warm"].apply(Warming())
        assert "warm" not in st.loaded_names()

    def test_the_snapshot_is_reused_while_nothing_changes(self) -> None:
        st = self.status()
        assert st.loaded_names() is st.loaded_names()
