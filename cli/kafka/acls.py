"""Each service principal's Kafka rights: one table, rendered as the `kafka-acls.sh` commands
of docs/kafka.md and applied as they are to the test cluster (cli/kafka/cluster.py).

The topics are the ones the services' code uses: intake publishes leads.received (leads,
webinar attendance) and leads.lifecycle (lead.erased); the qualifier consumes leads.received
and leads.lifecycle and publishes leads.routed and leads.lifecycle; the KPI service
consumes the three lead topics (its rebuilds in groups of their own); the two consumers
park what they cannot apply on leads.deadletter. Every service describes the `leads.`
topics and their configs at start-up (replication check) but creates none: an admin does.
An idempotent producer needs no cluster right since Kafka 3.0 (KIP-679: Write on a topic
suffices); for an older cluster add `--operation IdempotentWrite --cluster`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.events import TOPIC_DEADLETTER, TOPIC_LIFECYCLE, TOPIC_RECEIVED, TOPIC_ROUTED

TOPIC_PREFIX = "leads."


@dataclass(frozen=True)
class Grant:
    """`principal` may do `operations` on the topic or group `name` (a prefix if `prefixed`)."""

    principal: str
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def command(self, bootstrap: str = "$KAFKA", config: str = "admin.properties") -> str:
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        ops = " ".join(f"--operation {op}" for op in self.operations)
        return (
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {config} --add "
            f"--allow-principal User:{self.principal} {ops} --{self.resource} {self.name}{pattern}"
        )


def _service(principal: str, group: str | None = None) -> list[Grant]:
    grants = [
        Grant(principal, "topic", TOPIC_PREFIX, ("Describe", "DescribeConfigs"), prefixed=True)
    ]
    if group:
        grants.append(Grant(principal, "group", group, ("Read",)))
    return grants


def service_grants(prefix: str = "leadflow-") -> list[Grant]:
    """Every service's rights; `prefix` + service name is its consumer group (the default
    LEADFLOW_<SVC>_CONSUMER_GROUP) and its principal is the service's name."""
    return [
        *_service("intake"),
        Grant("intake", "topic", TOPIC_RECEIVED, ("Write",)),
        Grant("intake", "topic", TOPIC_LIFECYCLE, ("Write",)),
        *_service("qualifier", f"{prefix}qualifier"),
        Grant("qualifier", "topic", TOPIC_RECEIVED, ("Read",)),
        Grant("qualifier", "topic", TOPIC_LIFECYCLE, ("Read", "Write")),
        Grant("qualifier", "topic", TOPIC_ROUTED, ("Write",)),
        Grant("qualifier", "topic", TOPIC_DEADLETTER, ("Write",)),
        *_service("kpi", f"{prefix}kpi"),
        Grant("kpi", "group", f"{prefix}kpi-rebuild-", ("Read",), prefixed=True),
        Grant("kpi", "topic", TOPIC_RECEIVED, ("Read",)),
        Grant("kpi", "topic", TOPIC_ROUTED, ("Read",)),
        Grant("kpi", "topic", TOPIC_LIFECYCLE, ("Read",)),
        Grant("kpi", "topic", TOPIC_DEADLETTER, ("Write",)),
    ]


# The Kafka protocol's codes (org.apache.kafka.common.acl / resource).
_RESOURCE = {"topic": 2, "group": 3}
_OPERATION = {"Read": 3, "Write": 4, "Describe": 8, "DescribeConfigs": 10}
_LITERAL, _PREFIXED, _ALLOW = 3, 4, 3


async def apply(admin: Any, grants: list[Grant]) -> None:
    """Create `grants` through a started AIOKafkaAdminClient of a super user (aiokafka has
    the request but no method for it)."""
    from aiokafka.protocol.admin import CreateAclsRequest

    for grant in grants:
        for operation in grant.operations:
            request = CreateAclsRequest(
                _RESOURCE[grant.resource],
                grant.name,
                _PREFIXED if grant.prefixed else _LITERAL,
                f"User:{grant.principal}",
                "*",
                _OPERATION[operation],
                _ALLOW,
            )
            response = await admin._send_request(request)
            for error_code, error_message in response.creation_responses:
                if error_code:
                    raise RuntimeError(
                        f"creating ACL {operation} on {grant.resource} {grant.name} failed: "
                        f"error {error_code} {error_message}"
                    )
