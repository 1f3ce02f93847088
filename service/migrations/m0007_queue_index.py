"""The scheduler's queue order as an index (issue 17): a pass walks the Submitted jobs best first
(priority, then submit time, then id) and stops once its free devices are taken, instead of
sorting the whole queue every pass."""

TABLE = "test_job"  # frozen names: later model edits must not change what this migration creates


def up(db) -> None:
    db.execute_sql(f'CREATE INDEX IF NOT EXISTS "test_job_queue" ON "{TABLE}" '
                   '("state", "priority" DESC, "submit_time", "id")')
