"""A CRM connector's configuration, as a sales operations person writes it (YAML or JSON).

```yaml
id: bitrix-main            # names the connector in URLs and metrics
kind: bitrix24             # bitrix24 | kommo | hubspot
base_url: https://example.bitrix24.ru
push_routes: [sales]       # which routes become CRM records (sales, processing)
teams: [smb]               # only these sales teams' leads (omit: every team)
members:                   # the definition's member ids -> CRM user ids
  anna: "12"
default_owner: "1"         # for a member with no mapping
stages:                    # CRM stage -> Leadflow stage, in the CRM's pipeline order
  - {crm: PREPARATION, to: accepted}
  - {crm: EXECUTING, to: sql}
  - {crm: WON, to: won}
  - {crm: LOSE, to: lost}
payments: on_won           # none | on_won: a won record's amount becomes a payment
credentials:               # names of environment variables, never the secrets
  webhook_code_env: LEADFLOW_CRM_BITRIX_MAIN_CODE
  ...
```

Secrets live in environment variables the configuration names: neither the database, the
definition, the API's answers nor the logs ever hold one. Pure: checking that the
variables are set is `secrets.resolve`'s job.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from shared.events import Route, Stage

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# An environment variable's name: the value is the secret, the name is not.
EnvName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,127}$")]
CrmId = Annotated[str, Field(min_length=1, max_length=100)]

# What a CRM stage may mean in Leadflow: still new (`routed`: sales has not acted yet, as
# in the stage a pushed record is created in), feedback (accepted, rejected) or a
# pipeline stage.
TARGETS = (
    Stage.routed,
    Stage.accepted,
    Stage.rejected,
    Stage.sql,
    Stage.demo_held,
    Stage.proposal_sent,
    Stage.contract_sent,
    Stage.won,
    Stage.lost,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRule(_Strict):
    """One CRM stage and what it means. `pipeline` narrows a stage id that repeats
    across pipelines (Kommo's 142 and 143)."""

    crm: CrmId
    to: Stage
    pipeline: CrmId | None = None
    # For `rejected` and `lost`: the reason when the CRM gives none.
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("to")
    @classmethod
    def _a_target(cls, value: Stage) -> Stage:
        if value not in TARGETS:
            allowed = ", ".join(t.value for t in TARGETS)
            raise ValueError(f"a CRM stage maps to one of {allowed}, not {value.value}")
        return value


class RateLimit(_Strict):
    """A per-account leaky bucket (aiolimiter): up to `requests` at once, refilled at
    `requests / per_seconds` a second. In any window of W seconds it lets through up to
    `requests + W * requests / per_seconds` calls: to stay within "N per W", space calls
    (`requests: 1, per_seconds: W / N`, a little more for margin)."""

    requests: int = Field(ge=1, le=10_000)
    per_seconds: float = Field(gt=0, le=3600)


class _Connector(_Strict):
    id: Slug
    base_url: HttpUrl
    push_routes: list[Route] = Field(default_factory=lambda: [Route.sales], max_length=5)
    # Only leads of these sales teams (None: every team); teams may work in different CRMs.
    teams: list[str] | None = Field(default=None, max_length=100)
    members: dict[str, CrmId] = Field(default_factory=dict, max_length=1000)
    default_owner: CrmId | None = None
    stages: list[StageRule] = Field(default_factory=list, max_length=200)
    payments: Literal["none", "on_won"] = "none"
    # How often records modified since the last sync are listed (missed notifications).
    reconcile_seconds: float = Field(default=300, ge=5, le=86_400)
    # None: the vendor's documented budget (see each vendor's `DEFAULT_RATE_LIMIT`).
    rate_limit: RateLimit | None = None
    enabled: bool = True

    @field_validator("push_routes")
    @classmethod
    def _pushable(cls, routes: list[Route]) -> list[Route]:
        for route in routes:
            if route not in (Route.sales, Route.processing):
                raise ValueError(f"only sales and processing leads are pushed, not {route.value}")
        return routes

    @model_validator(mode="after")
    def _one_meaning_per_stage(self) -> _Connector:
        seen: set[tuple[str, str | None]] = set()
        for i, rule in enumerate(self.stages):
            key = (rule.crm, rule.pipeline)
            if key in seen:
                raise ValueError(f"stages[{i}]: CRM stage {rule.crm!r} is mapped twice")
            seen.add(key)
        return self


class Bitrix24Credentials(_Strict):
    # The incoming webhook: https://{portal}/rest/{user_id}/{code}/ ; the code is secret.
    user_id: int = Field(ge=1)
    webhook_code_env: EnvName
    # The outbound webhook's `auth[application_token]`.
    application_token_env: EnvName


class Bitrix24Connector(_Connector):
    kind: Literal["bitrix24"]
    credentials: Bitrix24Credentials
    # The deal funnel new deals go to (cannot change later in Bitrix24).
    category_id: int = Field(default=0, ge=0)
    # A user field holding the loss reason (none is built in); else the stage's name.
    lost_reason_field: str | None = Field(default=None, pattern=r"^UF_CRM_[A-Z0-9_]{1,50}$")
    # The portal's `auth[member_id]`: when set, a notification naming another is refused.
    member_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,64}$")
    # When set, a notification whose `ts` is further than this from now is refused. Off by
    # default: events reach the receiver through a queue and may be late, and a replayed
    # one only makes Leadflow read the deal again.
    max_event_age_seconds: float | None = Field(default=None, ge=30, le=86_400)

    def secret_names(self) -> dict[str, str]:
        c = self.credentials
        return {
            "webhook_code": c.webhook_code_env,
            "application_token": c.application_token_env,
        }


