"""Database plumbing: the PostgreSQL engine, column types, upserts and error classification."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp with time zone that always comes back timezone-aware in UTC; a naive
    datetime is refused on the way in rather than guessed at."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Leadflow stores timezone-aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A result row of any shape (SQLAlchemy 2.1 types rows by their column tuple).
AnyRow = sa.Row[*tuple[Any, ...]]

# Autoincrementing primary keys (BIGSERIAL).
BigIntPK = sa.BigInteger()
Money = sa.Numeric(18, 2)
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def in_list(
    conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[Any]
) -> sa.ColumnElement[bool]:
    """`column IN values` as `= ANY(array)`: one parameter, so one prepared statement for
    any number of values instead of a statement per list length. (`conn` is no longer
    needed, PostgreSQL being the only dialect; kept so callers need not change.)"""
    ids: sa.BindParameter[list[Any]] = sa.bindparam("ids", list(values), unique=True)
    return column == sa.any_(sa.cast(ids, postgresql.ARRAY(column.type)))


def as_columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arrays a PostgreSQL statement takes back apart
    with unnest (one parameter per column, so one prepared statement for any row count)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine on a PostgreSQL URL (the only database Leadflow runs on).

    `hide_parameters`: an error's text (and `echo`) never quotes a statement's values,
    which are people's e-mails, phones and names."""
    if make_url(url).get_backend_name() != "postgresql":
        raise ValueError("Leadflow's databases are PostgreSQL: expected a postgresql+asyncpg URL")
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


# SQLSTATE classes that mean "the server cannot serve now", not "this statement is wrong":
# 08 connection exceptions, 57P0x shutdown / cannot connect now, 53300 too many connections.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_UNAVAILABLE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    OSError,
    ConnectionError,
    TimeoutError,
)
# asyncpg's errors for a connection that is gone or cannot be had, by name.
_ASYNCPG_UNAVAILABLE = frozenset(
    {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
        "InternalClientError",
    }
)


def is_unavailable(exc: BaseException) -> bool:
    """True when an error says the database is unreachable or going away: answer 503, retry.

    Drivers wrap the cause differently (asyncpg's CannotConnectNowError arrives as a plain
    DBAPIError), so the whole cause chain is inspected.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE_ERRORS):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        kind = type(current)
        if kind.__module__.startswith("asyncpg") and kind.__name__ in _ASYNCPG_UNAVAILABLE:
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def error_summary(exc: BaseException) -> str:
    """What a log may say of an error: a database error as its kind only (`error_kind`),
    since its text quotes people's data even with the parameters hidden (PostgreSQL's
    `DETAIL:  Key (email)=(…)`, `invalid input syntax for type integer: "…"`); any other
    error as its type and text."""
    if any(_is_database_error(e) for e in _cause_chain(exc)):
        return error_kind(exc)
    return f"{type(exc).__name__}: {exc}"


def error_kind(exc: BaseException) -> str:
    """An error without its text, for a log line or a dead-letter header: the types along
    its cause chain and the SQLSTATE where there is one (asyncpg's `sqlstate`, psycopg's
    `pgcode`), say `IntegrityError/UniqueViolationError SQLSTATE 23505`. Never the message,
    whatever the error: a database error quotes the rows it conflicts with, and a consumer
    handler's own may quote the event."""
    chain = _cause_chain(exc)
    names = "/".join(dict.fromkeys(type(e).__name__ for e in chain))
    for e in chain:
        code = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(code, str):
            return f"{names} SQLSTATE {code}"
    return names


def _cause_chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, through SQLAlchemy's `orig` (the driver's error)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def _is_database_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return isinstance(exc, sa.exc.SQLAlchemyError) or module.startswith(("asyncpg", "psycopg"))


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


def utcnow() -> datetime:
    return datetime.now(UTC)
