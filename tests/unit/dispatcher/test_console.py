"""Console: a real spawned command; the error for a process that ended comes from on_exit or the default."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dutlab.dispatcher.console import Console, ConsoleEOF
from dutlab.dispatcher.errors import InfrastructureError, JobError
from dutlab.dispatcher.log import JobLogger, read_log

SCRIPT = ["sh", "-c", "echo booting; echo bye; exit 3"]


def wait_for_eof(console: Console) -> None:
    with pytest.raises(ConsoleEOF):
        console.expect(["never printed"], timeout=10)


def test_default_closed_error_names_the_console_its_last_lines_and_exit_code(tmp_path: Path):
    logger = JobLogger(tmp_path / "output.yaml")
    console = Console.spawn(SCRIPT, logger, name="telnet localhost 7001")
    wait_for_eof(console)
    error = console.closed_error("while waiting for the shell prompt")
    assert isinstance(error, InfrastructureError)
    assert str(error) == "telnet localhost 7001 ended while waiting for the shell prompt: booting | bye (exit code 3)"
    logger.close()
    assert [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == "target"] == ["booting", "bye"]


def test_on_exit_given_at_spawn_builds_the_error(tmp_path: Path):
    seen = []

    def on_exit(console: Console, when: str) -> JobError:
        seen.append(console)
        return JobError(f"{console.name} said {console.tail(1)[0]!r} {when} (exit code {console.close()})")

    console = Console.spawn(SCRIPT, JobLogger(tmp_path / "output.yaml"), name="QEMU", on_exit=on_exit)
    wait_for_eof(console)
    error = console.closed_error("during the test shell")
    assert str(error) == "QEMU said 'bye' during the test shell (exit code 3)"
    assert seen == [console]


def test_a_panic_arriving_in_pieces_is_quoted_whole(tmp_path: Path):
    """The panic pattern can match before the rest of its line arrived (a loaded worker reads the
    console in small chunks); the error quotes the whole line."""
    from dutlab.dispatcher.actions.login import AutoLogin
    from dutlab.dispatcher.context import JobContext

    logger = JobLogger(tmp_path / "output.yaml")
    script = ("printf 'Kernel panic - not syncing: VFS: Unable'; sleep 0.5; "
              "printf ' to mount root fs on unknown-block(0,0)\\r\\n'; sleep 5")
    ctx = JobContext(job_id=1, job={}, device={}, logger=logger, output_dir=tmp_path, work_dir=tmp_path,
                     tmp_dir=tmp_path)
    ctx.console = Console.spawn(["sh", "-c", script], logger, name="board")
    ctx.deadline = time.monotonic() + 20
    try:
        with pytest.raises(JobError) as info:
            AutoLogin({"prompts": ["# "]}).run(ctx)
    finally:
        ctx.console.close()
    assert str(info.value) == ("the boot failed: 'Kernel panic - not syncing: VFS: Unable to mount root fs on "
                               "unknown-block(0,0)' on the console while waiting for the shell prompt")


def test_close_stops_a_running_console_with_sigterm_and_reaps_it(tmp_path: Path):
    console = Console.spawn(["sleep", "60"], JobLogger(tmp_path / "output.yaml"), name="sleeper")
    assert console.alive()
    assert console.close() == -15  # SIGTERM; the exit is noticed on the pidfd, not by polling
    assert not console.alive()


def test_close_kills_a_console_that_ignores_sigterm(tmp_path: Path):
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    console = Console.spawn(["sh", "-c", script], JobLogger(tmp_path / "output.yaml"), name="stubborn")
    console.expect(["ready"], timeout=10)
    assert console.close(grace=0.3) == -9
    assert not console.alive()


def test_typed_lines_reach_the_console_and_are_logged(tmp_path: Path):
    logger = JobLogger(tmp_path / "output.yaml")
    console = Console.spawn(["sh", "-c", "read a; read b; echo got-$a-$b"], logger, name="shell")
    console.sendline("one")
    console.sendline("two")
    console.expect(["got-one-two"], timeout=10)
    console.close()
    logger.close()
    assert [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == "input"] == ["one", "two"]
