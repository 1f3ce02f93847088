"""The scheduler's queue order as an index (issue 17): a pass walks the Submitted jobs best first
(priority, then submit time, then id) and stops once its free devices are taken, instead of
sorting the whole queue every pass.
The state of a Submitted job is 0 (states.JobState.SUBMITTED), frozen here."""

TABLE = "test_job"  # frozen names: later model edits must not change what this migration creates


def up(db) -> None:
    # partial: only Submitted jobs (state 0) are in it, so assigning a job removes one entry
    # and the index stays the size of the queue, not of the job history
    db.execute_sql(f'CREATE INDEX IF NOT EXISTS "test_job_queue" ON "{TABLE}" '
                   '("priority" DESC, "submit_time", "id") WHERE "state" = 0')
    # the same per device type: the pass after one device freed reads only that type's queue
    db.execute_sql(f'CREATE INDEX IF NOT EXISTS "test_job_queue_type" ON "{TABLE}" '
                   '("requested_device_type_id", "priority" DESC, "submit_time", "id") WHERE "state" = 0')
    # the queue-timeout sweep of every pass reads only the Submitted jobs that have one
    db.execute_sql(f'CREATE INDEX IF NOT EXISTS "test_job_queue_timeout" ON "{TABLE}" '
                   '("queue_timeout") WHERE "state" = 0 AND "queue_timeout" IS NOT NULL')
