"""Group commit (service/lab/group_commit.py), in process through the `app` fixture: concurrent
submissions over REST (single and bulk) and XML-RPC share write transactions, every one is
answered with its own ids once they are stored, and a write that breaks a constraint inside a
shared transaction fails only its own request.

The database is held write-locked by another connection while the submitters arrive, so the
first one (the leader) waits for it and all the others queue behind it: what is asserted is
the count of transactions, not any timing."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
import time
import xmlrpc.client

import factories as f
from dutlab.service.db import database, is_sqlite
from dutlab.service.lab import group_commit
from dutlab.service.models import DeviceTag, Tag, TestJob

YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}


def counters(app) -> tuple[float, float]:
    text = app.api("GET", "/metrics").text
    values = [float(re.search(rf"^{name}_total (\S+)$", text, re.M).group(1))
              for name in ("dutlab_submission_commits", "dutlab_submission_writes")]
    return values[0], values[1]


def hold_write_lock(settings):
    """Another connection that holds the job table's write lock until `release(statements)`."""
    if is_sqlite():
        holder = sqlite3.connect(database.obj.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        def release(statements: list[str]) -> None:
            for sql in statements:
                holder.execute(sql)
            holder.execute("COMMIT")
            holder.close()
    else:
        import psycopg2

        holder = psycopg2.connect(settings.database)
        holder.cursor().execute(f'LOCK TABLE "{TestJob._meta.table_name}" IN EXCLUSIVE MODE')

        def release(statements: list[str]) -> None:
            for sql in statements:
                holder.cursor().execute(sql)
            holder.commit()
            holder.close()
    return release


def test_concurrent_submissions_share_commits_and_all_their_ids_exist(app, settings):
    dtype = f.device_type()
    wrk = f.worker(online=False)  # never polls: the jobs stay queued
    f.device("q1", dtype, wrk)
    f.device("q2", dtype, wrk, tags=("doomed",))
    basic = "Basic " + base64.b64encode(f"admin:{app.admin_token}".encode()).decode()
    # first uses of the token (its last_used write) and of every path, before the lock
    assert app.api("POST", "/api/v1/jobs", f.job_text("warm"), headers=YAML).status == 201
    warm = app.api("POST", "/RPC2", xmlrpc.client.dumps((f.job_text("warm rpc"),), "scheduler.jobs.submit"),
                   auth=basic, headers={"Content-Type": "text/xml"})
    assert warm.status == 200 and "<fault>" not in warm.text, warm.text
    commits_before, writes_before = counters(app)

    answers: dict[str, list[int]] = {}
    refusals: dict[str, tuple[int, str]] = {}
    lock = threading.Lock()

    def rest(name: str) -> None:
        r = app.api("POST", "/api/v1/jobs", f.job_text(name), headers=YAML)
        with lock:
            answers[name] = r.json()["job_ids"] if r.status == 201 else []
            if r.status != 201:
                refusals[name] = (r.status, r.text)

    def bulk(name: str) -> None:
        body = json.dumps({"definitions": [f.job_text(f"{name}.{i}") for i in range(3)]})
        r = app.api("POST", "/api/v1/jobs", body, headers=JSON)
        with lock:
            answers[name] = r.json()["job_ids"] if r.status == 201 else []
            if r.status != 201:
                refusals[name] = (r.status, r.text)

    def rpc(name: str) -> None:
        r = app.api("POST", "/RPC2", xmlrpc.client.dumps((f.job_text(name),), "scheduler.jobs.submit"),
                    auth=basic, headers={"Content-Type": "text/xml"})
        try:
            ids = [int(xmlrpc.client.loads(r.text)[0][0])]
        except xmlrpc.client.Fault as exc:
            ids = []
            refusals[name] = (exc.faultCode, exc.faultString)
        with lock:
            answers[name] = ids

    def doomed(name: str) -> None:  # valid when checked; its tag is gone before it is stored
        r = app.api("POST", "/api/v1/jobs", f.job_text(name, extra="tags: [doomed]"), headers=YAML)
        with lock:
            answers[name] = []
            refusals[name] = (r.status, r.json().get("error", r.text))

    clients = [(rest, "rest-0"), (rpc, "rpc-0"), (bulk, "bulk-0"), (rest, "rest-1"), (doomed, "doomed"),
               (rpc, "rpc-1"), (bulk, "bulk-1"), (rest, "rest-2"), (rpc, "rpc-2")]
    release = hold_write_lock(settings)
    try:
        threads = [threading.Thread(target=fn, args=(name,), daemon=True) for fn, name in clients]
        for t in threads:
            t.start()
        # the leader waits for the lock in its transaction; every other write queues behind it
        deadline = time.monotonic() + 60
        while group_commit.waiting() < len(clients) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert group_commit.waiting() == len(clients) - 1, "the submitters never all queued"
    finally:
        tag = Tag.get(Tag.name == "doomed").id
        release([f'DELETE FROM "{DeviceTag._meta.table_name}" WHERE tag_id = {tag}',
                 f'DELETE FROM "{Tag._meta.table_name}" WHERE id = {tag}'])
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    status, error = refusals.pop("doomed")
    assert status == 409 and "could not be stored" in error and "submit it again" in error, error
    assert not refusals, refusals
    ids = [i for _, name in clients for i in answers[name]]
    assert len(ids) == 3 + 3 + 2 * 3 and len(set(ids)) == len(ids)
    stored = {j.id: j.description for j in TestJob.select().where(TestJob.id.in_(ids))}
    assert sorted(stored) == sorted(ids)
    for _, name in clients:  # each answer names its own jobs
        for i, job_id in enumerate(answers[name]):
            assert stored[job_id] == (name if not name.startswith("bulk") else f"{name}.{i}")
    commits, writes = counters(app)
    # the leader's transaction, then one for the eight that queued behind it
    assert (commits - commits_before, writes - writes_before) == (2, len(clients) - 1)
