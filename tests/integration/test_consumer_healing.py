"""The consumer loop on a real broker and database heals itself, and says when it cannot.

Something unexpected escaping the loop restarts it with a fresh Kafka consumer; a
rebalance while a batch is retried does not kill it; an event that hangs its handler is
parked instead of hanging the group; a consumer stuck retrying is named by /readyz; and
what it logs or parks carries no personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from fastapi import FastAPI
from prometheus_client import generate_latest

from services.qualifier.config import DEFAULT_DEFINITION, QualifierSettings
from services.qualifier.consumer import make_handler
from services.qualifier.definitions import service
from services.qualifier.tables import decisions, outbox
from shared.consumer import EventConsumer
from shared.db import create_engine, utcnow
from shared.delivery import BatchHandler, Delivered, TransientFailure
from shared.events import CONTENT_TYPE, TOPIC_DEADLETTER, LeadReceived, encode_event
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.migrations import migrate
from shared.runtime import Runtime, _supervised
from shared.settings import CommonSettings
from shared.web import health_router
from tests.support import header, received

pytestmark = pytest.mark.kafka

# What a database error's text may quote: never to be seen in a log line or a header.
PERSON = "anna.petrova@private.example"


@pytest.fixture
async def qualifier(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """The qualifier's runtime on a fresh database (its handler's dependencies), Kafka
    side not started: each test runs the consumer loop itself."""
    await asyncio.to_thread(migrate, "qualifier", database_url)
    settings = QualifierSettings(
        database_url=database_url,
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1"),
    )
    runtime = Runtime(settings, outbox=outbox)
    async with runtime.engine.begin() as conn:
        await service.ensure_initial_definition(
            conn, DEFAULT_DEFINITION.read_text(encoding="utf-8"), utcnow()
        )
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    made = make_producer(kafka_bootstrap, "test-healing")
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def _topic(kafka_bootstrap: str, partitions: int = 1) -> str:
    topic = f"healing-{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, partitions=partitions, topics=[topic])
    await ensure_topics(kafka_bootstrap, partitions=6, topics=[TOPIC_DEADLETTER])  # as services do
    return topic


async def _send(
    producer: AIOKafkaProducer, topic: str, leads: Sequence[LeadReceived], partition: int = 0
) -> None:
    for lead in leads:
        await producer.send_and_wait(
            topic, encode_event(lead), key=lead.subject.encode(), partition=partition
        )


async def _decided(runtime: Runtime) -> dict[str, int]:
    """Decisions per lead id."""
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(decisions.c.lead_id, sa.func.count()).group_by(decisions.c.lead_id)
        )
        return {lead_id: n for lead_id, n in rows}


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 90) -> None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {seconds:g}s") from None


async def _all_decided(runtime: Runtime, leads: Sequence[LeadReceived]) -> None:
    wanted = {lead.subject for lead in leads}

    async def done() -> bool:
        return wanted <= set(await _decided(runtime))

    await _until(done, "every lead decided")


async def _parked(kafka_bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record parked so far from `topic` (the dead-letter topic read to its end)."""
    consumer = AIOKafkaConsumer(
        TOPIC_DEADLETTER,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = list(consumer.partitions_for_topic(TOPIC_DEADLETTER) or ())
        ends = await consumer.end_offsets([TopicPartition(TOPIC_DEADLETTER, p) for p in partitions])
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(r for r in records if header(r, "dlq_topic") == topic)
    finally:
        await consumer.stop()
    return found


@contextlib.asynccontextmanager
async def _consuming(loop: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    """The loop run as the runtime runs it: supervised, restarted when something escapes."""
    task = asyncio.create_task(_supervised("test consumer", loop.run))
    try:
        yield task
    finally:
        loop.request_stop()
        await asyncio.wait_for(task, 60)


class _Fault:
    """A fault injected into real Kafka consumers: when armed, the next call of `method`
    raises RuntimeError, outside every failure the loop knows."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.armed = False
        self.raised = 0

    def __call__(self, consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
        real = getattr(consumer, self.method)

        async def faulty(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.armed = False
                self.raised += 1
                raise RuntimeError(f"injected fault quoting {PERSON}")
            return await real(*args, **kwargs)

        setattr(consumer, self.method, faulty)
        return consumer


class TestRestart:
    @pytest.mark.parametrize("method", ["getmany", "commit"])
    async def test_a_crash_restarts_the_loop_with_a_fresh_consumer_applying_each_event_once(
        self,
        method: str,
        qualifier: Runtime,
        producer: AIOKafkaProducer,
        kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        topic = await _topic(kafka_bootstrap)
        fault = _Fault(method)
        made: list[AIOKafkaConsumer] = []

        def factory() -> AIOKafkaConsumer:
            made.append(fault(make_consumer(kafka_bootstrap, f"g-{topic}", [topic], "test")))
            return made[-1]

        loop = EventConsumer(
            service=f"test-{topic}",
            consumer_factory=factory,
            producer=producer,
            handle_batch=make_handler(qualifier),
        )
        first, second = [received() for _ in range(4)], [received() for _ in range(4)]
        async with _consuming(loop):
            await _send(producer, topic, first)
            await _all_decided(qualifier, first)
            fault.armed = True
            # One at a time: a failed commit surfaces with the next batch's.
            for lead in second:
                await _send(producer, topic, [lead])
                await asyncio.sleep(0.3)
            await _all_decided(qualifier, first + second)
        assert fault.raised == 1
        # The loop came back with a new Kafka consumer (aiokafka cannot start one twice).
        assert len(made) >= 2 and len({id(c) for c in made}) == len(made)
        assert all(c._closed for c in made)  # and each one it was done with is stopped
        counts = await _decided(qualifier)
        assert {lead.subject: counts.get(lead.subject) for lead in first + second} == {
            lead.subject: 1 for lead in first + second
        }
        # The crash is logged by type and place, not by its message.
        assert "crashed (RuntimeError)" in caplog.text
        assert PERSON not in caplog.text


class TestRebalanceDuringRetry:
    async def test_only_partitions_still_assigned_are_rewound(
        self, qualifier: Runtime, producer: AIOKafkaProducer, kafka_bootstrap: str
    ) -> None:
        topic = await _topic(kafka_bootstrap, partitions=2)
        group = f"g-{topic}"
        leads = {p: [received() for _ in range(3)] for p in (0, 1)}
        for p, mine in leads.items():
            await _send(producer, topic, mine, partition=p)
        real = make_handler(qualifier)
        failing = asyncio.Event()
        loops: list[EventConsumer] = []

        async def one_partition_left() -> bool:
            return loops[0].liveness().partitions_assigned == 1

        async def database_outage_during_a_rebalance(batch: Sequence[Delivered]) -> None:
            if not failing.is_set():
                # The first batch holds both partitions' records; while it is "in the
                # database", a second replica joins and takes one of them away.
                assert {d.partition for d in batch} == {0, 1}
                failing.set()
                await _until(one_partition_left, "the rebalance taking a partition away")
                raise TransientFailure("database restarting")
            await real(batch)

        def replica(name: str, handle: BatchHandler) -> EventConsumer:
            return EventConsumer(
                service=f"test-{name}-{topic}",
                consumer_factory=lambda: make_consumer(kafka_bootstrap, group, [topic], name),
                producer=producer,
                handle_batch=handle,
            )

        loops += [replica("a", database_outage_during_a_rebalance), replica("b", real)]
        a = asyncio.create_task(loops[0].run())  # not supervised: a crash fails the test
        try:
            await asyncio.wait_for(failing.wait(), 60)
            async with _consuming(loops[1]):
                await _all_decided(qualifier, leads[0] + leads[1])
                assert not a.done()
                assert loops[0].liveness().partitions_assigned == 1
        finally:
            loops[0].request_stop()
            await asyncio.wait_for(a, 60)
        counts = await _decided(qualifier)
        assert [counts[lead.subject] for lead in leads[0] + leads[1]] == [1] * 6


def _hanging(real: BatchHandler, runtime: Runtime, hangs: Callable[[Delivered], bool]) -> Any:
    """`real`, except that a batch holding an event `hangs` says hangs, holding the
    consumer's database connection (as a hung transaction holds its locks)."""

    async def handle(batch: Sequence[Delivered]) -> None:
        if any(hangs(d) for d in batch):
            async with runtime.consumer_db.begin():
                await asyncio.Event().wait()
        await real(batch)

    return handle


class TestHandlerTimeout:
    @pytest.mark.parametrize("in_flight", [1, 2])
    async def test_an_event_that_hangs_the_handler_is_parked_and_the_rest_applied(
        self,
        in_flight: int,
        qualifier: Runtime,
        producer: AIOKafkaProducer,
        kafka_bootstrap: str,
    ) -> None:
        topic = await _topic(kafka_bootstrap)
        bad, good = received(), [received() for _ in range(4)]
        loop = EventConsumer(
            service=f"test-{topic}",
            consumer_factory=lambda: make_consumer(kafka_bootstrap, f"g-{topic}", [topic], "t"),
            producer=producer,
            handle_batch=_hanging(
                make_handler(qualifier), qualifier, lambda d: d.event.id == bad.id
            ),
            in_flight=in_flight,
            batch_timeout=1.0,
            healthy=qualifier.database_ready,
        )
        async with _consuming(loop):
            await _send(producer, topic, [bad])
            await asyncio.sleep(0.5)
            # With two in flight these make the next batch, which waits for the hung
            # one's connection and times out too: its events are not the ones to blame.
            await _send(producer, topic, good)
            await _all_decided(qualifier, good)

            async def one_parked() -> bool:
                return len(await _parked(kafka_bootstrap, topic)) >= 1

            await _until(one_parked, "the hanging event parked")
            await asyncio.sleep(2)  # nothing else is parked meanwhile
        parked = await _parked(kafka_bootstrap, topic)
        assert [header(r, "dlq_reason") for r in parked] == ["handler timed out after 1s"]
        assert header(parked[0], "dlq_offset") == "0"
        counts = await _decided(qualifier)
        assert [counts.get(lead.subject) for lead in good] == [1] * 4
        assert bad.subject not in counts

    async def test_a_database_that_does_not_answer_is_waited_for_and_nothing_parked(
        self, qualifier: Runtime, producer: AIOKafkaProducer, kafka_bootstrap: str
    ) -> None:
        topic = await _topic(kafka_bootstrap)
        leads = [received() for _ in range(3)]
        outage = True

        async def healthy() -> bool:
            return not outage

        loop = EventConsumer(
            service=f"test-{topic}",
            consumer_factory=lambda: make_consumer(kafka_bootstrap, f"g-{topic}", [topic], "t"),
            producer=producer,
            handle_batch=_hanging(make_handler(qualifier), qualifier, lambda d: outage),
            batch_timeout=0.5,
            healthy=healthy,
        )
        app = FastAPI()
        app.include_router(health_router({}, consumers=lambda: [loop.liveness()], stall_seconds=2))
        transport = httpx.ASGITransport(app=app)
        async with (
            _consuming(loop),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            await _send(producer, topic, leads)

            # Stuck behind the outage: /readyz names the consumer, /metrics says how long.
            async def stalled() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await _until(stalled, "/readyz 503 while the consumer is stuck", seconds=60)
            answer = (await http.get("/readyz")).json()
            assert answer["checks"] == {f"consumer test-{topic}": "stalled"}
            assert answer["consumers"][f"test-{topic}"]["partitions_assigned"] == 1
            assert answer["consumers"][f"test-{topic}"]["lag"] == 3
            metrics = generate_latest().decode()
            assert f'leadflow_consumer_partitions_assigned{{service="test-{topic}"}} 1.0' in metrics
            assert f'leadflow_consumer_lag{{service="test-{topic}"}} 3.0' in metrics
            assert f'leadflow_consumer_seconds_since_poll{{service="test-{topic}"}}' in metrics

            outage = False
            await _all_decided(qualifier, leads)

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await _until(ready, "/readyz 200 once the consumer polls again", seconds=30)
            assert (await http.get("/readyz")).json()["consumers"][f"test-{topic}"]["lag"] == 0
        assert await _parked(kafka_bootstrap, topic) == []


class TestNoPersonalData:
    async def test_parked_reasons_and_log_lines_name_the_failure_not_its_values(
        self,
        database_url: str,
        producer: AIOKafkaProducer,
        kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO)
        topic = await _topic(kafka_bootstrap)
        email = PERSON
        engine = create_engine(database_url)
        people = sa.Table("people", sa.MetaData(), sa.Column("email", sa.String(200), unique=True))
        async with engine.begin() as conn:
            await conn.run_sync(people.metadata.create_all)

        async def handle(batch: Sequence[Delivered]) -> None:
            # The second lead with the same e-mail breaks the unique constraint: the error's
            # text quotes the statement's parameters and the conflicting key.
            async with engine.begin() as conn:
                for d in batch:
                    assert isinstance(d.event, LeadReceived)
                    await conn.execute(people.insert().values(email=d.event.data.email))

        loop = EventConsumer(
            service=f"test-{topic}",
            consumer_factory=lambda: make_consumer(kafka_bootstrap, f"g-{topic}", [topic], "t"),
            producer=producer,
            handle_batch=handle,
        )
        twice = [received(email=email), received(email=email)]
        # Not a Leadflow event: its consent is the e-mail (pydantic's text quotes inputs).
        raw = encode_event(received()).replace(b'"consent":true', f'"consent":"{email}"'.encode())
        assert email.encode() in raw
        try:
            async with _consuming(loop):
                await _send(producer, topic, twice)
                await producer.send_and_wait(topic, raw, partition=0)

                async def both_parked() -> bool:
                    return len(await _parked(kafka_bootstrap, topic)) >= 2

                await _until(both_parked, "the duplicate and the undecodable message parked")
        finally:
            await engine.dispose()
        reasons = sorted(
            header(r, "dlq_reason") or "" for r in await _parked(kafka_bootstrap, topic)
        )
        assert reasons == [
            "handler failed: IntegrityError/UniqueViolationError SQLSTATE 23505",
            "undecodable: lead.received.data.consent: bool_parsing",
        ]
        assert "applying them one at a time" in caplog.text  # the failure was logged
        assert email not in caplog.text


class TestDeadLetterHeaders:
    async def test_a_parked_record_says_its_content_type_and_keeps_no_other_header(
        self, producer: AIOKafkaProducer, kafka_bootstrap: str
    ) -> None:
        """A re-encoded event is a structured CloudEvent, and says so; an undecodable
        record keeps the content-type it came with, if any, and nothing else it carried."""
        topic = await _topic(kafka_bootstrap)
        rejected = received()

        async def handle(batch: Sequence[Delivered]) -> None:
            if any(d.event.id == rejected.id for d in batch):
                raise ValueError("rejected for good")

        loop = EventConsumer(
            service=f"test-{topic}",
            consumer_factory=lambda: make_consumer(kafka_bootstrap, f"g-{topic}", [topic], "t"),
            producer=producer,
            handle_batch=handle,
        )
        theirs = ("x-person", PERSON.encode())
        sent = [
            (b"not json", [("content-type", b"text/plain"), theirs]),  # offset 0
            (b"not json either", [theirs]),  # offset 1
            (encode_event(rejected), [theirs]),  # offset 2: decoded, then rejected
        ]
        async with _consuming(loop):
            for value, headers in sent:
                await producer.send_and_wait(topic, value, partition=0, headers=headers)

            async def all_parked() -> bool:
                return len(await _parked(kafka_bootstrap, topic)) >= 3

            await _until(all_parked, "the three records parked")
        parked = {header(r, "dlq_offset"): r.headers for r in await _parked(kafka_bootstrap, topic)}
        dlq = ["dlq_reason", "dlq_service", "dlq_topic", "dlq_partition", "dlq_offset"]
        assert [k for k, _ in parked["0"]] == ["content-type", *dlq]
        assert parked["0"][0] == ("content-type", b"text/plain")
        assert [k for k, _ in parked["1"]] == dlq
        assert [k for k, _ in parked["2"]] == ["content-type", "ce_type", "ce_id", *dlq]
        assert dict(parked["2"])["content-type"] == CONTENT_TYPE.encode()
        assert dict(parked["2"])["ce_id"] == rejected.id.encode()
        for headers in parked.values():
            assert not [v for _, v in headers if PERSON.encode() in v]
