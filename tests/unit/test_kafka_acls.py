"""The ACL table is what docs/kafka.md documents, command for command, and each service
gets the rights its code needs and no more."""

from __future__ import annotations

from pathlib import Path

from cli.kafka.acls import service_grants
from shared.events import TOPIC_DEADLETTER, TOPIC_LIFECYCLE, TOPIC_RECEIVED, TOPIC_ROUTED

DOC = Path(__file__).resolve().parents[2] / "docs" / "kafka.md"


def test_docs_list_every_command() -> None:
    documented = [line for line in DOC.read_text().splitlines() if "kafka-acls.sh" in line]
    assert documented == [g.command() for g in service_grants()]


def _rights(principal: str, operation: str) -> set[str]:
    return {
        g.name
        for g in service_grants()
        if g.principal == principal and g.resource == "topic" and operation in g.operations
    }


def test_each_service_writes_and_reads_only_its_topics() -> None:
    assert _rights("intake", "Write") == {TOPIC_RECEIVED, TOPIC_LIFECYCLE}
    assert _rights("intake", "Read") == set()
    assert _rights("qualifier", "Read") == {TOPIC_RECEIVED, TOPIC_LIFECYCLE}
    assert _rights("qualifier", "Write") == {TOPIC_ROUTED, TOPIC_LIFECYCLE, TOPIC_DEADLETTER}
    assert _rights("kpi", "Read") == {TOPIC_RECEIVED, TOPIC_ROUTED, TOPIC_LIFECYCLE}
    assert _rights("kpi", "Write") == {TOPIC_DEADLETTER}
