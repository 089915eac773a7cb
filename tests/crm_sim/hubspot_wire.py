"""HubSpot's error bodies and its rolling request window, for the simulator.

Errors (developers.hubspot.com/docs/api-reference/latest/error-handling): JSON
`{"status": "error", "message", "correlationId", "category"}`; CRM object validation
errors add `errors: [{"message", "code", "context": {"propertyName": [...]}}]` and put the
details in the message too (which may echo a submitted value).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

from fastapi.responses import JSONResponse


def error(status: int, category: str, message: str, **extra: Any) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    body.update({"category": category} if category else {})
    body.update(extra)
    return JSONResponse(body, status_code=status)


def invalid(code: str, prop: str, message: str) -> JSONResponse:
    detail = f'[{{"isValid":false,"message":"{message}","error":"{code}","name":"{prop}"}}]'
    return error(
        400,
        "VALIDATION_ERROR",
        f"Property values were not valid: {detail}",
        errors=[{"message": message, "code": code, "context": {"propertyName": [prop]}}],
    )


class Window:
    """A rolling window: at most `limit` requests in any `seconds`."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds, self.times = limit, seconds, deque[float]()

    def admit(self) -> bool:
        now = time.monotonic()
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True

    def remaining(self) -> int:
        return max(0, self.limit - len(self.times))
