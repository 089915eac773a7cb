"""Rebuild: fold the topics again from offset 0 into a new generation, then switch to it.

How it stays exact without stopping the live consumer:

1. `start` commits a new generation with status `building`. From then on every live
   batch (whose transaction starts after that commit) folds into the active generation
   and into the one being built.
2. The runner then observes the end offsets of every partition of the lead topics (the
   *targets*). Every event at or past a target reaches Kafka after step 1, so the live
   consumer folds it into the new generation; every event before a target is read by the
   runner from offset 0. An event both fold is merged twice, which changes nothing (the
   fold is idempotent), so the new generation gets every event exactly once in effect.
3. The runner reads with its own consumer group (`<group>-rebuild-<generation>`; Kafka
   spreads the partitions over the replicas) and writes, in each batch's transaction,
   how far each partition is folded. It never commits offsets to Kafka: the database
   is the record, so a restarted process resumes exactly where the last commit left off.
4. Once every partition is folded up to its target, one transaction makes the new
   generation active and retires the old one; reads switch at once. A background job
   deletes a retired generation's rows after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.config import KpiSettings
from services.kpi.fold import apply
from services.kpi.fold.consumer import in_transaction
from services.kpi.fold.window import FoldWindow
from services.kpi.store import generations, writes
from shared.crypto import open_event
from shared.db import error_summary, utcnow
from shared.delivery import is_transient
from shared.events import LEAD_TOPICS, Event, UndecodableEvent
from shared.kafka_security import Kafka, client_kwargs
from shared.runtime import Runtime
from shared.wakeup import nap

log = logging.getLogger(__name__)

REBUILD_EVENTS = Counter(
    "leadflow_kpi_rebuild_events_total", "Events a rebuild read from the topics", ["outcome"]
)
ACTIVE_GENERATION = Gauge("leadflow_kpi_active_generation", "The generation answering reads")

Targets = dict[str, dict[str, int]]

# Records decoded and merged into a window at a time.
DECODE_CHUNK = 250


class RebuildRunning(Exception):
    def __init__(self, generation: int) -> None:
        super().__init__(f"generation {generation} is being rebuilt")
        self.generation = generation


async def start(conn: AsyncConnection, requested_by: str) -> int:
    """Create the generation to build (in the caller's transaction)."""
    running = await generations.building_generation(conn)
    if running is not None:
        raise RebuildRunning(running.generation)
    return await generations.create_generation(
        conn, fold_version=apply.FOLD_VERSION, requested_by=requested_by, now=utcnow()
    )


def caught_up(targets: Targets | None, progress: Mapping[str, Mapping[str, int]]) -> bool:
    if not targets or not all(targets.get(topic) for topic in LEAD_TOPICS):
        return False
    return all(
        progress.get(topic, {}).get(partition, 0) >= end
        for topic, ends in targets.items()
        for partition, end in ends.items()
    )


class TopicsNotReady(KafkaError):
    """A lead topic has no partitions yet: targets observed now would say "caught up" at once."""


async def _partitions(kafka: Kafka) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(list(LEAD_TOPICS))
    finally:
        await admin.close()
    found = [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if not d.get("error_code")
        for p in d.get("partitions", [])
    ]
    missing = set(LEAD_TOPICS) - {tp.topic for tp in found}
    if missing:
        raise TopicsNotReady(f"no partitions for {sorted(missing)}")
    return found


async def observe_targets(kafka: Kafka) -> Targets:
    """The end offset of every partition of the lead topics, now."""
    partitions = await _partitions(kafka)
    probe = AIOKafkaConsumer(
        **client_kwargs(kafka),
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="leadflow-kpi-rebuild-probe",
    )
    await probe.start()
    try:
        ends = await probe.end_offsets(partitions)
    finally:
        await probe.stop()
    targets: Targets = {topic: {} for topic in LEAD_TOPICS}
    for tp, end in ends.items():
        targets[tp.topic][str(tp.partition)] = int(end)
    return targets


class _ResumeFromProgress(ConsumerRebalanceListener):
    """On assignment, continue each partition where the database says it was folded to."""

    def __init__(self, runner: Rebuilder, consumer: AIOKafkaConsumer, generation: int) -> None:
        self._runner = runner
        self._consumer = consumer
        self._generation = generation

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._runner.runtime.engine.connect() as conn:
            done = await generations.progress(conn, self._generation)
        for tp in assigned:
            offset = done.get(tp.topic, {}).get(str(tp.partition))
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)


