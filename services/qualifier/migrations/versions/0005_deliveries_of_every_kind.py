"""deliveries of every kind: the partner queue becomes the one list of outgoing calls

Revision ID: 0005
Revises: 0004

`partner_deliveries` becomes `deliveries`, `partner_id` its `target_id`, and a `kind`
says what is called (partner, webhook, crm; the rows so far are partners'); a CRM
delivery says its `operation` (push, erase) and may have no single `url`. One event may
now be owed to several targets, so an event is unique per (kind, target) instead of
alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.rename_table("partner_deliveries", "deliveries")
    op.execute(
        "ALTER TABLE deliveries RENAME CONSTRAINT partner_deliveries_pkey TO deliveries_pkey"
    )
    op.alter_column("deliveries", "partner_id", new_column_name="target_id")
    op.add_column(
        "deliveries",
        sa.Column("kind", sa.String(length=20), server_default="partner", nullable=False),
    )
    op.add_column("deliveries", sa.Column("operation", sa.String(length=20), nullable=True))
    op.alter_column("deliveries", "url", existing_type=sa.Text(), nullable=True)
    op.drop_constraint("partner_deliveries_event_id_key", "deliveries", type_="unique")
    op.create_unique_constraint(
        "uq_deliveries_event_target", "deliveries", ["kind", "target_id", "event_id"]
    )
    op.execute("ALTER INDEX ix_partner_deliveries_due RENAME TO ix_deliveries_due")
    op.execute("ALTER INDEX ix_partner_deliveries_lead_id RENAME TO ix_deliveries_lead_id")
    op.create_index(
        "ix_deliveries_target", "deliveries", ["kind", "target_id", "status"], unique=False
    )


def downgrade() -> None:
    # Webhook and CRM deliveries have no place in a partners' queue: they are dropped.
    op.execute("DELETE FROM deliveries WHERE kind <> 'partner'")
    op.drop_index("ix_deliveries_target", table_name="deliveries")
    op.execute("ALTER INDEX ix_deliveries_lead_id RENAME TO ix_partner_deliveries_lead_id")
    op.execute("ALTER INDEX ix_deliveries_due RENAME TO ix_partner_deliveries_due")
    op.drop_constraint("uq_deliveries_event_target", "deliveries", type_="unique")
    op.create_unique_constraint("partner_deliveries_event_id_key", "deliveries", ["event_id"])
    op.execute("UPDATE deliveries SET url = '' WHERE url IS NULL")
    op.alter_column("deliveries", "url", existing_type=sa.Text(), nullable=False)
    op.drop_column("deliveries", "operation")
    op.drop_column("deliveries", "kind")
    op.alter_column("deliveries", "target_id", new_column_name="partner_id")
    op.execute(
        "ALTER TABLE deliveries RENAME CONSTRAINT deliveries_pkey TO partner_deliveries_pkey"
    )
    op.rename_table("deliveries", "partner_deliveries")
