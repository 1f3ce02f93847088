"""A stop signal is never lost: not during cheroot's start-up, not once it serves.

Each case runs a real cheroot server in a child Python (a signal test must not signal pytest).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

# The server is built as `serve` builds it; `when` says at which point of start-up it gets SIGTERM.
_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    from cheroot import wsgi
    from dutlab.service.serve import serve_until_signalled

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=2, shutdown_timeout=1)
    when = sys.argv[1]
    prepare = server.prepare

    def prepare_with_a_signal():
        if when == "starting":  # the parent died while this process was still starting
            os.kill(os.getpid(), signal.SIGTERM)
        prepare()

    def signal_once_handled():  # like a service manager's stop, once the server serves
        while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    server.prepare = prepare_with_a_signal
    if when == "serving":
        threading.Thread(target=signal_once_handled, daemon=True).start()
    serve_until_signalled(server)
    print("stopped cleanly", flush=True)
""")


def _run(when: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-c", _SCRIPT, when], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:  # the old bug: the signal was swallowed, it served on
        raise AssertionError(f"SIGTERM {when} was lost: the server kept serving ({exc.stderr!r})") from None


def test_sigterm_during_start_up_ends_the_process():
    done = _run("starting")
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr)


def test_sigterm_once_ready_stops_the_server_gracefully():
    done = _run("serving")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "stopped cleanly" in done.stdout
