"""room in the pages of aggregates and lead states for HOT updates

Folding mostly updates rows in place: an aggregate's sum, a lead's state. Neither column
is indexed, so PostgreSQL can update without touching any index (a HOT update), but only
when the row's page has room for the new version. At the default fillfactor (100) pages
are full, so every update also writes every index of the table; at 70 most are HOT.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("kpi_aggregates", "kpi_leads")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
