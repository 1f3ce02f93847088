#!/usr/bin/env python3
"""The demo lab: server + queue consumer + worker + one QEMU device, SQLite, on this machine.

  make demo   runs one job (examples/jobs/qemu-smoke.yaml), follows its log, prints the results
              and stops everything; exit status 0 only if the job is Complete.
  make lab    starts the same lab and leaves it running; prints the URL, an admin user and the
              DUTLAB_URL / DUTLAB_USER / DUTLAB_TOKEN exports the Ansible modules and curl use.
  make lab-stop  stops it.

With --multinode (make demo MULTINODE=1, make lab MULTINODE=1) the lab also runs dutlab-coordinator
and a second QEMU device, qemu02, so the two-role MultiNode example examples/jobs/qemu-multinode.yaml
can run; `make demo MULTINODE=1` runs that example instead of the smoke job.

The lab is the test suite's harness (tests/labkit). `make lab` records the PIDs (and start
times) of what it started in run/lab/pids.json; `make lab-stop` stops exactly those, and what
they started (a running job's dutlab-run and QEMU), by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import string
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from labkit import (  # noqa: E402
    ASSETS,
    Lab,
    LabError,
    add_coordinator,
    pick_port,
    smoke_job,
    stop_recorded,
    worker_available,
)

STATE = REPO / "run" / "lab" / "pids.json"


def random_password(length: int = 12) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def start_lab(root: Path, port: int, worker_args: tuple[str, ...] = (), multinode: bool = False) -> tuple[Lab, str]:
    """A fresh lab in `root`: admin, device type qemu, worker1 (started when the dispatcher is
    installed, with `worker_args`) and qemu01, which runs its health check first; (lab, admin password).
    `multinode`: dutlab-coordinator too (worker1 uses it) and a second device, qemu02."""
    shutil.rmtree(root, ignore_errors=True)
    lab = Lab.create(root, port=pick_port(port), logs=root)
    password = random_password()
    try:
        lab.bootstrap(password, description="demo")
        lab.start()
        lab.add_worker("worker1")
        lab.add_qemu_device("qemu01", "worker1", health_checks=True, description="demo QEMU device")
        if multinode:
            lab.add_qemu_device("qemu02", "worker1", health_checks=True, description="second demo QEMU device")
            worker_args = (*worker_args, *add_coordinator(lab).worker_args)
        if worker_available()[0]:
            lab.start_worker("worker1", None, *worker_args)
    except LabError as exc:
        lab.stop()
        sys.exit(f"demo: {exc}\n(logs in {root})")
    return lab, password


#: what a guest's console sends to drive a terminal (ESC[6n asks the cursor position, colours, OSC
#: titles) and other control characters but the tab: a terminal running the demo would act on them
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: object) -> str:
    return _CONTROL.sub("", str(text))


def follow(lab: Lab, job_id: int, timeout: float = 600) -> dict:
    """Print the job's log as it arrives (console lines and results); return the finished job.

    The state is read before the log, so once it says Finished the log read after it holds the
    last line: "Finished" comes after it, not before."""
    line = 0
    state = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = lab.job(job_id)
        text = lab.api("GET", f"/api/v1/jobs/{job_id}/logs?start={line}").text
        for record in yaml.safe_load(text) or []:
            line += 1
            print_record(record)
        if job["state"] != state:
            state = job["state"]
            print(f"--- job {job_id}: {state}" + (f" on {job['actual_device']}" if job["actual_device"] else ""))
        if state == "Finished":
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")


def print_record(record: dict) -> None:
    lvl, msg = record.get("lvl"), record.get("msg")
    if lvl == "results":
        return
    if lvl in ("target", "input"):
        print(f"  | {printable(msg)}")
    elif lvl in ("info", "error", "warning", "exception"):
        print(f"  {lvl}: {printable(msg)}")


def case_label(case: dict) -> str:
    """The case's name, and for the lava suite's downloads which image they fetched."""
    extra = (case.get("metadata") or {}).get("extra") or {}
    label = extra.get("label") if isinstance(extra, dict) else None
    return f"{case['name']} ({label})" if label else case["name"]


def print_results(lab: Lab, job_id: int) -> None:
    cases = lab.json("GET", f"/api/v1/jobs/{job_id}/results")
    print(f"\nresults of job {job_id}:")
    print(f"  {'suite':<20} {'case':<34} {'result':<8} measurement")
    for c in cases:
        value = c["measurement"]
        if value is None:
            m = ""
        elif c["unit"] == "seconds":
            m = f"{float(value):.2f} s"
        else:
            m = f"{float(value):g} {c['unit']}".strip()
        print(f"  {c['suite']:<20} {printable(case_label(c)):<34} {c['result']:<8} {m}")


def wait_device_good(lab: Lab, hostname: str = "qemu01", timeout: float = 300) -> None:
    """The new device is Unknown: the scheduler runs its health check first, as LAVA does."""
    deadline = time.monotonic() + timeout
    announced = False
    while time.monotonic() < deadline:
        dev = lab.json("GET", f"/api/v1/devices/{hostname}")
        if dev["health"] == "Good":
            print(f"--- {hostname} passed its health check: Good")
            return
        if dev["health"] == "Bad":
            hist = lab.json("GET", f"/api/v1/devices/{hostname}/health-history")
            sys.exit(f"demo: {hostname} failed its health check: {hist}")
        if not announced:
            print(f"--- {hostname} is new (health Unknown): running its health check first")
            announced = True
        time.sleep(0.5)
    sys.exit(f"demo: {hostname} did not pass its health check in time")


def multinode_job() -> str:
    """examples/jobs/qemu-multinode.yaml, its images taken from ASSETS."""
    text = (REPO / "examples" / "jobs" / "qemu-multinode.yaml").read_text()
    return text.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}")


def demo(args: argparse.Namespace) -> int:
    lab, _ = start_lab(REPO / "run" / "demo", args.port, multinode=args.multinode)
    example = "qemu-multinode.yaml" if args.multinode else "qemu-smoke.yaml"
    try:
        r = lab.api("POST", "/api/v1/jobs", {"definition": multinode_job() if args.multinode else smoke_job()})
        if r.status != 201:
            print(f"demo: submission refused ({r.status}): {r.text}")
            return 1
        job_ids = r.json()["job_ids"]
        print(f"--- submitted examples/jobs/{example} as job {', '.join(map(str, job_ids))} "
              f"({lab.url}/api/v1/jobs/{job_ids[0]})")
        if not worker_available()[0]:
            time.sleep(1)
            print(f"--- no dispatcher installed yet: job {job_ids[0]} is {lab.job(job_ids[0])['state']} (queued)")
            return 0
        for hostname in ("qemu01", "qemu02") if args.multinode else ("qemu01",):
            wait_device_good(lab, hostname)
        healths = []
        for job_id in job_ids:  # a MultiNode group: each sub-job's log in turn (they ran together)
            job = follow(lab, job_id)
            print_results(lab, job_id)
            print(f"\njob {job_id}: {job['health']}" + (f" ({job['error_type']}: {job['error_msg']})"
                                                       if job["health"] != "Complete" else ""))
            healths.append(job["health"])
        return 0 if set(healths) == {"Complete"} else 1
    finally:
        lab.stop()


def keep_running(args: argparse.Namespace) -> int:
    if STATE.exists():
        stop(args)
    lab, password = start_lab(STATE.parent, args.port, multinode=args.multinode)
    STATE.write_text(json.dumps(lab.procs.detach()))
    print(f"dutlab lab running: dashboard and API at {lab.url}/  (logs in {lab.root})")
    print(f"admin user: admin, password: {password}")
    print(f"export DUTLAB_URL={lab.url} DUTLAB_USER=admin DUTLAB_TOKEN={lab.admin_token}")
    print("submit a job:  curl -H \"Authorization: Token $DUTLAB_TOKEN\" -H 'Content-Type: application/yaml' "
          "--data-binary @examples/jobs/qemu-smoke.yaml $DUTLAB_URL/api/v1/jobs")
    if args.multinode:
        print("a MultiNode group (qemu01 + qemu02, through dutlab-coordinator):  curl ... "
              "--data-binary @examples/jobs/qemu-multinode.yaml $DUTLAB_URL/api/v1/jobs")
    print("stop it:       make lab-stop")
    return 0


def stop(args: argparse.Namespace) -> int:
    if not STATE.exists():
        print("no lab is running (run/lab/pids.json is missing)")
        return 0
    stop_recorded(json.loads(STATE.read_text()))
    STATE.unlink()
    print("lab stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-running", action="store_true", help="start the lab and leave it running")
    parser.add_argument("--stop", action="store_true", help="stop the lab started with --keep-running")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--multinode", action="store_true", default=bool(os.environ.get("MULTINODE")),
                        help="also dutlab-coordinator and a second QEMU device (env MULTINODE=1), for "
                             "examples/jobs/qemu-multinode.yaml")
    args = parser.parse_args()
    # SIGTERM ends the demo like Ctrl-C: through the `finally` that stops the lab
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.stop:
        return stop(args)
    return keep_running(args) if args.keep_running else demo(args)


if __name__ == "__main__":
    sys.exit(main())
