"""Which failures leave a write's outcome unknown: only a lost connection during COMMIT."""

from __future__ import annotations

import sqlalchemy as sa

from shared.commit_outcome import mark_failed_at_commit, outcome_unknown


def lost() -> sa.exc.OperationalError:
    return sa.exc.OperationalError(None, None, ConnectionResetError("connection lost"))


class TestOutcomeUnknown:
    def test_a_connection_lost_during_commit_is_unknown(self) -> None:
        exc = lost()
        mark_failed_at_commit(exc)
        assert outcome_unknown(exc)

    def test_a_connection_lost_before_commit_is_not(self) -> None:
        assert not outcome_unknown(lost())

    def test_a_commit_the_server_refused_is_not(self) -> None:
        # An answer from the server (a serialization failure, a deferred constraint) says
        # the transaction did not commit.
        refused = sa.exc.IntegrityError(None, None, Exception("deferred constraint"))
        mark_failed_at_commit(refused)
        assert not outcome_unknown(refused)

    def test_the_mark_is_found_where_the_error_is_wrapped(self) -> None:
        cause = lost()
        mark_failed_at_commit(cause)
        try:
            try:
                raise cause
            except sa.exc.OperationalError as exc:
                raise RuntimeError("the batch failed") from exc
        except RuntimeError as wrapped:
            assert outcome_unknown(wrapped)
