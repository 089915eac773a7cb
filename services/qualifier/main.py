"""The qualifier service's app factory (`uvicorn --factory services.qualifier.main:create_app`)."""

from __future__ import annotations

import functools
import logging
import os
from datetime import timedelta

from fastapi import FastAPI

from services.qualifier.config import QualifierSettings
from services.qualifier.consumer import make_handler
from services.qualifier.crm import api as crm_api
from services.qualifier.crm import connectors as crm_connectors
from services.qualifier.crm.clients import CrmClients
from services.qualifier.crm.pushes import CrmSender
from services.qualifier.crm.sync import CrmSync
from services.qualifier.definitions import api as definitions_api
from services.qualifier.definitions import service as definitions
from services.qualifier.deliveries import api as deliveries_api
from services.qualifier.deliveries.deliverer import Deliverer, Sender
from services.qualifier.leads import api as leads_api
from services.qualifier.lifecycle import api as lifecycle_api
from services.qualifier.partners import api as partners_api
from services.qualifier.partners.sender import PartnerSender
from services.qualifier.review import api as review_api
from services.qualifier.review import page as review_page
from services.qualifier.sla import api as sla_api
from services.qualifier.sla.watch import watch as sla_watch
from services.qualifier.subscriptions import api as subscriptions_api
from services.qualifier.subscriptions.sender import SubscriptionSender
from services.qualifier.suggest import api as suggest_api
from services.qualifier.tables import idempotency_keys, outbox
from shared.db import utcnow
from shared.delivery import BatchHandler
from shared.events import TOPIC_LIFECYCLE, TOPIC_RECEIVED
from shared.idempotency import purge_job
from shared.kafka import FetchPolicy
from shared.keys import HttpKeySource, KeySource
from shared.runtime import Runtime, create_service_app
from shared.settings import InsecureSettings

log = logging.getLogger(__name__)


def create_app(
    settings: QualifierSettings | None = None, *, keys: KeySource | None = None
) -> FastAPI:
    """`keys`: where leads' keys come from (a test's); by default intake's key endpoint."""
    settings = settings or QualifierSettings()
    key_source = keys or HttpKeySource(
        settings.keys_url, settings.key_token(), ttl=settings.keys_cache_seconds
    )
    senders: dict[str, Sender] = {
        "partner": PartnerSender(settings),
        # The engine is the runtime's, there once the app runs (the sender reads the
        # subscription's secrets at each attempt).
        "webhook": SubscriptionSender(settings, lambda: app.state.runtime.engine),
    }
    deliverer = Deliverer(settings, senders)
    crm_clients = CrmClients()
    crm_sync = CrmSync(settings, crm_clients)
    # check_secure() refuses the fault outside dev mode; this makes sure it stays inert there.
    kill_after = settings.fault_kill_after_commit if settings.common.dev else None

    def handler(rt: Runtime) -> BatchHandler:
        return make_handler(rt, after_commit=deliverer.wake, kill_after_commit=kill_after)

    def runtime() -> Runtime:
        rt = Runtime(
            settings,
            outbox=outbox,
            consume=(TOPIC_RECEIVED, TOPIC_LIFECYCLE),
            handler=handler,
            relay_batch_size=settings.relay_batch_size,
            relay_poll_seconds=settings.relay_poll_seconds,
            consumer_max_records=settings.consumer_max_records,
            consumer_fetch=FetchPolicy(
                max_partition_bytes=settings.consumer_fetch_max_partition_bytes
            ),
            # It reads the person of received leads (to decide) and seals what it publishes.
            keys=lambda _: key_source,
            keyed_types=("lead.received", "lead.webinar_attended"),
            background=[
                ("SLA watch", functools.partial(sla_watch, interval=settings.sla_check_seconds)),
                ("deliveries", deliverer.run),
                ("CRM sync", crm_sync.run),
                (
                    "idempotency keys",
                    purge_job(
                        idempotency_keys,
                        ttl=timedelta(hours=settings.idempotency_ttl_hours),
                        every=3600.0,
                    ),
                ),
            ],
        )
        # A request's commit may owe deliveries (a brief routing to a partner, a retried
        # delivery, an event a webhook subscription wants): the unit of work wakes the
        # deliverer with the relay.
        rt.wake_after_commit.append(deliverer.wake)
        return rt

    initial_definition = settings.initial_definition.read_text(encoding="utf-8")

    async def start(rt: Runtime) -> None:
        async with rt.engine.begin() as conn:
            await definitions.ensure_initial_definition(conn, initial_definition, utcnow())
            _, definition = await definitions.active(conn)
            crm_without_secrets = await crm_connectors.without_secrets(conn, os.environ)
        if crm_without_secrets:
            if not settings.common.dev:
                await rt.engine.dispose()
                raise InsecureSettings(
                    f"CRM connectors lack their secrets: {'; '.join(crm_without_secrets)}"
                )
            log.warning("DEV mode: CRM connectors lack secrets: %s", crm_without_secrets)
        unsigned = [
            definition.partners[i].id
            for i in definitions.partners_without_secret(definition, set(settings.partner_secrets))
        ]
        if unsigned and not settings.common.dev:
            await rt.engine.dispose()
            raise InsecureSettings(
                f"partners {unsigned} have webhooks but no secret in "
                "LEADFLOW_QUALIFIER_PARTNER_SECRETS; production refuses to deliver leads unsigned"
            )
        if unsigned:
            log.warning(
                "DEV mode: webhooks of partners %s are signed with the dev secret %r",
                unsigned,
                "dev",
            )
        if kill_after is not None:
            log.warning(
                "DEV fault injection: SIGKILL after the database commit of consumer batch %d",
                kill_after,
            )

    app = create_service_app(
        settings=settings,
        runtime_factory=runtime,
        title="Leadflow qualifier",
        description="Applies the versioned lead definition, routes each lead, and closes the "
        "loop with sales feedback.",
        routers=[
            leads_api.router,
            lifecycle_api.router,
            sla_api.router,
            definitions_api.router,
            suggest_api.router,
            partners_api.router,
            deliveries_api.router,
            subscriptions_api.router,
            crm_api.router,
            review_api.router,
            review_page.router,
        ],
        on_startup=start,
    )
    app.state.deliverer = deliverer
    app.state.crm_sync = crm_sync
    deliverer.register("crm", CrmSender(lambda: app.state.runtime.engine, crm_clients))
    # A 503 after a COMMIT of unknown outcome says what a retry without a key does here.
    app.state.retry_without_key = (
        "Without a key, a retry may record the call a second time: a contact counts as a "
        "further contact, a payment without a payment_id counts twice (a feedback or stage "
        "the lead already has changes nothing)."
    )
    return app
