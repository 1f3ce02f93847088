"""Migration m0006_web on a database made before it: the user table without `full_name`, no
web sessions, no metric totals. It adds them, keeps the rows, and a re-run does nothing."""

from __future__ import annotations

from dutlab.service import migrations
from dutlab.service.db import database, open_database
from dutlab.service.models import SchemaVersion


def test_web_migration_upgrades_a_database_made_before_it(tmp_path):
    open_database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        database.create_tables([SchemaVersion])
        web = next(m for m in migrations.available() if m.name == "web")
        older = [m for m in migrations.available() if m.version < web.version]
        for m in older:  # the lab as it was before: every earlier migration applied
            m.module.up(database)
            SchemaVersion.create(version=m.version, name=m.name)
        # m0001 makes the user table from today's model; a real old one has no full_name
        database.execute_sql('ALTER TABLE "user" DROP COLUMN full_name')
        database.execute_sql('INSERT INTO "user" (username, password_hash, email, is_active, is_superuser, '
                             "date_joined) VALUES ('old', 'x', 'old@lab.example', 1, 0, '2026-01-01 00:00:00')")
        assert {"web_session", "metric_total"} & set(database.get_tables()) == set()
        assert migrations.migrate() == [f"{m.version:04d}_{m.name}" for m in migrations.available()
                                        if m.version >= web.version]
        assert "full_name" in {c.name for c in database.get_columns("user")}
        assert {"web_session", "metric_total"} <= set(database.get_tables())
        assert database.execute_sql('SELECT username, full_name FROM "user"').fetchall() == [("old", "")]
        assert migrations.migrate() == []
    finally:
        database.close()
        database.initialize(None)
