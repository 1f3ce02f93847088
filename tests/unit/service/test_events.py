"""The domain's events reach the scheduler only through subscriptions made by the task module."""

from __future__ import annotations

import logging
import subprocess
import sys

from dutlab.service import events


def test_subscribers_hear_published_events_and_a_failure_stays_contained(caplog):
    heard = []

    def listener(reason: str) -> None:
        heard.append(reason)

    def broken(reason: str) -> None:
        raise ConnectionError("queue down")

    events.subscribe("test-event", listener)
    events.subscribe("test-event", listener)  # a second import must not double the calls
    events.subscribe("test-event")(broken)
    try:
        with caplog.at_level(logging.WARNING, "dutlab.events"):
            assert events.publish("test-event", "job 1 submitted") == 2
        assert heard == ["job 1 submitted"]
        assert "broken failed: queue down" in caplog.text
    finally:
        events._subscribers.pop("test-event")


def test_an_event_nobody_hears_is_logged(caplog):
    with caplog.at_level(logging.WARNING, "dutlab.events"):
        assert events.publish("nobody-listens", "device qemu01 is Good") == 0
    assert "no subscriber" in caplog.text and "dutlab.service.tasks" in caplog.text


def test_the_entry_point_subscribes_the_scheduling_pass():
    # a fresh interpreter: importing the CLI (huey's "main") must connect request_pass
    probe = ("import dutlab.service.cli, dutlab.service.events as e; "
             "print([f.__module__ + '.' + f.__name__ for f in e.subscribers(e.SCHEDULE_SOON)])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['dutlab.service.tasks.request_pass']"


def test_the_queue_module_registers_no_tasks():
    # huey's "config" module: importing it alone must not pull in the tasks (or the domain)
    probe = "import sys, dutlab.service.queue; print('dutlab.service.tasks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
