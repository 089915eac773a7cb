"""Token buckets and Idempotency-Key decisions: pure, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.intake.sources.ratelimit import RateLimiter, client_key
from shared.idempotency import Outcome, Record, decide, fingerprint
from shared.web import retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestTokenBucket:
    def test_a_burst_then_refusal_with_the_wait(self) -> None:
        clock = Clock()
        limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
        assert [limiter.acquire("1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.acquire("1.2.3.4") == pytest.approx(10.0)  # one token per 10 s
        assert limiter.acquire("5.6.7.8") == 0.0  # another client has its own bucket

    def test_tokens_come_back_with_time(self) -> None:
        clock = Clock()
        limiter = RateLimiter(per_minute=6, burst=1, clock=clock)
        assert limiter.acquire("k") == 0.0
        clock.now += 4
        assert limiter.acquire("k") == pytest.approx(6.0)
        clock.now += 6
        assert limiter.acquire("k") == 0.0

    def test_a_key_s_own_rate_overrides_the_default(self) -> None:
        limiter = RateLimiter(per_minute=600, burst=100, clock=Clock())
        assert limiter.acquire("form", per_minute=1, burst=1) == 0.0
        assert limiter.acquire("form", per_minute=1, burst=1) == pytest.approx(60.0)

    def test_memory_is_bounded(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=1, max_keys=2, clock=Clock())
        for key in ("a", "b", "c"):
            limiter.acquire(key)
        # "a" was the least recently used and was forgotten: it starts full again.
        assert limiter.acquire("a") == 0.0
        assert limiter.acquire("c") > 0

    def test_retry_after_is_whole_seconds_at_least_one(self) -> None:
        assert (retry_after(0.2), retry_after(9.01)) == ("1", "10")


class TestClientKey:
    def test_an_ipv6_client_is_its_64(self) -> None:
        assert (
            client_key("2001:db8:1:2::1")
            == client_key("2001:DB8:1:2:ffff::9")
            == ("2001:db8:1:2::/64")
        )
        assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"

    def test_ipv4_as_it_is_also_when_written_as_ipv6(self) -> None:
        assert client_key("203.0.113.7") == client_key("::ffff:203.0.113.7") == "203.0.113.7"

    def test_a_name_that_is_no_address_is_kept(self) -> None:
        assert client_key("testclient") == "testclient"


NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


def record(**kw: object) -> Record:
    values: dict[str, object] = {
        "request_hash": "h",
        "status_code": 202,
        "response": {},
        "created_at": NOW,
        "locked_until": None,
    }
    values.update(kw)
    return Record(**values)  # type: ignore[arg-type]


class TestIdempotencyDecisions:
    def test_a_new_key_proceeds(self) -> None:
        assert decide(None, "h", now=NOW, ttl=TTL) is Outcome.proceed

    def test_the_same_body_replays_another_body_is_a_mismatch(self) -> None:
        assert decide(record(), "h", now=NOW, ttl=TTL) is Outcome.replay
        assert decide(record(), "other", now=NOW, ttl=TTL) is Outcome.mismatch

    def test_a_request_in_flight_is_a_conflict_until_its_lock_lapses(self) -> None:
        busy = record(status_code=None, response=None, locked_until=NOW + timedelta(seconds=30))
        assert decide(busy, "h", now=NOW, ttl=TTL) is Outcome.in_flight
        assert decide(busy, "other", now=NOW, ttl=TTL) is Outcome.mismatch
        lapsed = record(status_code=None, response=None, locked_until=NOW - timedelta(seconds=1))
        assert decide(lapsed, "h", now=NOW, ttl=TTL) is Outcome.proceed

    def test_an_expired_key_is_a_new_key(self) -> None:
        old = record(created_at=NOW - TTL - timedelta(seconds=1))
        assert decide(old, "other", now=NOW, ttl=TTL) is Outcome.proceed

    def test_fingerprints_ignore_key_order_but_not_the_path(self) -> None:
        assert fingerprint("POST", "/v1/leads", {"a": 1, "b": 2}) == fingerprint(
            "POST", "/v1/leads", {"b": 2, "a": 1}
        )
        assert fingerprint("POST", "/v1/leads", {"a": 1}) != fingerprint(
            "POST", "/v1/leads:batch", {"a": 1}
        )
