"""schemathesis against each service's OpenAPI on a running stack: no 5xx, answers match schemas."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
FUZZ = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def intake_schema(stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.urls['intake']}/openapi.json")


@pytest.fixture(scope="module")
def qualifier_schema(stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.urls['qualifier']}/openapi.json")


@pytest.fixture(scope="module")
def kpi_schema(stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.urls['kpi']}/openapi.json")


intake = schemathesis.pytest.from_fixture("intake_schema")
qualifier = schemathesis.pytest.from_fixture("qualifier_schema")
kpi = schemathesis.pytest.from_fixture("kpi_schema")


@intake.parametrize()
@FUZZ
def test_intake(case: Case) -> None:
    case.call_and_validate(headers=DEV_AUTH, checks=CHECKS)


@qualifier.parametrize()
@FUZZ
def test_qualifier(case: Case) -> None:
    case.call_and_validate(headers=DEV_AUTH, checks=CHECKS)


@kpi.parametrize()
@FUZZ
def test_kpi(case: Case) -> None:
    case.call_and_validate(headers=DEV_AUTH, checks=CHECKS)
