"""Bearer-token auth with scopes: 401 without a valid token, 403 without the scope."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

if TYPE_CHECKING:
    from shared.settings import TokenSpec


class Scope(StrEnum):
    intake_write = "intake:write"
    leads_read = "leads:read"
    leads_write = "leads:write"
    definitions_admin = "definitions:admin"
    kpi_read = "kpi:read"
    # Plans and spend: entered by finance and marketing, who need no admin rights.
    kpi_write = "kpi:write"
    # Leads' data keys (intake's `POST /v1/keys:batch`): the qualifier and subscribers that
    # read personal fields off the topics (docs/crypto-shredding.md).
    keys_read = "keys:read"
    # CRM connectors: their configuration (not their secrets, which live in the environment).
    crm_admin = "crm:admin"


ALL_SCOPES: tuple[Scope, ...] = tuple(Scope)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[Scope]


class Authenticator:
    """Checks a presented token against the configured SHA-256 digests in constant time."""

    def __init__(self, tokens: Iterable[TokenSpec]) -> None:
        self._tokens = [
            (bytes.fromhex(t.token_sha256), Principal(name=t.name, scopes=frozenset(t.scopes)))
            for t in tokens
        ]

    def authenticate(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        # Compare with every digest, not stopping at a match, so timing says nothing.
        for digest, principal in self._tokens:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


_bearer = HTTPBearer(auto_error=False, description="Bearer token with scopes")


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if it holds `scope`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        principal = authenticator.authenticate(credentials.credentials) if credentials else None
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in principal.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"token lacks the scope {scope.value!r}"
            )
        return principal

    dependency.__name__ = f"require_{scope.name}"
    return dependency
