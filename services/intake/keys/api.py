"""`POST /v1/keys:batch` (scope `keys:read`): leads' data keys, for the qualifier and for
subscribers that read the topics directly (docs/crypto-shredding.md)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.intake.errors import JsonBodyRoute
from services.intake.keys import ring
from services.intake.keys.repository import live_keys
from shared.auth import Principal, Scope, require
from shared.keys import MAX_KEYS_PER_CALL
from shared.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", tags=["keys"], route_class=JsonBodyRoute)

KeyReader = Annotated[Principal, Depends(require(Scope.keys_read))]


class KeysRequest(BaseModel):
    lead_ids: list[Annotated[str, Field(min_length=1, max_length=36)]] = Field(
        min_length=1, max_length=MAX_KEYS_PER_CALL
    )


class LeadKeyOut(BaseModel):
    lead_id: str
    kid: str
    # The AES-256 key, base64url without padding. Keep it in memory only, briefly.
    key: str


class KeysAnswer(BaseModel):
    keys: list[LeadKeyOut]
    # The person was erased: what was sealed for them can no longer be read by anyone.
    destroyed: list[str]
    # No key was ever made (not a lead of this intake, or stored before keys existed).
    unknown: list[str]


@router.post("/keys:batch", response_model=KeysAnswer)
async def keys_batch(body: KeysRequest, principal: KeyReader, conn: UnitOfWork) -> KeysAnswer:
    """The data keys of up to 500 leads, to open their sealed fields on the topics."""
    asked = list(dict.fromkeys(body.lead_ids))
    live, destroyed = await live_keys(conn, ring.ring(), asked)
    return KeysAnswer(
        keys=[
            LeadKeyOut(
                lead_id=lead_id,
                kid=key.kid,
                key=base64.urlsafe_b64encode(key.key).rstrip(b"=").decode(),
            )
            for lead_id, key in live.items()
        ],
        destroyed=sorted(destroyed),
        unknown=[i for i in asked if i not in live and i not in destroyed],
    )
