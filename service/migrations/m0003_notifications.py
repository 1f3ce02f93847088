"""Notification rows (LAVA's notify block, lab alerts) and sealed callback token secrets (issue 15)."""

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(db) -> None:
    # frozen copies of the tables as this migration creates them; the stubs only name the
    # tables the foreign keys point at (they exist already)
    class Stub(Model):
        class Meta:
            database = db

    class TestJob(Stub):
        class Meta:
            table_name = "test_job"

    class Device(Stub):
        class Meta:
            table_name = "device"

    class Token(Stub):
        class Meta:
            table_name = "token"

    class Notification(Model):
        subject = CharField(max_length=250)
        job = ForeignKeyField(TestJob, null=True, on_delete="CASCADE")
        device = ForeignKeyField(Device, null=True, on_delete="CASCADE")
        event = CharField(max_length=100)
        key = CharField(max_length=300)
        method = CharField(max_length=10)
        recipient = TextField(default="")
        detail = TextField(default="{}")
        state = CharField(max_length=10, default="pending", index=True)
        attempts = IntegerField(default=0)
        last_error = TextField(default="")
        created = DateTimeField()
        next_attempt = DateTimeField(null=True)
        claimed = DateTimeField(null=True)
        sent = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "notification"
            indexes = ((("subject", "event", "key"), True),)

    class CallbackSecret(Model):
        token = ForeignKeyField(Token, unique=True, on_delete="CASCADE")
        sealed = TextField()

        class Meta:
            database = db
            table_name = "callback_secret"

    db.create_tables([Notification, CallbackSecret])
