"""What a service process owns (engine, producer, outbox relay, consumer) and its app factory.

The lifespan starts these together and stops them together. Kafka being down at
start-up does not stop a service from starting: the relay and consumer keep
retrying in the background while the API answers (intake keeps storing leads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.auth import Authenticator
from shared.consumer import EventConsumer
from shared.consumer_liveness import ConsumerLiveness
from shared.db import create_engine, error_kind, ping
from shared.delivery import BatchHandler
from shared.held_connection import HeldConnection
from shared.kafka import (
    FetchPolicy,
    ProducerHolder,
    ensure_topics,
    kafka_reachable,
    make_consumer,
    make_producer,
)
from shared.keys import KeySource
from shared.observability import configure_logging, instrument
from shared.outbox import OutboxRelay
from shared.settings import DEV_TOKEN, ServiceSettings
from shared.topics import TopicsUnderReplicated
from shared.web import (
    BodyLimits,
    BodySizeLimit,
    SecurityHeaders,
    health_router,
    install_error_handlers,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a batch
R = TypeVar("R")

# FastAPI's OpenTelemetry instrumentation, off unless LEADFLOW_OPENTELEMETRY is set.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

# Writes a batch's items; returns one result per item, in order. An item may fail alone
# only if it wrote nothing: its result is then the exception to raise to its caller.
WriteBatch = Callable[[AsyncConnection, Sequence[I]], Awaitable[Sequence[R | Exception]]]


class WriteStrategy(Protocol):
    """How a service commits its requests' writes when one transaction each is not it
    (intake's group commit: `services.intake.hot_path.group_commit`). Each call returns
    once its work is committed, and the strategy wakes the relay after each commit."""

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def run_batched(self, handler: WriteBatch[I, R], item: I) -> R: ...

    async def close(self) -> None: ...


class Runtime:
    """The resources of one service process."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        outbox: sa.Table | None = None,
        consume: Sequence[str] = (),
        handler: Callable[[Runtime], BatchHandler] | None = None,
        relay_batch_size: int = 500,
        relay_poll_seconds: float = 1.0,
        consumer_max_records: int = 500,
        consumer_in_flight: int = 1,
        consumer_fetch: FetchPolicy = FetchPolicy(),
        background: Sequence[tuple[str, Callable[[Runtime], Awaitable[None]]]] = (),
        write_strategy: Callable[[Runtime], WriteStrategy] | None = None,
        keys: Callable[[Runtime], KeySource] | None = None,
        keyed_types: Sequence[str] = (),
    ) -> None:
        """`keys`: where leads' keys come from, to seal what the relay publishes and to open
        what the consumer reads of `keyed_types` (shared.keys); without it personal fields
        are left out of both."""
        self.settings = settings
        self.name = settings.service_name
        self.engine: AsyncEngine = create_engine(settings.db_url)
        self.keys = keys(self) if keys is not None else None
        common = settings.common
        # The relay and the consumer (its dead-letter topic) take the holder's current
        # producer for each send: after a fatal error it is a new one.
        self.producers = ProducerHolder(
            functools.partial(make_producer, common.kafka(), f"leadflow-{self.name}"),
            service=self.name,
        )
        self.relay = (
            OutboxRelay(
                service=self.name,
                engine=self.engine,
                table=outbox,
                producer=self.producers,
                batch_size=relay_batch_size,
                poll_interval=relay_poll_seconds,
                keys=self.keys,
            )
            if outbox is not None
            else None
        )
        self.consumer = (
            EventConsumer(
                service=self.name,
                # A new Kafka consumer for each run of the loop (see EventConsumer.run).
                consumer_factory=functools.partial(
                    make_consumer,
                    common.kafka(),
                    group_id=settings.group_id,
                    topics=tuple(consume),
                    client_id=f"leadflow-{self.name}",
                    fetch=consumer_fetch,
                ),
                producer=self.producers,
                handle_batch=handler(self),
                max_records=consumer_max_records,
                in_flight=consumer_in_flight,
                top_up_wait_ms=consumer_fetch.top_up_wait_ms,
                batch_timeout=common.consumer_batch_timeout_seconds,
                healthy=self.database_ready,
                keys=self.keys,
                keyed_types=keyed_types,
            )
            if consume and handler is not None
            else None
        )
        # How `write` and `write_batched` commit, when not one transaction each (intake's
        # requests share commits under load).
        self.write_strategy = write_strategy(self) if write_strategy is not None else None
        # The connection a consumer's handler may keep for its batch transactions.
        self.consumer_db = HeldConnection(self.engine)
        # Service-specific loops (named), supervised like the relay and the consumer.
        self._background = list(background)
        self._tasks: list[asyncio.Task[None]] = []
        self.producer_started = asyncio.Event()
        # Set when the process shuts down; background jobs return when they see it.
        self.stopping = asyncio.Event()
        # What else a request's commit may have given work to (the qualifier's deliverer).
        self.wake_after_commit: list[Callable[[], None]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        """The service's Kafka producer at the moment (see `producers`)."""
        return self.producers.current

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    def committed(self) -> None:
        """A request's transaction committed (shared.unit_of_work): wake what publishes it."""
        self.wake_relay()
        for wake in self.wake_after_commit:
            wake()

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run a request's unit of work in a transaction; return once it is committed.

        With a write strategy (group commit), concurrent units share one transaction (each
        in a savepoint); either way the outbox relay (and, without a write strategy, the
        `wake_after_commit` hooks) is woken after the commit.
        """
        if self.write_strategy is not None:
            return await self.write_strategy.run(work)
        async with self.engine.begin() as conn:
            result = await work(conn)
        self.committed()
        return result

    async def write_batched(self, handler: WriteBatch[I, R], item: I) -> R:
        """Have `handler` write `item` in a transaction, with the items other requests
        queued for it by a write strategy (group commit); return the item's result once
        committed."""
        if self.write_strategy is not None:
            return await self.write_strategy.run_batched(handler, item)
        async with self.engine.begin() as conn:
            (result,) = await handler(conn, [item])
            if isinstance(result, Exception):
                raise result
        self.wake_relay()
        return result

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._kafka_side(), name=f"{self.name}-kafka"))
        for name, job in self._background:
            run = functools.partial(job, self)
            self._tasks.append(
                asyncio.create_task(_supervised(f"{self.name} {name}", run), name=name)
            )

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let the loops finish what they are doing, then cancel what is left; never hang."""
        self.stopping.set()
        for loop in (self.relay, self.consumer):
            if loop is not None:
                loop.request_stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace_seconds)
        self._tasks.clear()
        if self.write_strategy is not None:
            await _bounded("finishing group commits", self.write_strategy.close(), grace_seconds)
        if self.producer_started.is_set():
            await _bounded("stopping the Kafka producer", self.producers.stop(), grace_seconds)
        await _bounded("closing the consumer's connection", self.consumer_db.close(), grace_seconds)
        await _bounded("closing the database pool", self.engine.dispose(), grace_seconds)

    async def _kafka_side(self) -> None:
        common = self.settings.common
        backoff = 0.5
        while True:
            try:
                await ensure_topics(
                    common.kafka(), common.topic_partitions, durability=common.durability()
                )
                await self.producers.ready()
                break
            except TopicsUnderReplicated as exc:
                # Production: no event goes to topics that could lose it; /readyz says
                # Kafka is not ready until an operator raises their replication.
                log.error("%s: %s; checking again in 30s", self.name, exc)
                if await self.sleep_unless_stopping(30.0):
                    return
            except (KafkaError, OSError) as exc:
                log.warning("%s: Kafka not reachable yet (%s); retrying", self.name, exc)
                if await self.sleep_unless_stopping(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
        self.producer_started.set()
        jobs: list[Coroutine[Any, Any, None]] = []
        if self.relay is not None:
            jobs.append(_supervised(f"{self.name} relay", self.relay.run))
        if self.consumer is not None:
            jobs.append(_supervised(f"{self.name} consumer", self.consumer.run))
        await asyncio.gather(*jobs)

    async def sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True (at once) when the process is shutting down."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return self.stopping.is_set()

    async def database_ready(self) -> bool:
        await ping(self.engine)
        return True

    async def kafka_ready(self) -> bool:
        return self.producer_started.is_set() and await kafka_reachable(self.producer)

    def consumers(self) -> list[ConsumerLiveness]:
        return [self.consumer.liveness()] if self.consumer is not None else []


async def _bounded(what: str, step: Awaitable[None], seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.error("%s took over %.0fs; going on with shut-down", what, seconds)
    except Exception as exc:
        log.error("%s failed (%s); going on with shut-down", what, error_kind(exc))


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Restart a background loop that died of something unexpected, instead of going silent.

    The log names the failure by type and says where it was raised, without its message:
    a database error's text quotes its statement's parameters (a person's e-mail).
    """
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            where = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            log.error("%s crashed (%s); restarting in 1s\n%s", name, error_kind(exc), where)
            await asyncio.sleep(1.0)


class _Freeze:
    after_start = False


_freeze = _Freeze()


def freeze_after_start() -> None:
    """For a process that serves one app until it exits (`leadflow serve`): once started,
    the objects built so far are frozen (gc.freeze). Not for tests, which start many apps
    in one process: frozen garbage is never collected."""
    _freeze.after_start = True


def create_service_app(
    *,
    settings: ServiceSettings,
    runtime_factory: Callable[[], Runtime],
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    body_limits: dict[str, int] | None = None,
    default_body_limit: int = 1024 * 1024,
    on_startup: Callable[[Runtime], Awaitable[None]] | None = None,
    app_class: type[FastAPI] = FastAPI,
    gc_thresholds: tuple[int, int, int] | None = None,
) -> FastAPI:
    """The FastAPI app of one service: auth, health, metrics, errors, lifespan. `app_class`:
    a FastAPI subclass to build (intake's, with a front for its hottest request); the body
    limits are in `app.state.body_limits` for it. `gc_thresholds`: the collector's
    (`gc.set_threshold`), set with the freeze after start (`freeze_after_start`)."""
    settings.check_secure()
    common = settings.common
    configure_logging(settings.service_name, common.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = runtime_factory()
        app.state.runtime = runtime
        if common.dev:
            log.warning(
                "%s runs in DEV mode: the bearer token %r holds every scope. "
                "Set LEADFLOW_MODE=production with LEADFLOW_AUTH_TOKENS for real use.",
                settings.service_name,
                DEV_TOKEN,
            )
        if on_startup is not None:
            await on_startup(runtime)
        await runtime.start()
        if _freeze.after_start:
            # What start-up built (modules, routes, schemas, the runtime) lives as long as the
            # process: kept out of the collector's full passes, each of which would otherwise
            # walk it all and pause the event loop for tens of milliseconds.
            gc.collect()
            gc.freeze()
            if gc_thresholds is not None:
                gc.set_threshold(*gc_thresholds)
        try:
            yield
        finally:
            await runtime.stop()

    app = app_class(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        docs_url="/docs" if common.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if common.docs_enabled else None,
        telemetry=None if common.opentelemetry else _NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.authenticator = Authenticator(common.tokens())

    async def database_ready() -> bool:
        return await app.state.runtime.database_ready()

    async def kafka_ready() -> bool:
        return await app.state.runtime.kafka_ready()

    def consumers() -> list[ConsumerLiveness]:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        return runtime.consumers() if runtime is not None else []

    app.include_router(
        health_router(
            {"database": database_ready, "kafka": kafka_ready},
            consumers=consumers,
            stall_seconds=common.consumer_stall_seconds,
        )
    )
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    instrument(app, settings.service_name)
    app.add_middleware(SecurityHeaders)
    if common.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(common.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    limits = BodyLimits(body_limits or {}, default_body_limit)
    app.add_middleware(BodySizeLimit, limits=limits)
    app.state.body_limits = limits
    return app