class Rebuilder:
    """The rebuild job of one KPI process (every replica runs one; Kafka shares the work)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        assert isinstance(settings, KpiSettings)
        self.settings = settings
        self._wake = asyncio.Event()
        self._staged = 0  # fact deltas staged since the last compaction (this process)
        self._compacting: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Background job: build whatever generation is being built, until shut-down."""
        runtime = self.runtime
        while not runtime.stopping.is_set():
            self._wake.clear()
            async with runtime.engine.connect() as conn:
                building = await generations.building_generation(conn)
            if building is not None:
                try:
                    await self.build(building.generation)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # Kafka or the database away: resume from the recorded progress later.
                    log.warning(
                        "rebuild of generation %d: %s; resuming",
                        building.generation,
                        error_summary(exc),
                    )
                    await runtime.sleep_unless_stopping(2.0)
                continue
            await self._idle(self.settings.rebuild_poll_seconds)

    async def _idle(self, seconds: float) -> None:
        """Until woken (a rebuild was asked for here), shut-down, or `seconds` have passed."""
        await nap(self._wake, self.runtime.stopping, seconds)

    async def _targets(self, generation: int) -> Targets | None:
        async with self.runtime.engine.connect() as conn:
            found = await generations.get_generation(conn, generation)
        if found is None or found.status != generations.BUILDING:
            return None
        if found.targets is not None:
            return found.targets
        # Observed only now, after the building generation was committed (see step 2).
        observed = await observe_targets(self.settings.common.kafka())
        async with self.runtime.engine.begin() as conn:
            await generations.set_targets(conn, generation, observed)
            again = await generations.get_generation(conn, generation)
        return None if again is None else again.targets

    async def build(self, generation: int) -> None:
        targets = await self._targets(generation)
        if targets is None:
            return
        log.info("rebuilding KPI generation %d from the start of the topics", generation)
        common = self.settings.common
        consumer = AIOKafkaConsumer(
            **common.kafka().client_kwargs(),
            group_id=f"{self.settings.group_id}-rebuild-{generation}",
            client_id=f"leadflow-kpi-rebuild-{generation}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.settings.rebuild_max_records,
            # aiokafka buffers a fetch per partition (1 MB each by default, 18 partitions):
            # a quarter of it rebuilt at the same rate, peaking at 169-172 MB against 198.
            max_partition_fetch_bytes=256 * 1024,
            session_timeout_ms=10000,
            heartbeat_interval_ms=2000,
        )
        consumer.subscribe(
            list(LEAD_TOPICS), listener=_ResumeFromProgress(self, consumer, generation)
        )
        await consumer.start()
        # A window is read and folded in memory while the one before it is written; the
        # writes themselves take turns, so progress is recorded in order.
        writing: asyncio.Task[bool] | None = None
        try:
            while not self.runtime.stopping.is_set():
                window, positions = await self._read_window(consumer)
                if writing is not None and not await writing:
                    return  # cancelled, or switched by another replica
                writing = asyncio.create_task(self._write(generation, window, positions))
                if window.events < self.settings.rebuild_window_events:
                    # The topics had nothing more at once: perhaps caught up.
                    done, writing = writing, None
                    if not await done:
                        return
                    if await self._switch_if_caught_up(generation, targets):
                        return
            if writing is not None:
                await writing
        finally:
            for task in (writing, self._compacting):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            await consumer.stop()

    def _fold_in(self, window: FoldWindow, batches: Mapping[TopicPartition, list[object]]) -> None:
        # A decoded event is several kilobytes: a read's 2,000 at once were the KPI's
        # largest allocation during a rebuild (bench.mem_peak kpi), so a few hundred at a time.
        for records in batches.values():
            for start in range(0, len(records), DECODE_CHUNK):
                window.add(self._decode(records[start : start + DECODE_CHUNK]))

    def _decode(self, records: Sequence[object]) -> list[Event]:
        # What the live consumer parks (not an event; another currency) is skipped here, so
        # a rebuild counts exactly what the live fold counts.
        events: list[Event] = []
        skipped = 0
        for record in records:
            try:
                # Keyless: the fold reads no personal field, sealed ones are left out.
                event = open_event(getattr(record, "value", None) or b"", {})
            except UndecodableEvent:
                skipped += 1
                continue
            if not apply.foldable(event, self.settings.currency):
                skipped += 1
                continue
            events.append(event)
        # Counted per chunk, not per event: a labelled child's look-up costs a few percent.
        REBUILD_EVENTS.labels("skipped").inc(skipped)
        REBUILD_EVENTS.labels("folded").inc(len(events))
        return events

    async def _read_window(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[FoldWindow, dict[tuple[str, int], int]]:
        """Up to `rebuild_window_events` events folded in memory (fold/window.py), and
        the position of each partition after them. The window ends early when the topics
        have nothing more to give at once."""
        settings = self.settings
        window = FoldWindow()
        wait_ms = 500  # the first read waits for records; later ones end the window
        while window.events < settings.rebuild_window_events:
            batches = await consumer.getmany(
                timeout_ms=wait_ms, max_records=settings.rebuild_max_records
            )
            self._fold_in(window, batches)
            if not batches or self.runtime.stopping.is_set():
                break
            wait_ms = 50
        positions = {
            (tp.topic, tp.partition): await consumer.position(tp) for tp in consumer.assignment()
        }
        return window, positions

    async def _write(
        self,
        generation: int,
        window: FoldWindow,
        positions: Mapping[tuple[str, int], int],
    ) -> bool:
        """Write a window, its leads split over `fold_parallelism` concurrent transactions,
        then how far each partition is folded; False once the generation is no longer
        being built. Should a part fail after another committed, the progress is not
        recorded and the window is folded again later, which changes nothing (merges are
        idempotent)."""

        async def part(piece: FoldWindow) -> int | None:
            async def work(conn: AsyncConnection) -> int | None:
                fold_version = await generations.lock_if_building(conn, generation)
                if fold_version is None:
                    return None
                return await piece.write(conn, generation, fold_version, stage=True)

            return await in_transaction(self.runtime.engine, work)

        staged = await asyncio.gather(
            *(part(piece) for piece in window.split(self.settings.fold_parallelism))
        )
        if any(n is None for n in staged):
            return False

        async def progress(conn: AsyncConnection) -> bool:
            if await generations.lock_if_building(conn, generation) is None:
                return False
            await generations.save_progress(conn, generation, positions)
            return True

        if not await in_transaction(self.runtime.engine, progress):
            return False
        self._staged += sum(n or 0 for n in staged)
        if self._staged >= self.settings.rebuild_compact_deltas and self._compacting is None:
            # Beside the next windows (they only append deltas): the staged rows, and the
            # switch's share of the work, stay bounded.
            self._staged = 0
            self._compacting = asyncio.create_task(self._compact(generation))
        return True

    async def _compact(self, generation: int) -> None:
        try:
            async with self.runtime.engine.begin() as conn:
                await writes.compact_fact_deltas(conn, generation)
        finally:
            self._compacting = None

    async def _switch_if_caught_up(self, generation: int, targets: Targets) -> bool:
        if self._compacting is not None:
            await self._compacting
        async with self.runtime.engine.connect() as conn:
            done = await generations.progress(conn, generation)
        if not caught_up(targets, done):
            return False
        async with self.runtime.engine.begin() as conn:
            # The staged deltas are added under the switch's locks: no window of another
            # replica's can stage more before the generation answers reads.
            switched = await generations.lock_for_switch(conn, generation)
            if switched:
                await writes.compact_fact_deltas(conn, generation)
                await generations.switch_to(conn, generation, utcnow())
        if switched:
            ACTIVE_GENERATION.set(generation)
            log.info("KPI generation %d is caught up and now answers reads", generation)
        return True


async def purge_retired(runtime: Runtime) -> None:
    """Background job: delete the rows of retired and cancelled generations after a grace."""
    settings = runtime.settings
    assert isinstance(settings, KpiSettings)
    while not runtime.stopping.is_set():
        now = utcnow()
        try:
            async with runtime.engine.connect() as conn:
                due = await generations.generations_to_purge(
                    conn, now - timedelta(seconds=settings.retired_grace_seconds)
                )
            for generation in due:
                async with runtime.engine.begin() as conn:
                    await generations.purge(conn, generation, now)
                log.info("deleted the rows of retired KPI generation %d", generation)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "purging retired KPI generations: %s; trying again later", error_summary(exc)
            )
        if await runtime.sleep_unless_stopping(max(1.0, min(30.0, settings.retired_grace_seconds))):
            return


