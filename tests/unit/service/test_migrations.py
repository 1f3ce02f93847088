"""Migrations from an empty database, re-runs, and no drift between models and migrated schema."""

from __future__ import annotations

from dutlab.service import migrations
from dutlab.service.db import database
from dutlab.service.models import MODELS, MODELS_LATER, SchemaVersion


def test_migrate_from_empty_and_rerun(db):
    # the `db` fixture already migrated an empty database once
    assert migrations.current_version() == migrations.latest_version() >= 1
    assert migrations.migrate() == []  # nothing left to do
    versions = [row.version for row in SchemaVersion.select().order_by(SchemaVersion.version)]
    assert versions == [m.version for m in migrations.available()]


def test_migrated_schema_matches_models(db):
    """A model change without a migration shows up here as a missing or extra column."""
    for model in MODELS + MODELS_LATER:
        table = model._meta.table_name
        assert database.table_exists(table), table
        have = {c.name for c in database.get_columns(table)}
        want = {f.column_name for f in model._meta.sorted_fields}
        assert have == want, f"{table}: schema {sorted(have)} != model {sorted(want)}"


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1))
