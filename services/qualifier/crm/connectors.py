"""Connector configurations: checked on save, stored, read back. The checks name the field
(`stages[2].to: ...`) and, for YAML, the line; production also refuses a connector whose
secrets are not set in the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.crm import repository, secrets
from services.qualifier.crm.config import (
    Bitrix24Connector,
    Connector,
    HubSpotConnector,
    KommoConnector,
)
from services.qualifier.crm.secrets import AnyConnector
from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.definitions.source import (
    DefinitionInvalid,
    Problem,
    parse_document,
    validation_problems,
)
from shared.db import AnyRow
from shared.events import Stage

_CONNECTOR: TypeAdapter[AnyConnector] = TypeAdapter(Connector)
# By kind, so a problem's location is the field's own (`stages[1].to`).
_MODELS: dict[str, type[AnyConnector]] = {
    "bitrix24": Bitrix24Connector,
    "kommo": KommoConnector,
    "hubspot": HubSpotConnector,
}


class ConnectorInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.detail()["msg"] for p in problems))


class ConnectorNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Saved:
    connector: AnyConnector
    created: bool
    # What is allowed but probably a mistake (a member the definition does not have).
    warnings: list[str]


def parse(text: str, connector_id: str) -> AnyConnector:
    """A configuration as written (YAML or JSON); its `id`, if given, must be the URL's."""
    if not text.strip():
        raise ConnectorInvalid([Problem((), "the configuration is empty", "missing")])
    try:
        root, raw = parse_document(text)
    except DefinitionInvalid as exc:
        raise ConnectorInvalid(exc.problems) from None
    if not isinstance(raw, dict):
        raise ConnectorInvalid(
            [Problem((), "a connector is a mapping (a YAML or JSON object)", "type_error")]
        )
    given = raw.setdefault("id", connector_id)
    if given != connector_id:
        raise ConnectorInvalid(
            [Problem(("id",), f"is {given!r} but the URL names {connector_id!r}", "value_error")]
        )
    model = _MODELS.get(raw.get("kind"))  # type: ignore[arg-type]
    if model is None:
        kinds = ", ".join(_MODELS)
        raise ConnectorInvalid([Problem(("kind",), f"is one of {kinds}", "value_error")])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConnectorInvalid(validation_problems(exc, root)) from None


def check_secrets(connector: AnyConnector, *, production: bool, environ: Mapping[str, str]) -> None:
    if not production:
        return
    absent = secrets.missing(connector, environ)
    if absent:
        raise ConnectorInvalid(
            [
                Problem(
                    ("credentials",),
                    f"not set in the environment: {', '.join(absent)}; production refuses a "
                    "connector without its secrets",
                    "missing_secret",
                )
            ]
        )


def warnings_for(connector: AnyConnector, definition: LeadDefinition) -> list[str]:
    members = {m for team in definition.sales_teams for m in team.members}
    unknown = sorted(set(connector.members) - members)
    unmapped = sorted(members - set(connector.members))
    found = []
    if unknown:
        found.append(f"members {unknown} are not in the active definition's sales teams")
    if unmapped and connector.default_owner is None:
        found.append(
            f"sales members {unmapped} have no CRM user and there is no default_owner: "
            "their leads are created unassigned"
        )
    if not connector.stages:
        found.append("no stage mapping: only the CRM's won and lost stages come back")
    elif not any(rule.to is Stage.routed for rule in connector.stages):
        found.append(
            "no CRM stage maps to routed: the stage new records start in will show as "
            "skipped on the status until a salesperson moves them"
        )
    return found


async def save(
    conn: AsyncConnection,
    connector: AnyConnector,
    *,
    source_text: str,
    by: str | None,
    now: datetime,
    definition: LeadDefinition,
) -> Saved:
    created = await repository.save_connector(
        conn,
        connector_id=connector.id,
        kind=connector.kind,
        document=connector.model_dump(mode="json"),
        source_text=source_text,
        by=by,
        now=now,
    )
    return Saved(connector, created, warnings_for(connector, definition))


def from_row(row: AnyRow) -> AnyConnector:
    return _CONNECTOR.validate_python(row.document)


async def load(conn: AsyncConnection, connector_id: str) -> tuple[AnyRow, AnyConnector]:
    row = await repository.connector(conn, connector_id)
    if row is None:
        raise ConnectorNotFound(f"no CRM connector {connector_id!r}")
    return row, from_row(row)


async def load_all(conn: AsyncConnection) -> list[AnyConnector]:
    return [from_row(row) for row in await repository.connectors(conn)]


def as_document(connector: AnyConnector) -> dict[str, Any]:
    return connector.model_dump(mode="json")


async def without_secrets(conn: AsyncConnection, environ: Mapping[str, str]) -> list[str]:
    """Enabled connectors whose secret variables are unset here, each with what is missing
    (production refuses to start with any: it could check no notification)."""
    return [
        f"{c.id}: {', '.join(secrets.missing(c, environ))}"
        for c in await load_all(conn)
        if c.enabled and secrets.missing(c, environ)
    ]
