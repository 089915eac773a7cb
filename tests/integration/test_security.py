"""Security: every endpoint × (no token, bad token, each scope) and what production switches off."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from services.intake.config import IntakeSettings
from services.intake.main import create_app as intake_app
from services.kpi.config import KpiSettings
from services.kpi.main import create_app as kpi_app
from services.qualifier.config import QualifierSettings
from services.qualifier.main import create_app as qualifier_app
from shared.auth import Authenticator, Scope
from shared.migrations import migrate
from shared.settings import CommonSettings, ServiceSettings, TokenSpec
from tests.support import serving

APPS: dict[str, tuple[type[ServiceSettings], Callable[..., FastAPI]]] = {
    "intake": (IntakeSettings, intake_app),
    "qualifier": (QualifierSettings, qualifier_app),
    "kpi": (KpiSettings, kpi_app),
}
# Operations that take no bearer token, on purpose (CONTRACT.md): probes, the public form
# endpoint (origin, honeypot and rate limits instead), and Zoom's signed webhook.
PUBLIC = {
    "intake": {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/v1/forms/{form_id}/submissions"),
        ("POST", "/v1/webhooks/zoom"),
    },
    "qualifier": {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        # CRMs cannot send our tokens: each vendor's own check (a token in the body, a
        # secret in the URL, a signature) authenticates them (tests/integration/test_crm_*).
        ("POST", "/v1/crm/connectors/{connector_id}/notifications"),
        ("POST", "/v1/crm/connectors/{connector_id}/notifications/{secret}"),
        # The review page holds no data: its script calls the API with the user's token.
        ("GET", "/review"),
    },
    "kpi": {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/dashboard")},
}
METHODS = ("get", "post", "put", "patch", "delete")


def _token(scope: Scope | None) -> str:
    return f"token-{scope.value if scope else 'none'}"


def _tokens() -> list[TokenSpec]:
    specs = [
        TokenSpec(
            name=f"only-{s.value}",
            token_sha256=hashlib.sha256(_token(s).encode()).hexdigest(),
            scopes=[s],
        )
        for s in Scope
    ]
    specs.append(
        TokenSpec(
            name="no-scopes", token_sha256=hashlib.sha256(b"token-none").hexdigest(), scopes=[]
        )
    )
    return specs


def _settings(
    service: str, tmp_path: Path, kafka: str, database_url: str, **common: Any
) -> ServiceSettings:
    cls, _ = APPS[service]
    return cls(
        database_url=database_url,
        common=CommonSettings(
            data_dir=tmp_path, kafka_bootstrap_servers=kafka, auth_tokens=_tokens(), **common
        ),
    )


def _path_value(param: dict[str, Any]) -> str:
    schema = param.get("schema", {})
    if schema.get("type") == "integer":
        return "1"
    if "month" in param["name"] or "YYYY-MM" in str(schema.get("pattern", "")):
        return "2026-01"
    return "x"


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(method, template, concrete url, needs a token) for every documented operation."""
    ops = []
    for template, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            url = template
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    url = url.replace("{" + param["name"] + "}", _path_value(param))
            ops.append((method.upper(), template, url, bool(op.get("security"))))
    return ops


