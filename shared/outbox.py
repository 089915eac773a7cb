"""The transactional outbox: events written with the state change, published after commit.

A service adds its events to the outbox table inside the same transaction as the
change they describe. The relay reads committed rows in id order, publishes them
with the idempotent producer, and deletes them once Kafka has acknowledged them.
A crash between the acknowledgement and the delete republishes the same event id,
which consumers drop (inbox), so the effect is exactly once.

An erasure rewrites its person's events still waiting here (`pending_of`); the relay
and the erasure are kept from crossing, so that no event goes out with its old bytes
after an erasure that rewrote it committed (see `OutboxRelay.publish_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter as Metric
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import BigIntPK, UtcDateTime, error_summary, utcnow
from shared.events import _Envelope, encode_event, record_headers
from shared.kafka import Outgoing, ProducerFailed, ProducerHolder, as_holder, send_all
from shared.keys import KeySource, KeysUnavailable, seal_rows

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Metric(
    "leadflow_outbox_published_total", "Events the relay published", ["service", "topic"]
)
OUTBOX_PENDING = Gauge(
    "leadflow_outbox_pending", "Events in the outbox not yet acknowledged by Kafka", ["service"]
)
OUTBOX_ERRORS = Metric(
    "leadflow_outbox_publish_errors_total", "Failed publish attempts (retried)", ["service"]
)


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


async def add_to_outbox(
    conn: AsyncConnection,
    table: sa.Table,
    events: Sequence[_Envelope],
    *,
    payloads: Sequence[bytes] | None = None,
) -> None:
    """Stage events in the caller's transaction; they go out only if it commits.
    `payloads`: the events already encoded (`encode_event`), in order."""
    if not events:
        return
    now = utcnow()
    encoded = payloads if payloads is not None else [encode_event(e) for e in events]
    await conn.execute(
        table.insert(),
        [
            {
                "event_id": e.id,
                "topic": e.topic,
                "key": e.key,
                "event_type": e.type,
                "payload": payload,
                "created_at": now,
            }
            for e, payload in zip(events, encoded, strict=True)
        ],
    )


async def pending_of(conn: AsyncConnection, table: sa.Table, key: str) -> list[Any]:
    """The events of `key` still in the outbox (id, payload), for the caller's transaction
    to rewrite (an erasure): none of them is being sent meanwhile.

    The rows are locked, in id order as the relay locks them (no deadlock between the
    two); a batch under way holding any of them is waited for, and once it is sent and
    deleted they are no longer there to rewrite.
    """
    stmt = sa.select(table.c.id, table.c.payload).where(table.c.key == key).order_by(table.c.id)
    return list((await conn.execute(stmt.with_for_update())).all())


class OutboxRelay:
    """Publishes outbox rows in order; woken on commit, polling as a safety net."""

    # Any value works as long as every replica of a service uses the same one.
    _LEADER_LOCK_KEY = 0x1EADF10

    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        table: sa.Table,
        producer: ProducerHolder | AIOKafkaProducer,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        before_send: Callable[[], Awaitable[None]] | None = None,
        keys: KeySource | None = None,
    ) -> None:
        """`producer`: a holder replaces a producer that failed (a bare producer is never
        replaced). `before_send`: a test's hook, awaited between reading a batch and
        sending it. `keys`: where leads' keys come from; the outbox keeps events in clear
        (the service's own database), their personal fields are sealed as they are sent,
        and left out for a lead without a key (see shared.crypto)."""
        self._service = service
        self._keys = keys
        self._before_send = before_send
        self._engine = engine
        self._producers = as_holder(producer, service)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._leader_conn: AsyncConnection | None = None
        # Fixed text (the ids as one array): no statement to build per batch.
        name = engine.dialect.identifier_preparer.format_table(table)
        self._read_batch = (
            f"SELECT id, event_id, topic, key, event_type, payload FROM {name} ORDER BY id "
            "LIMIT $1 FOR UPDATE"
        )
        self._delete_batch = f"DELETE FROM {name} WHERE id = ANY($1::bigint[])"

    def wake(self) -> None:
        """Call after committing outbox rows so they go out without waiting for a poll."""
        self._wakeup.set()

    def request_stop(self) -> None:
        """Finish the batch under way, then return from `run`."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        backoff = 0.2
        try:
            while not self._stopping.is_set():
                try:
                    if await self._lead():
                        while await self.publish_batch() == self._batch_size:
                            pass
                    backoff = 0.2
                except (KafkaError, OSError, sa.exc.SQLAlchemyError, KeysUnavailable) as exc:
                    OUTBOX_ERRORS.labels(self._service).inc()
                    log.warning("outbox relay: %s; retrying in %.1fs", error_summary(exc), backoff)
                    await self._drop_leadership()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await self._stopping.wait()
                    backoff = min(backoff * 2, 5.0)
                    continue
                try:
                    async with asyncio.timeout(self._poll_interval):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
                self._wakeup.clear()
        finally:
            await self._drop_leadership()

    async def publish_batch(self) -> int:
        """Publish up to one batch; return how many events went out.

        A batch is read, sent and deleted in one transaction, under a hold that an erasure
        rewriting its rows (`pending_of`) waits for, so that an event read before the
        erasure committed is sent before it commits, and one read after goes out
        rewritten: the read locks its rows `FOR UPDATE` (a row an erasure holds is waited
        for, then read as committed), Kafka's acknowledgement comes, the delete commits
        and frees them. Writers only insert outbox rows, which no lock stops: only an
        erasure of a lead in the batch waits, for one send.

        A version check at the delete could not do it: by then the old bytes are out.
        """
        rows: Sequence[Any]
        # Before the read: a producer that failed is replaced outside the transaction.
        producer = await self._producers.ready()
        async with self._connection() as conn:
            rows = (await conn.exec_driver_sql(self._read_batch, (self._batch_size,))).all()
            if rows:
                await self._send(producer, rows, conn)
                await conn.exec_driver_sql(self._delete_batch, ([r.id for r in rows],))
            await conn.commit()
        if not rows:
            OUTBOX_PENDING.labels(self._service).set(0)
            return 0
        for topic, count in Counter(r.topic for r in rows).items():
            OUTBOX_PUBLISHED.labels(self._service, topic).inc(count)
        return len(rows)

    async def _send(
        self, producer: AIOKafkaProducer, rows: Sequence[Any], conn: AsyncConnection
    ) -> None:
        if self._before_send is not None:
            await self._before_send()
        payloads = await seal_rows(self._keys, rows, within=conn)
        try:
            await send_all(
                producer,
                [
                    Outgoing(
                        r.topic,
                        r.key.encode(),
                        payload,
                        record_headers(r.event_type, r.event_id),
                    )
                    for r, payload in zip(rows, payloads, strict=True)
                ],
            )
        except ProducerFailed as exc:
            # Retrying through this producer would fail forever. The rows stay (deleted
            # only once acknowledged): the next batch sends them again from the first, in
            # order, on a new producer; what was delivered goes out twice with the same ids.
            self._producers.failed(producer, exc)
            raise

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """The leader's own connection when there is one (no pool checkout and its ping
        per batch), else one from the pool. A failure rolls back what it began: a batch's
        row locks go with it."""
        if self._leader_conn is not None:
            try:
                yield self._leader_conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._leader_conn.rollback()
                raise
            return
        async with self._engine.connect() as conn:
            yield conn

    async def _lead(self) -> bool:
        """Only one replica relays at a time (a session advisory lock), keeping per-key order."""
        if self._leader_conn is not None:
            return True
        conn = await self._engine.connect()
        # The lock is the session's: it outlives the transactions of the batches.
        got = await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(self._LEADER_LOCK_KEY)))
        await conn.commit()
        if got:
            self._leader_conn = conn
            log.info("outbox relay of %s is the leader", self._service)
            return True
        await conn.close()
        return False

    async def _drop_leadership(self) -> None:
        if self._leader_conn is not None:
            conn, self._leader_conn = self._leader_conn, None
            try:
                await conn.close()
            except Exception:  # the connection may be the thing that broke
                log.debug("closing the relay leader connection failed", exc_info=True)
