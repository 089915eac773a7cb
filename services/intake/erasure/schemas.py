"""The answer to an erasure."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class ErasureResult(BaseModel):
    lead_id: str
    status: Literal["erased", "already_erased"]
    erased_at: datetime
