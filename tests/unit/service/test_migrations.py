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


def test_an_older_database_gets_the_new_column_and_tables(db):
    """A database made before m0005 (no per-worker files, no pipeline_compatibility) is brought up."""
    from playhouse.migrate import SchemaMigrator, migrate

    from dutlab.service.models import TestJob, UserPermission, WorkerFile

    database.drop_tables([WorkerFile, UserPermission])
    migrate(SchemaMigrator.from_database(database).drop_column("test_job", "pipeline_compatibility"))
    SchemaVersion.delete().where(SchemaVersion.version >= 5).execute()
    assert "pipeline_compatibility" not in {c.name for c in database.get_columns("test_job")}
    assert "0005_admin_runbook" in migrations.migrate()
    assert "pipeline_compatibility" in {c.name for c in database.get_columns("test_job")}
    assert database.table_exists("worker_file") and database.table_exists("user_permission")
    assert TestJob.select().count() == 0
