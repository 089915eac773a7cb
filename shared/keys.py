"""Where a service gets leads' keys: a source (intake's own store, or intake's key
endpoint over HTTP with the service's token), and what the relay and consumers do with
them (seal what they publish, open what they read). See docs/crypto-shredding.md.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.crypto import SEALED_FIELDS, LeadKey, open_event, seal_payload, sealed_subject
from shared.delivery import TransientFailure
from shared.events import Event, UndecodableEvent

log = logging.getLogger(__name__)

# The key endpoint takes this many lead ids per call.
MAX_KEYS_PER_CALL = 500


class KeysUnavailable(TransientFailure):
    """The key store cannot answer now: publishing and opening wait, nothing goes out."""


class KeySource(Protocol):
    async def fetch(
        self, lead_ids: Collection[str], *, within: AsyncConnection | None = None
    ) -> dict[str, LeadKey]:
        """The live keys of these leads; a lead left out has none (erased, or unknown).
        Raises `KeysUnavailable` when the store cannot say. `within`: the caller's
        connection to its own database, for a source that reads keys there (intake's
        store) to read them in the caller's transaction; any other source ignores it."""
        ...

    def forget(self, lead_id: str) -> None:
        """Drop any copy of the lead's key held here (the lead was erased)."""
        ...


class HttpKeySource:
    """Intake's `POST /v1/keys:batch` with a `keys:read` token, each key kept for `ttl`
    seconds (a lead's events come close together: its decision, its sales calls), at most
    `max_cached` of them (about 0.5 KB each)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ttl: float = 60.0,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        max_cached: int = 5_000,
    ) -> None:
        """`client`: one to send through (a test's in-process intake); else one of its own."""
        self._url = url.rstrip("/") + "/v1/keys:batch"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ttl = ttl
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._max_cached = max_cached
        # Oldest first: every entry lives `ttl`, so insertion order is expiry order.
        self._cache: OrderedDict[str, tuple[float, LeadKey]] = OrderedDict()

    async def fetch(
        self, lead_ids: Collection[str], *, within: AsyncConnection | None = None
    ) -> dict[str, LeadKey]:
        now = time.monotonic()
        found: dict[str, LeadKey] = {}
        missing: list[str] = []
        for lead_id in dict.fromkeys(lead_ids):
            cached = self._cache.get(lead_id)
            if cached is not None and cached[0] > now:
                found[lead_id] = cached[1]
            else:
                missing.append(lead_id)
        for start in range(0, len(missing), MAX_KEYS_PER_CALL):
            for lead_id, key in (
                await self._call(missing[start : start + MAX_KEYS_PER_CALL])
            ).items():
                found[lead_id] = key
                self._cache[lead_id] = (now + self._ttl, key)
                self._cache.move_to_end(lead_id)
        self._evict(now)
        return found

    def _evict(self, now: float) -> None:
        """Expired keys go as soon as they expire, and past `max_cached` the oldest too (a
        key evicted early is only fetched again): the cache stays small at any lead rate."""
        cache = self._cache
        while cache and (len(cache) > self._max_cached or next(iter(cache.values()))[0] <= now):
            cache.popitem(last=False)

    async def _call(self, lead_ids: Sequence[str]) -> dict[str, LeadKey]:
        try:
            r = await self._client.post(
                self._url, json={"lead_ids": list(lead_ids)}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise KeysUnavailable(f"key store unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            # 401/403 is a deployment error (the token or its scope): said, and retried.
            raise KeysUnavailable(f"key store answered {r.status_code}")
        return parse_keys(r.json())

    def forget(self, lead_id: str) -> None:
        self._cache.pop(lead_id, None)

    async def close(self) -> None:
        await self._client.aclose()


def parse_keys(body: Any) -> dict[str, LeadKey]:
    """The live keys of a key endpoint's answer (`{"keys": [{lead_id, kid, key}], ...}`)."""
    return {
        k["lead_id"]: LeadKey(
            k["kid"], base64.urlsafe_b64decode(k["key"] + "=" * (-len(k["key"]) % 4))
        )
        for k in body.get("keys", [])
    }


async def seal_rows(
    source: KeySource | None, rows: Sequence[Any], *, within: AsyncConnection | None = None
) -> list[bytes]:
    """The payloads of outbox rows (`key`: lead id, `event_type`, `payload`) as they go on
    the topics: personal fields sealed with their lead's key, or left out when it has none.
    Without a source (a relay not given one), personal fields are left out. `within`: the
    relay's connection, in the transaction that read the rows (see KeySource.fetch)."""
    personal = {r.key for r in rows if r.event_type in SEALED_FIELDS}
    keys = await source.fetch(personal, within=within) if source is not None and personal else {}
    return [
        seal_payload(r.payload, keys.get(r.key)) if r.event_type in SEALED_FIELDS else r.payload
        for r in rows
    ]


async def keys_for_records(
    source: KeySource | None, records: Sequence[Any], types: Collection[str]
) -> dict[str, LeadKey]:
    """The keys a consumer needs to open a batch's records: only of events of `types` (what
    its handler reads personal fields of) that hold sealed fields. Empty without a source."""
    if source is None or not types:
        return {}
    wanted = {t.encode() for t in types}
    subjects = {
        subject
        for r in records
        if any(k == "ce_type" and v in wanted for k, v in r.headers)
        and (subject := sealed_subject(r.value or b"")) is not None
    }
    return await source.fetch(subjects) if subjects else {}


async def open_records(
    source: KeySource | None, types: Collection[str], records: Sequence[Any]
) -> list[Event | UndecodableEvent]:
    """What a consumer reads of each record (`value`): its event, the sealed fields of
    `types` events opened with their lead's key (any other's left out), or why it is no
    Leadflow event. Raises `KeysUnavailable` when the keys cannot be fetched now."""
    keys = await keys_for_records(source, records, types)
    read: list[Event | UndecodableEvent] = []
    for record in records:
        try:
            read.append(open_event(record.value or b"", keys))
        except UndecodableEvent as exc:
            read.append(exc)
    return read
