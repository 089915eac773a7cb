"""Partner webhook signatures and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from services.qualifier.webhooks import retriable, retry_delay, signature, signed_headers, verify

BODY = b'{"type":"lead.routed"}'


class TestSignature:
    def test_hmac_sha256_over_timestamp_dot_body(self) -> None:
        expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
        assert signature("s3cret", 1700000000, BODY) == f"sha256={expected}"

    def test_the_headers_name_delivery_event_time_and_signature(self) -> None:
        headers = signed_headers(secret="s3cret", timestamp=1700000000, body=BODY,
                                 delivery_id="d-1", event_id="e-1")  # fmt: skip
        assert headers["X-Leadflow-Delivery-Id"] == "d-1"
        assert headers["X-Leadflow-Event-Id"] == "e-1"
        assert headers["X-Leadflow-Timestamp"] == "1700000000"
        assert headers["X-Leadflow-Signature"] == signature("s3cret", 1700000000, BODY)

    def test_a_receiver_accepts_the_real_thing_only(self) -> None:
        signed = signature("s3cret", 1700000000, BODY)
        assert verify("s3cret", "1700000000", BODY, signed, now=1700000060)
        assert not verify("other", "1700000000", BODY, signed, now=1700000060)
        assert not verify("s3cret", "1700000000", BODY + b" ", signed, now=1700000060)
        assert not verify("s3cret", "1700000001", BODY, signed, now=1700000060)
        assert not verify("s3cret", "1700000000", BODY, signed, now=1700000000 + 301)  # replay
        assert not verify("s3cret", "soon", BODY, signed, now=1700000000)


class TestRetries:
    @pytest.mark.parametrize("code", [500, 502, 503, 504, 408, 429])
    def test_server_trouble_is_retried(self, code: int) -> None:
        assert retriable(code)

    @pytest.mark.parametrize("code", [301, 400, 401, 403, 404, 410, 422])
    def test_a_refusal_is_not(self, code: int) -> None:
        assert not retriable(code)

    def test_delays_grow_exponentially_up_to_the_cap(self) -> None:
        lows = [retry_delay(n, base=2, cap=60, rand=lambda: 0.0) for n in range(1, 8)]
        highs = [retry_delay(n, base=2, cap=60, rand=lambda: 1.0) for n in range(1, 8)]
        assert highs == [2, 4, 8, 16, 32, 60, 60]
        assert lows == [h / 2 for h in highs]

    def test_jitter_spreads_retries_within_the_step(self) -> None:
        delays = {retry_delay(3, base=1, cap=60, rand=lambda i=i: i / 10) for i in range(11)}
        assert len(delays) == 11 and min(delays) == 2 and max(delays) == 4
