"""A connector's secrets, read from the environment variables its configuration names.

Only the names are stored; values are read when needed and never logged or answered.
Dev mode lets a connector run without them (its calls then fail and are parked, visibly);
production refuses to save or start one that lacks any.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.qualifier.crm.config import Bitrix24Connector, HubSpotConnector, KommoConnector

AnyConnector = Bitrix24Connector | KommoConnector | HubSpotConnector


class MissingSecret(LookupError):
    """Names the credential and its variable, never a value."""


def missing(connector: AnyConnector, environ: Mapping[str, str] | None = None) -> list[str]:
    """`field (VARIABLE)` for each credential whose variable is unset or empty."""
    env = os.environ if environ is None else environ
    return [
        f"credentials.{field}_env ({name})"
        for field, name in connector.secret_names().items()
        if not env.get(name)
    ]


def resolve(connector: AnyConnector, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    absent = missing(connector, env)
    if absent:
        raise MissingSecret(
            f"connector {connector.id!r} lacks its secrets: {', '.join(absent)} not set"
        )
    return {field: env[name] for field, name in connector.secret_names().items()}
