"""Alembic environment of the qualifier service's database."""

from services.qualifier.tables import metadata
from shared.migrations import run_migrations_from_env

run_migrations_from_env(metadata)
