"""Alembic environment of the intake service's database."""

from services.intake.tables import metadata
from shared.migrations import run_migrations_from_env

run_migrations_from_env(metadata)
