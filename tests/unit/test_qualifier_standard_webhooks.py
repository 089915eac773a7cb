"""Standard Webhooks signatures, checked by the reference library (`standardwebhooks`), not
by our own code: what a receiver following the spec would do."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.qualifier.partners.standard import (
    new_secret,
    sign,
    signing_key,
    standard_headers,
)
from services.qualifier.partners.transport import retry_after
from services.qualifier.partners.webhooks import signed_headers

BODY = b'{"specversion":"1.0","type":"lead.routed","data":{"lead_id":"l-1"}}'
MSG = "0b7c5a62-0d7f-4c55-9d1e-2a4f1b9e8c11"


def now() -> int:
    return int(time.time())


class TestSecrets:
    def test_a_new_secret_is_whsec_and_base64_of_at_least_24_random_bytes(self) -> None:
        secret = new_secret()
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
        assert new_secret() != secret

    def test_a_whsec_secret_keys_with_its_bytes_as_the_library_does(self) -> None:
        secret = new_secret()
        at = datetime.fromtimestamp(1_700_000_000, UTC)
        ours = sign(signing_key(secret), MSG, 1_700_000_000, BODY)
        assert ours == Webhook(secret).sign(MSG, at, BODY)

    def test_a_legacy_partner_secret_keys_with_its_text(self) -> None:
        # Any text partners were given before: the library takes its bytes as the key.
        secret = "webstudio-shared-secret-0123456789"
        assert signing_key(secret) == secret.encode()
        headers = standard_headers(
            msg_id=MSG, timestamp=now(), body=BODY, keys=[signing_key(secret)]
        )
        assert Webhook(secret.encode()).verify(BODY, headers)["type"] == "lead.routed"

    def test_a_whsec_secret_that_is_not_base64_is_refused(self) -> None:
        with pytest.raises(ValueError, match="base64"):
            signing_key("whsec_not base64!")


class TestHeaders:
    def test_the_library_accepts_what_we_sign(self) -> None:
        secret = new_secret()
        headers = standard_headers(
            msg_id=MSG, timestamp=now(), body=BODY, keys=[signing_key(secret)]
        )
        assert headers["webhook-id"] == MSG
        assert headers["webhook-signature"].startswith("v1,")
        assert Webhook(secret).verify(BODY, headers)["data"] == {"lead_id": "l-1"}

    def test_a_changed_body_id_or_secret_is_refused(self) -> None:
        secret = new_secret()
        headers = standard_headers(
            msg_id=MSG, timestamp=now(), body=BODY, keys=[signing_key(secret)]
        )
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY + b" ", headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY, headers | {"webhook-id": "another"})
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(BODY, headers)

    def test_an_old_timestamp_is_refused_a_replay(self) -> None:
        secret = new_secret()
        headers = standard_headers(
            msg_id=MSG, timestamp=now() - 600, body=BODY, keys=[signing_key(secret)]
        )
        with pytest.raises(WebhookVerificationError, match="too old"):
            Webhook(secret).verify(BODY, headers)

    def test_during_a_rotation_both_secrets_sign(self) -> None:
        new, old = new_secret(), new_secret()
        headers = standard_headers(
            msg_id=MSG, timestamp=now(), body=BODY, keys=[signing_key(new), signing_key(old)]
        )
        signatures = headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        # A receiver holding either secret accepts it: it can switch at its own pace.
        Webhook(new).verify(BODY, headers)
        Webhook(old).verify(BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(BODY, headers)


class TestPartnerHeaders:
    def test_partners_get_the_standard_headers_and_the_legacy_ones(self) -> None:
        secret = "webstudio-shared-secret-0123456789"
        headers = signed_headers(
            secret=secret, timestamp=now(), body=BODY, delivery_id=MSG, event_id="e-1"
        )
        assert headers["webhook-id"] == headers["X-Leadflow-Delivery-Id"] == MSG
        assert headers["webhook-timestamp"] == headers["X-Leadflow-Timestamp"]
        assert headers["X-Leadflow-Signature"].startswith("sha256=")
        Webhook(secret.encode()).verify(BODY, headers)

    def test_a_whsec_partner_secret_verifies_as_the_spec_reads_it(self) -> None:
        secret = new_secret()
        headers = signed_headers(
            secret=secret, timestamp=now(), body=BODY, delivery_id=MSG, event_id="e-1"
        )
        Webhook(secret).verify(BODY, headers)


class TestRetryAfter:
    def answer(self, status: int, value: str) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": value})

    def test_seconds_or_a_date_of_a_429_or_503(self) -> None:
        assert retry_after(self.answer(429, "120")) == 120.0
        at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        date = "Mon, 07 Dec 2026 12:05:00 GMT"
        assert retry_after(self.answer(503, date), now=at) == 300.0

    def test_nothing_otherwise(self) -> None:
        assert retry_after(self.answer(500, "120")) is None
        assert retry_after(self.answer(429, "soon")) is None
        assert retry_after(httpx.Response(429)) is None
