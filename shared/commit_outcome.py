"""Whether a failed write may have been stored: a COMMIT whose answer never came.

A transaction that fails before its COMMIT is sent stores nothing (the server rolls it
back when the connection goes), so the client may simply retry. A COMMIT sent on a
connection that is lost before the server's answer arrives may have committed or not, and
nobody on the client side can tell. Such a failure is marked here, so an HTTP answer says
the outcome is unknown instead of "nothing was stored".

`track_commits` makes every engine of the process mark them: a connection is noted when
SQLAlchemy is about to send COMMIT and forgotten at its next BEGIN; an error SQLAlchemy
raises in between, for no statement, is the COMMIT's. That counts a connection the
driver finds closed just as COMMIT is due (asyncpg says so before sending anything): its
words for the two cases are no contract, and "unknown" is the answer that is never wrong.
The cost: every engine dispatches SQLAlchemy's connection events (a few dozen Python calls
per transaction).
"""

from __future__ import annotations

import weakref

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

from shared.db import is_unavailable

_MARK = "leadflow_failed_at_commit"
_committing: weakref.WeakSet[Connection] = weakref.WeakSet()


def track_commits() -> None:
    """Mark COMMIT failures on every engine of the process (once; later calls do nothing)."""
    if event.contains(Engine, "commit", _commit_sent):
        return
    event.listen(Engine, "commit", _commit_sent)
    event.listen(Engine, "begin", _began)
    event.listen(Engine, "handle_error", _failed)


def mark_failed_at_commit(exc: BaseException) -> None:
    """Note that `exc` was raised once COMMIT was sent (or while it was being sent)."""
    setattr(exc, _MARK, True)


def outcome_unknown(exc: BaseException) -> bool:
    """True when the connection was lost during a COMMIT: it may have committed, or not.

    A COMMIT the server answered with an error (a serialization failure, say) did not
    commit: that is no unknown outcome, and neither is anything that failed before COMMIT.
    """
    return _failed_at_commit(exc) and is_unavailable(exc)


def _failed_at_commit(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, _MARK, False):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _commit_sent(conn: Connection) -> None:
    _committing.add(conn)


def _began(conn: Connection) -> None:
    _committing.discard(conn)


def _failed(context: ExceptionContext) -> None:
    conn = context.connection
    if conn is None or context.statement is not None or conn not in _committing:
        return
    _committing.discard(conn)
    for exc in (context.sqlalchemy_exception, context.original_exception):
        if exc is not None:
            mark_failed_at_commit(exc)