_STATUS = {
    generations.BUILDING: "running",
    generations.ACTIVE: "done",
    generations.RETIRED: "done",
    generations.CANCELLED: "cancelled",
}


async def describe(conn: AsyncConnection, generation: int) -> dict[str, object] | None:
    """A rebuild's status: what `GET /v1/admin/rebuilds/{id}` answers."""
    found = await generations.get_generation(conn, generation)
    if found is None:
        return None
    done = await generations.progress(conn, generation)
    targets = found.targets
    total = completed = None
    if targets is not None:
        total = sum(end for ends in targets.values() for end in ends.values())
        completed = sum(
            min(done.get(topic, {}).get(partition, 0), end)
            for topic, ends in targets.items()
            for partition, end in ends.items()
        )
    return {
        "rebuild_id": found.generation,
        "generation": found.generation,
        "status": _STATUS[found.status],
        "generation_status": found.status,
        "requested_by": found.requested_by,
        "started_at": found.created_at,
        "finished_at": found.activated_at or found.retired_at,
        "caught_up": found.status in (generations.ACTIVE, generations.RETIRED)
        or caught_up(targets, done),
        "offsets_total": total,
        "offsets_done": completed,
        "targets": targets,
        "progress": done,
        "status_url": f"/v1/admin/rebuilds/{found.generation}",
    }
