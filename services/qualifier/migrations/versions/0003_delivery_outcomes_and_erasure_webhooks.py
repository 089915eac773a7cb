"""partner deliveries: the event type delivered and each attempt's outcome

Revision ID: 0003
Revises: 0002

Deliveries now carry `lead.erased` webhooks beside `lead.routed` ones (`event_type`), and
keep an attempt's classified outcome (`last_outcome`) instead of the start of the
receiver's answer: the answers already stored in `last_error` ("HTTP 500: <body>") are cut
down to the status, so nothing a receiver sent stays readable through the API.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "partner_deliveries",
        sa.Column(
            "event_type", sa.String(length=100), server_default="lead.routed", nullable=False
        ),
    )
    op.add_column(
        "partner_deliveries", sa.Column("last_outcome", sa.String(length=30), nullable=True)
    )
    op.execute(
        "UPDATE partner_deliveries SET "
        "last_outcome = 'http_' || CAST(last_status_code / 100 AS VARCHAR(1)) || 'xx', "
        "last_error = CASE WHEN last_error IS NULL THEN NULL "
        "ELSE 'HTTP ' || CAST(last_status_code AS VARCHAR(3)) END "
        "WHERE last_status_code IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("partner_deliveries", "last_outcome")
    op.drop_column("partner_deliveries", "event_type")