@pytest.mark.parametrize("service", list(APPS))
async def test_every_endpoint_refuses_missing_bad_and_wrong_scope_tokens(
    service: str, tmp_path: Path, kafka_bootstrap: str, database_url: str
) -> None:
    settings = _settings(service, tmp_path, kafka_bootstrap, database_url)
    await asyncio.to_thread(migrate, service, settings.db_url)
    app = APPS[service][1](settings)
    matrix: dict[tuple[str, str], list[str]] = {}
    async with serving(app) as client:
        operations = _operations(app.openapi())
        public = {(m, t) for m, t, _, secured in operations if not secured}
        assert public == PUBLIC[service], "an endpoint without auth that is not meant public"
        for method, template, url, secured in operations:
            if not secured:
                continue
            missing = await client.request(method, url)
            assert missing.status_code == 401, (method, template, missing.text)
            assert missing.headers["www-authenticate"] == "Bearer"
            bad = await client.request(method, url, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401, (method, template)
            none = await client.request(method, url, headers={"Authorization": "Bearer token-none"})
            assert none.status_code == 403, (method, template)
            passing = []
            for scope in Scope:
                r = await client.request(
                    method, url, headers={"Authorization": f"Bearer {_token(scope)}"}
                )
                if r.status_code == 403:
                    assert scope.value in r.json()["detail"] or "scope" in r.json()["detail"]
                else:
                    assert r.status_code != 401
                    passing.append(scope.value)
            assert len(passing) == 1, f"{method} {template} is open to {passing}"
            matrix[(method, template)] = passing
    print(f"\n{service} scopes:")
    for (method, template), scopes in sorted(matrix.items()):
        print(f"  {method:6} {template:45} {', '.join(scopes)}")


class TestProductionSwitches:
    async def test_docs_can_be_switched_off(
        self, tmp_path: Path, kafka_bootstrap: str, database_url: str
    ) -> None:
        settings = _settings(
            "qualifier", tmp_path, kafka_bootstrap, database_url, docs_enabled=False
        )
        await asyncio.to_thread(migrate, "qualifier", settings.db_url)
        async with serving(qualifier_app(settings)) as client:
            assert (await client.get("/docs")).status_code == 404
            assert (await client.get("/openapi.json")).status_code == 404

    async def test_cors_only_for_configured_origins(
        self, tmp_path: Path, kafka_bootstrap: str, database_url: str
    ) -> None:
        settings = _settings(
            "kpi", tmp_path, kafka_bootstrap, database_url, cors_origins=["https://bi.example"]
        )
        await asyncio.to_thread(migrate, "kpi", settings.db_url)
        preflight = {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        async with serving(kpi_app(settings)) as client:
            ok = await client.options(
                "/v1/kpi/summary", headers={**preflight, "Origin": "https://bi.example"}
            )
            assert ok.headers.get("access-control-allow-origin") == "https://bi.example"
            evil = await client.options(
                "/v1/kpi/summary", headers={**preflight, "Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in evil.headers

    async def test_errors_carry_no_stack_trace_and_answers_carry_security_headers(
        self, tmp_path: Path, kafka_bootstrap: str, database_url: str
    ) -> None:
        settings = _settings("qualifier", tmp_path, kafka_bootstrap, database_url)
        await asyncio.to_thread(migrate, "qualifier", settings.db_url)
        app = qualifier_app(settings)

        async def boom() -> None:
            raise RuntimeError("secret internals at /work/main/services/qualifier")

        app.add_api_route("/boom", boom)
        async with serving(app, raise_app_exceptions=False) as client:
            r = await client.get("/boom")
            assert r.status_code == 500
            assert "Traceback" not in r.text and "secret internals" not in r.text
            assert not re.search(r'File "[^"]+\.py"', r.text)
            health = await client.get("/healthz")
            assert health.headers["x-content-type-options"] == "nosniff"
            assert health.headers["x-frame-options"] == "DENY"


async def test_invalid_bodies_are_named_without_echoing_them(
    tmp_path: Path, kafka_bootstrap: str, database_url: str
) -> None:
    """A 422 names the field but never repeats the input: it may be a person's data."""
    settings = _settings("qualifier", tmp_path, kafka_bootstrap, database_url)
    await asyncio.to_thread(migrate, "qualifier", settings.db_url)
    auth = {"Authorization": f"Bearer {_token(Scope.leads_write)}"}
    async with serving(qualifier_app(settings)) as client:
        # JSON text with an unpaired surrogate escape, as a hostile client would send it.
        body = rb'{"by": "vera", "note": "call anna.petrova@acme.example \ud800"}'
        r = await client.post(
            "/v1/leads/x/contact",
            content=body,
            headers={**auth, "Content-Type": "application/json"},
        )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "note"]
    assert "anna.petrova" not in r.text and "input" not in r.json()["detail"][0]


def test_tokens_are_compared_with_every_digest_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    auth = Authenticator(_tokens())
    assert auth.authenticate(_token(Scope.intake_write)) is not None  # the first configured
    assert len(calls) == len(_tokens())  # it did not stop at the match
    calls.clear()
    assert auth.authenticate("wrong") is None
    assert len(calls) == len(_tokens())
