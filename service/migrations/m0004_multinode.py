"""MultiNode groups (issue 13): the group, sub-id and role of each job, and why a group ended it."""

from peewee import CharField, PostgresqlDatabase, TextField
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

# frozen copies of the columns as this migration adds them: later model edits must not change them
COLUMNS = {
    "target_group": CharField(max_length=36, default="", index=True),
    "sub_id": CharField(max_length=32, default="", index=True),
    "role": CharField(max_length=100, default=""),
    "group_failure": TextField(default=""),
}
TABLE = "test_job"


def up(db) -> None:
    # m0001 creates test_job from the current model, so a new database has these columns already
    have = {column.name for column in db.get_columns(TABLE)}
    real = getattr(db, "obj", db)  # the migrations get the models' proxy
    migrator = PostgresqlMigrator(real) if isinstance(real, PostgresqlDatabase) else SqliteMigrator(real)
    operations = [migrator.add_column(TABLE, name, column) for name, column in COLUMNS.items() if name not in have]
    if operations:  # add_column also makes the index of an indexed column
        migrate(*operations)
