"""Which wanted durations share one sorted read (stored._runs)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.kpi.reads.stored import RUN_GAP, _runs

A = datetime(2026, 1, 1, tzinfo=UTC)
B = datetime(2026, 2, 1, tzinfo=UTC)


def test_close_ranks_of_one_part_and_period_are_one_read() -> None:
    wanted = [("first_response_time", 7, 3, A, B, None, i) for i in (41, 40, 40 + RUN_GAP)]
    assert _runs(wanted) == [("first_response_time", 7, 3, A, B, None, 40, RUN_GAP + 1)]


def test_far_ranks_other_parts_bins_periods_and_groups_are_reads_of_their_own() -> None:
    wanted = [
        ("first_response_time", 7, 3, A, B, None, 3),
        ("first_response_time", 7, 3, A, B, None, 4 + RUN_GAP),  # too far from 3
        ("first_response_time", 7, 4, A, B, None, 3),  # another part
        ("first_response_time", 8, 3, A, B, None, 3),  # another bin
        ("proposal_time", 7, 3, A, B, None, 3),  # another metric
        ("first_response_time", 7, -1, A, B, "google", 3),  # another group, every part
    ]
    assert sorted(_runs(wanted), key=repr) == sorted(
        [
            ("first_response_time", 7, 3, A, B, None, 3, 1),
            ("first_response_time", 7, 3, A, B, None, 4 + RUN_GAP, 1),
            ("first_response_time", 7, 4, A, B, None, 3, 1),
            ("first_response_time", 8, 3, A, B, None, 3, 1),
            ("proposal_time", 7, 3, A, B, None, 3, 1),
            ("first_response_time", 7, -1, A, B, "google", 3, 1),
        ],
        key=repr,
    )
