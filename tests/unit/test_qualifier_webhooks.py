"""Partner webhook signatures and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from services.qualifier.partners.webhooks import (
    address_allowed,
    http_outcome,
    retriable,
    retry_delay,
    signature,
    signed_headers,
    url_problem,
    verify,
)

BODY = b'{"type":"lead.routed"}'


class TestSignature:
    def test_hmac_sha256_over_timestamp_dot_body(self) -> None:
        expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
        assert signature("s3cret", 1700000000, BODY) == f"sha256={expected}"

    def test_the_headers_name_delivery_event_time_and_signature(self) -> None:
        headers = signed_headers(
            secret="s3cret", timestamp=1700000000, body=BODY, delivery_id="d-1", event_id="e-1"
        )
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


# Addresses a webhook must never reach: this machine, private networks, link-local (the
# cloud's metadata service), shared and reserved space, and IPv6 forms of all of them.
NOT_PUBLIC = [
    "127.0.0.1",
    "127.5.6.7",
    "10.0.0.1",
    "172.16.3.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::",
    "2002:a00:1::",
    "64:ff9b::a9fe:a9fe",
    "2001:db8::1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2002:5db8:d822::"]


class TestWhereWebhooksGo:
    @pytest.mark.parametrize("address", NOT_PUBLIC)
    def test_non_public_addresses_are_refused(self, address: str) -> None:
        assert not address_allowed(ipaddress.ip_address(address), allow_loopback=False)

    @pytest.mark.parametrize("address", PUBLIC)
    def test_public_addresses_are_allowed(self, address: str) -> None:
        assert address_allowed(ipaddress.ip_address(address), allow_loopback=False)

    @pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
    def test_dev_mode_allows_loopback(self, address: str) -> None:
        assert address_allowed(ipaddress.ip_address(address), allow_loopback=True)

    @pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "fe80::1"])
    def test_and_nothing_else_private(self, address: str) -> None:
        assert not address_allowed(ipaddress.ip_address(address), allow_loopback=True)

    @pytest.mark.parametrize(
        "url",
        [
            "http://partner.example/leads",  # not https
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://169.254.169.254/latest",
            "https://[::1]:8443/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://localhost/h",
            "https://LOCALHOST./h",
            "https://api.localhost/h",
        ],
    )
    def test_production_refuses_what_it_can_see_in_the_url(self, url: str) -> None:
        assert url_problem(url, production=True) is not None

    def test_a_public_https_url_is_fine(self) -> None:
        assert url_problem("https://partner.example/leads", production=True) is None
        assert url_problem("https://93.184.216.34/leads", production=True) is None

    def test_dev_mode_takes_http_and_loopback(self) -> None:
        assert url_problem("http://127.0.0.1:8080/hook", production=False) is None
        assert url_problem("http://localhost:8080/hook", production=False) is None
        assert url_problem("http://169.254.169.254/latest", production=False) is not None

    @pytest.mark.parametrize(
        ("code", "outcome"),
        [
            (200, "http_2xx"),
            (204, "http_2xx"),
            (302, "http_3xx"),
            (404, "http_4xx"),
            (503, "http_5xx"),
        ],
    )
    def test_an_answer_is_kept_as_its_class(self, code: int, outcome: str) -> None:
        assert http_outcome(code) == outcome
