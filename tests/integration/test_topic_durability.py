"""Start-up checks the replication of existing topics on the real broker (one node: a
replication factor of 1) instead of using them silently."""

from __future__ import annotations

import logging
import uuid

import pytest

from shared.kafka_security import Durability
from shared.topics import TopicsUnderReplicated, describe_durability, ensure_topics, start_admin

pytestmark = pytest.mark.kafka


async def test_created_with_the_settings_and_described(kafka_bootstrap: str) -> None:
    topic = f"test-durability-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, 2, topics=[topic], durability=Durability(1, 1))
    admin = await start_admin(kafka_bootstrap)
    try:
        (found,) = await describe_durability(admin, [topic])
    finally:
        await admin.close()
    assert (found.replication_factor, found.min_insync_replicas) == (1, 1)


async def test_existing_topics_below_the_setting(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"test-durability-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, 1, topics=[topic])
    wanted = Durability(replication_factor=3, min_insync_replicas=2, strict=True)
    # Production: refused, saying which topic falls short of what.
    with pytest.raises(TopicsUnderReplicated) as err:
        await ensure_topics(kafka_bootstrap, 1, topics=[topic], durability=wanted)
    said = str(err.value)
    assert f"{topic}: replication factor 1 < 3, min.insync.replicas 1 < 2" in said
    assert "LEADFLOW_KAFKA_REPLICATION_FACTOR=3" in said
    # Dev: said as a warning, and the topic is used.
    with caplog.at_level(logging.WARNING, logger="shared.topics"):
        await ensure_topics(
            kafka_bootstrap, 1, topics=[topic], durability=Durability(3, 2, strict=False)
        )
    assert f"{topic}: replication factor 1 < 3" in caplog.text
    assert "dev mode: used anyway" in caplog.text
