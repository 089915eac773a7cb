"""Connector configurations: checked on save, each problem naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.qualifier.crm import connectors as configs
from services.qualifier.crm import secrets
from services.qualifier.definitions.source import load_definition

EXAMPLE = Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
BITRIX = """
kind: bitrix24
base_url: https://example.bitrix24.ru
members: {anna: "12", boris: "15", ghost: "99"}
stages:
  - {crm: PREPARATION, to: accepted}
  - {crm: EXECUTING, to: sql}
payments: on_won
credentials:
  user_id: 1
  webhook_code_env: LEADFLOW_CRM_B24_CODE
  application_token_env: LEADFLOW_CRM_B24_TOKEN
"""


def _messages(exc: configs.ConnectorInvalid) -> list[str]:
    return [p.detail()["msg"] for p in exc.problems]


def test_a_good_configuration_takes_the_url_id() -> None:
    connector = configs.parse(BITRIX, "b24")
    assert connector.id == "b24" and connector.kind == "bitrix24"
    assert connector.members["anna"] == "12"
    assert connector.secret_names() == {
        "webhook_code": "LEADFLOW_CRM_B24_CODE",
        "application_token": "LEADFLOW_CRM_B24_TOKEN",
    }


def test_each_problem_names_its_field_and_line() -> None:
    text = BITRIX.replace("to: sql", "to: contacted").replace("user_id: 1", "user_id: 0")
    with pytest.raises(configs.ConnectorInvalid) as caught:
        configs.parse(text, "b24")
    messages = _messages(caught.value)
    assert any(
        "stages[1].to" in m and "contacted" in m and m.startswith("line 7") for m in messages
    )
    assert any("credentials.user_id" in m for m in messages)


def test_the_body_id_must_be_the_urls() -> None:
    with pytest.raises(configs.ConnectorInvalid) as caught:
        configs.parse("id: other\n" + BITRIX, "b24")
    assert "'other'" in _messages(caught.value)[0]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("kind: bitrix24", "kind: salesforce"), "kind"),
        (("PREPARATION, to: accepted}", "EXECUTING, to: accepted}"), "EXECUTING"),
        (("webhook_code_env: LEADFLOW_CRM_B24_CODE", "webhook_code_env: abc"), "webhook_code_env"),
        (("payments: on_won", "payments: always"), "payments"),
        (("base_url: https://example.bitrix24.ru", "base_url: not a url"), "base_url"),
    ],
)
def test_refusals_name_the_field(edit: tuple[str, str], field: str) -> None:
    with pytest.raises(configs.ConnectorInvalid) as caught:
        configs.parse(BITRIX.replace(*edit), "b24")
    assert any(field in m for m in _messages(caught.value))


def test_a_secret_value_is_never_where_a_name_goes() -> None:
    # A pasted token is not an environment variable name: refused, and not echoed whole.
    with pytest.raises(configs.ConnectorInvalid):
        configs.parse(BITRIX.replace("LEADFLOW_CRM_B24_TOKEN", "x7f3kq9w2p1m"), "b24")


def test_yaml_aliases_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(configs.ConnectorInvalid):
        configs.parse(BITRIX + "\nx: &a [1]\ny: *a\n", "b24")
    with pytest.raises(configs.ConnectorInvalid) as caught:
        configs.parse(BITRIX + "payments: none\n", "b24")
    assert any("payments" in m for m in _messages(caught.value))


def test_production_refuses_a_connector_without_its_secrets() -> None:
    connector = configs.parse(BITRIX, "b24")
    env = {"LEADFLOW_CRM_B24_CODE": "code"}
    configs.check_secrets(connector, production=False, environ=env)
    with pytest.raises(configs.ConnectorInvalid) as caught:
        configs.check_secrets(connector, production=True, environ=env)
    (message,) = _messages(caught.value)
    assert "LEADFLOW_CRM_B24_TOKEN" in message and "LEADFLOW_CRM_B24_CODE" not in message
    configs.check_secrets(
        connector, production=True, environ={**env, "LEADFLOW_CRM_B24_TOKEN": "t"}
    )
    assert secrets.resolve(connector, {**env, "LEADFLOW_CRM_B24_TOKEN": "t"}) == {
        "webhook_code": "code",
        "application_token": "t",
    }


def test_warnings_name_members_the_definition_lacks() -> None:
    definition = load_definition(EXAMPLE.read_text()).definition
    warnings = configs.warnings_for(configs.parse(BITRIX, "b24"), definition)
    assert any("ghost" in w for w in warnings)
    assert any("vera" in w and "default_owner" in w for w in warnings)
