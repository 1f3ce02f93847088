"""Scheduled and on-demand playbook runs (issue: scheduled playbooks)."""

from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(db) -> None:
    # a frozen copy of the table as this migration creates it: later model edits must not change it
    class PlaybookRun(Model):
        name = CharField(max_length=100, index=True)
        playbook = CharField(max_length=300)
        trigger = CharField(max_length=20, default="schedule")
        scheduled_for = DateTimeField(null=True)
        status = CharField(max_length=20, default="pending")
        rc = IntegerField(null=True)
        created = DateTimeField()
        started = DateTimeField(null=True)
        finished = DateTimeField(null=True)
        stats = TextField(default="{}")
        failures = TextField(default="[]")
        artifacts = CharField(max_length=500, default="")
        error = TextField(default="")

        class Meta:
            database = db
            table_name = "playbook_run"
            indexes = ((("name", "scheduled_for"), True),)

    db.create_tables([PlaybookRun])