class KommoCredentials(_Strict):
    # A private integration's long-lived token (Authorization: Bearer).
    token_env: EnvName
    # The secret path segment of the webhook URL given to Kommo (no signature exists).
    webhook_secret_env: EnvName


class KommoConnector(_Connector):
    kind: Literal["kommo"]
    credentials: KommoCredentials
    # Notifications from another account are refused.
    account_id: int = Field(ge=1)
    pipeline_id: int = Field(ge=1)
    # The status new leads get in `pipeline_id`; None: the pipeline's first.
    status_id: int | None = Field(default=None, ge=1)
    # The leads' custom field (text) holding Leadflow's lead id, by id or by the code given
    # to it (the id wins): how a record whose create answer was lost is found again.
    lead_id_field_id: int | None = Field(default=None, ge=1)
    lead_id_field_code: str | None = Field(default="LEADFLOW_ID", pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    # Leadflow's UTM keys -> codes of the leads' tracking_data fields (Kommo's UTM_* codes).
    utm_field_codes: dict[str, str] = Field(
        default_factory=lambda: {
            k: k.upper()
            for k in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
        },
        max_length=20,
    )

    @model_validator(mode="after")
    def _lead_id_field(self) -> KommoConnector:
        if self.lead_id_field_id is None and self.lead_id_field_code is None:
            raise ValueError("lead_id_field_id or lead_id_field_code names the lead id field")
        return self

    def secret_names(self) -> dict[str, str]:
        c = self.credentials
        return {"token": c.token_env, "webhook_secret": c.webhook_secret_env}


class HubSpotCredentials(_Strict):
    # A private app's access token (Authorization: Bearer).
    token_env: EnvName
    # The app's client secret: X-HubSpot-Signature-v3 is an HMAC with it.
    client_secret_env: EnvName


class HubSpotConnector(_Connector):
    kind: Literal["hubspot"]
    credentials: HubSpotCredentials
    portal_id: int = Field(ge=1)
    pipeline: CrmId = "default"
    # The stage new deals get; None: the pipeline's first.
    dealstage: CrmId | None = None
    # The unique custom property holding the Leadflow lead id (upserts go through it).
    id_property: str = Field(default="leadflow_id", pattern=r"^[a-z][a-z0-9_]{0,99}$")
    lost_reason_property: str = Field(
        default="closed_lost_reason", pattern=r"^[a-z][a-z0-9_]{0,99}$"
    )

    def secret_names(self) -> dict[str, str]:
        c = self.credentials
        return {"token": c.token_env, "client_secret": c.client_secret_env}


Connector = Annotated[
    Bitrix24Connector | KommoConnector | HubSpotConnector, Field(discriminator="kind")
]
