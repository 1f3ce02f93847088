"""Statements whose SQL is built once (service/db.py `prebuilt`): the cached SQL serves every
later call with its own values, and a builder whose parameters are not the caller's is refused."""

from __future__ import annotations

import pytest

import factories
from dutlab.service import db as dbmod
from dutlab.service.models import TestJob, Worker, device_by_id, job_by_id, utcnow
from dutlab.service.states import JobState


def by_hostname(name: str) -> list[Worker]:
    return dbmod.rows_prebuilt(Worker, "test worker by hostname",
                               lambda h: Worker.select().where(Worker.hostname == h), name)


def test_the_sql_built_for_the_first_values_serves_the_next(db):
    first, second = factories.worker("alpha"), factories.worker("beta")
    assert [w.id for w in by_hostname("alpha")] == [first.id]
    assert [w.id for w in by_hostname("beta")] == [second.id]  # the cached SQL, other values
    assert by_hostname("gamma") == []
    before = Worker.get_by_id(first.id).last_ping
    seen = utcnow()
    cursor = dbmod.execute_prebuilt("test worker seen", lambda ping, i: Worker.update(last_ping=ping).where(
        Worker.id == i), seen, second.id)
    assert cursor.rowcount == 1
    assert Worker.get_by_id(second.id).last_ping == seen and Worker.get_by_id(first.id).last_ping == before


def test_a_builder_with_parameters_of_its_own_is_refused(db):
    factories.worker("alpha")
    # the constant is a parameter peewee adds: the cached SQL would take the caller's values wrongly
    with pytest.raises(ValueError, match="test refused"):
        dbmod.execute_prebuilt("test refused", lambda i: Worker.update(job_limit=3).where(Worker.id == i), 1)
    assert ("test refused", type(dbmod.database.obj)) not in dbmod._PREBUILT


def test_job_and_device_rows_by_id(db):
    dtype = factories.device_type("qemu")
    device = factories.device("qemu01", dtype, factories.worker("w1"))
    job = TestJob.create(submitter=factories.user("u"), definition="{}", original_definition="{}",
                         requested_device_type=dtype)
    TestJob.update(actual_device=device, state=JobState.SCHEDULED, start_time=None).where(
        TestJob.id == job.id).execute()
    row = job_by_id(job.id)
    assert row.id == job.id and row.actual_device_id == device.id and row.state == JobState.SCHEDULED
    assert row.submit_time == TestJob.get_by_id(job.id).submit_time  # converted, not the stored text
    with dbmod.write_txn():
        assert job_by_id(job.id, lock=True).id == job.id
    assert job_by_id(job.id + 1000) is None and job_by_id(True) is None and job_by_id("1") is None
    assert device_by_id(device.id).hostname == "qemu01"
    assert device_by_id(device.id + 1000) is None and device_by_id(None) is None
