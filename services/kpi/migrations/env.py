"""Alembic environment of the kpi service's database."""

from services.kpi.store.tables import metadata
from shared.migrations import run_migrations_from_env

run_migrations_from_env(metadata)
