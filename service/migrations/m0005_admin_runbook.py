"""Per-worker files (LAVA's dispatcher.d/<worker>.yaml, env.yaml, env-dut.yaml), per-user
permissions, and each job's pipeline compatibility (issue 14)."""

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField
from playhouse.migrate import SchemaMigrator, migrate


def up(db) -> None:
    # frozen copies of the tables as this migration creates them, with foreign keys to tables
    # that exist already (named only)
    worker_table, user_table = (type(name, (Model,), {"Meta": type("Meta", (), {"database": db, "table_name": name})})
                    for name in ("worker", "user"))

    class WorkerFile(Model):
        worker = ForeignKeyField(worker_table, on_delete="CASCADE")
        kind = CharField(max_length=20)
        text = TextField(default="")
        updated = DateTimeField()

        class Meta:
            database = db
            table_name = "worker_file"
            indexes = ((("worker", "kind"), True),)

    class UserPermission(Model):
        user = ForeignKeyField(user_table, on_delete="CASCADE")
        perm = CharField(max_length=40)

        class Meta:
            database = db
            table_name = "user_permission"
            indexes = ((("user", "perm"), True),)

    db.create_tables([WorkerFile, UserPermission])
    # m0001 creates test_job from the live model, which has the column on a new database
    if "pipeline_compatibility" not in {c.name for c in db.get_columns("test_job")}:
        migrate(SchemaMigrator.from_database(db).add_column(
            "test_job", "pipeline_compatibility", IntegerField(default=1)))
