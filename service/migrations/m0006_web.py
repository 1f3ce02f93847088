"""The lab in a browser (issue 16): web sessions, the totals behind the Prometheus counters, and
the person's name of a user (LDAP fills it)."""

from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, Model, PostgresqlDatabase
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

USER_TABLE = "user"
# a frozen copy of the column as this migration adds it: later model edits must not change it
FULL_NAME = CharField(max_length=300, default="")


def up(db) -> None:
    # frozen copies of the tables as this migration creates them
    class User(Model):
        class Meta:
            database = db
            table_name = USER_TABLE

    class WebSession(Model):
        key_hash = CharField(max_length=64, unique=True)
        user = ForeignKeyField(User, on_delete="CASCADE")
        csrf = CharField(max_length=64)
        created = DateTimeField()
        expires = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "web_session"

    class MetricTotal(Model):
        name = CharField(max_length=100)
        labels = CharField(max_length=300, default="{}")
        value = FloatField(default=0)

        class Meta:
            database = db
            table_name = "metric_total"
            indexes = ((("name", "labels"), True),)

    # m0001 creates the user table from the current model, so a new database has the column already
    if "full_name" not in {column.name for column in db.get_columns(USER_TABLE)}:
        real = getattr(db, "obj", db)  # the migrations get the models' proxy
        migrator = PostgresqlMigrator(real) if isinstance(real, PostgresqlDatabase) else SqliteMigrator(real)
        migrate(migrator.add_column(USER_TABLE, "full_name", FULL_NAME))
    db.create_tables([WebSession, MetricTotal])
