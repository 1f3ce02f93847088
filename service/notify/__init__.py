"""Notifications: LAVA's `notify` block (email, IRC, callbacks) and lab alerts, sent from the queue.

Nothing here is sent from a request. The domain publishes what happened (`events.JOB_CHANGED`,
`DEVICE_HEALTH`, `WORKER_OFFLINE`); `tasks` subscribed and enqueues a plan; a plan writes one
`Notification` row per (event, recipient), idempotently, and each pending row is sent by its own
queue task, which claims it first, so two consumers never send one row twice. Rows keep their
state, attempts and last error; the repair sweep (every minute and at consumer start) resends
due rows and plans what a lost event missed, so a restart loses nothing.

    rules      the submit-time checks of a notify block (the only module the domain imports)
    rows       the rows: states, claims, outcomes and the one JSON shape
    criteria   which events a block wants, whether a job meets its criteria (regression ...)
    payload    LAVA's callback payload and {FIELD} URL substitution
    message    the plain-text mail and the IRC line
    secrets    callback tokens: sealed secrets, looked up by token description
    email, irc, callback   one sender per method
    plan       job events into rows (recipients, callbacks, the submitter by default)
    alerts     a device Bad, a worker Offline into rows for owners and admins, rate-limited
    deliver    send one row; the repair sweep
    tasks      the queue tasks and the event subscriptions

This file imports nothing, so `rules` can sit below the domain and the rest above it.
"""
