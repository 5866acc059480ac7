"""The emulator's call log: ordered admin records, counters, concurrency high-water mark."""

from __future__ import annotations

from lora_syncer.emulator.calls import CallLog


class TestCallLog:
    def test_records_and_counters(self) -> None:
        """Records keep their order and the counters sum loads and unloads."""
        log = CallLog()
        log.record("load", "a", "/a", 200)
        log.record("load", "a", "/a", 400)
        log.record("unload", "a", None, 200)
        log.requests["load"] += 2
        data = log.to_dict()
        assert [(c["op"], c["status"]) for c in data["calls"]] == [
            ("load", 200),
            ("load", 400),
            ("unload", 200),
        ]
        assert (data["counters"]["loads"], data["counters"]["unloads"]) == (2, 1)
        assert data["counters"]["requests"] == {"load": 2}

    def test_high_water_mark(self) -> None:
        """The in-flight high-water mark survives finishing and restarts from the current level on clear."""
        log = CallLog()
        log.admin_started()
        log.admin_started()
        log.admin_finished()
        assert log.max_admin_in_flight == 2
        log.clear()
        assert (log.max_admin_in_flight, log.records) == (1, [])
