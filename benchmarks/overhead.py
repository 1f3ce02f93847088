"""1. Job overhead: raw QEMU driven by a minimal pexpect script against the same job through dutlab.

(a) raw: the kernel + initramfs of the job, booted with the QEMU command line dutlab-run used
    (read from a warm-up job's log), to the same prompt; the job's test commands run; QEMU killed.
(b) dutlab: the same job submitted over REST, polled until Finished, results checked.
Runs are interleaved (a, b, a, b, ...) so machine noise hits both alike. The phases of (b) come
from the server's timestamps and the job log, so the report says where the difference goes.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import sys
import time

import pexpect
import yaml
from benchlib import (
    ASSETS,
    Ctx,
    Section,
    epoch,
    file_frames,
    md_table,
    qemu_available,
    qemu_lab,
    read_log,
    standard_job_text,
    worker_available,
)

KEY = "overhead"
TITLE = "Job overhead (raw QEMU vs dutlab job)"


def test_commands(definition: dict) -> list[str]:
    """The shell commands of the job's inline test definitions (lava-test-case X --shell CMD → CMD)."""
    out = []
    for action in definition.get("actions") or []:
        test = action.get("test")
        if not test:
            continue
        for d in test.get("definitions") or []:
            if d.get("from") != "inline":
                continue
            steps = ((d.get("repository") or {}).get("run") or {}).get("steps") or []
            for step in steps:
                words = shlex.split(str(step))
                if words[:1] == ["lava-test-case"] and "--shell" in words:
                    out.append(shlex.join(words[words.index("--shell") + 1:]))
                elif words and not words[0].startswith("lava-"):
                    out.append(str(step))
    return out


def raw_argv(qemu_command: str | None, manifest: dict) -> list[str]:
    """dutlab-run's QEMU command with the asset kernel/initramfs; else the manifest's command."""
    kernel, initrd = str(ASSETS / "amd64" / "vmlinuz"), str(ASSETS / "amd64" / "initramfs.cpio.gz")
    if not qemu_command:
        return [a.format(vmlinuz=kernel, initramfs=initrd, kernel_args=manifest["kernel_args"])
                for a in manifest["command"]]
    argv = shlex.split(qemu_command)
    for flag, path in (("-kernel", kernel), ("-initrd", initrd)):
        if flag in argv:
            argv[argv.index(flag) + 1] = path
    # the job's test overlay drive lived in the job's scratch folder: the raw run has no overlay
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "-drive" and i + 1 < len(argv) and "/tmp/job-" in argv[i + 1]:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def raw_run(argv: list[str], prompt: str, commands: list[str]) -> dict:
    """Boot, run the commands at the prompt, kill QEMU; phase times in seconds."""
    t0 = time.monotonic()
    child = pexpect.spawn(argv[0], argv[1:], timeout=120, encoding="utf-8", codec_errors="replace")
    child.delaybeforesend = None
    try:
        child.expect_exact(prompt)
        t_prompt = time.monotonic()
        for cmd in commands:
            child.sendline(f"{cmd}; echo RC-$?-END")
            child.expect(r"RC-(\d+)-END")
            if child.match.group(1) != "0":
                raise RuntimeError(f"raw QEMU: {cmd!r} exited {child.match.group(1)}")
            child.expect_exact(prompt)
        t_tests = time.monotonic()
    finally:
        child.terminate(force=True)
        child.close(force=True)
    t_end = time.monotonic()
    return {"total": t_end - t0, "boot": t_prompt - t0, "tests": t_tests - t_prompt, "stop": t_end - t_tests}


def _first(records: list[dict], pattern: str) -> float | None:
    rx = re.compile(pattern)
    for r in records:
        if isinstance(r.get("msg"), str) and rx.search(r["msg"]):
            return epoch(r["dt"])
    return None


def dutlab_run(lab, text: str, expected_cases: int) -> dict:
    t0 = time.time()
    job_id = lab.submit(text)
    job = lab.wait_job(job_id, timeout=300, interval=0.02)
    t_seen = time.time()
    if job["health"] != "Complete":
        raise RuntimeError(f"job {job_id} ended {job['health']}: {job['error_type']} {job['error_msg']}")
    cases = lab.api("GET", f"/api/v1/jobs/{job_id}/results")
    user_cases = [c for c in cases if c["suite"] != "lava"]
    if len(user_cases) < expected_cases or any(c["result"] != "pass" for c in user_cases):
        raise RuntimeError(f"job {job_id}: results not stored as expected: {user_cases}")
    records = read_log(lab, job_id)
    submit, sched, start, end = (epoch(job[k]) for k in ("submit_time", "scheduled_time", "start_time", "end_time"))
    first_line = epoch(records[0]["dt"]) if records else None
    last_line = epoch(records[-1]["dt"]) if records else None
    qemu_started = _first(records, r"^QEMU started")
    booted = _first(records, r"^end: \d+ boot-qemu")
    test_start = _first(records, r"^start: \d+ lava-test-shell")
    test_end = _first(records, r"^end: \d+ lava-test-shell")

    def span(a, b):
        return None if a is None or b is None else b - a

    return {
        "job_id": job_id, "total": t_seen - t0,
        "phases": {
            "submit → Scheduled": span(t0, sched),
            "Scheduled → Running (worker pickup, fetch, spawn)": span(sched, start),
            "Running → first dutlab-run log line (start-up)": span(start, first_line),
            "first line → QEMU started (deploy: copy, overlay)": span(first_line, qemu_started),
            "QEMU started → prompt (boot)": span(qemu_started, booted),
            "boot → test shell start": span(booted, test_start),
            "test shell": span(test_start, test_end),
            "test end → last log line (finalize)": span(test_end, last_line),
            "last log line → Finished (upload, finish)": span(last_line, end),
            "Finished → seen by the client (poll)": span(end, t_seen),
        },
        "server_submit_to_end": span(submit, end),
        "qemu_command": next((r["msg"].split(":", 1)[1].strip() for r in records
                              if isinstance(r.get("msg"), str) and r["msg"].startswith("QEMU command:")), None),
    }


def profiled_job(lab, text: str, expected_cases: int) -> str:
    """One more job with dutlab-run under cProfile (the worker restarted with --run-command)."""
    prof = lab.root / "dutlab-run.prof"
    lab.stop_worker("w1")
    lab.start_worker("w1", "--run-command", f"{sys.executable} -m cProfile -o {prof} -m dutlab.dispatcher.run")
    lab.wait_worker_online("w1")
    run = dutlab_run(lab, text, expected_cases)
    if not prof.exists():
        return "dutlab-run under cProfile\n(no profile was written)"
    return (f"one dutlab-run under cProfile, main thread, wall-clock (job total {run['total']:.2f} s; "
            "waits on the console show as cumulative time)\n" + file_frames(prof, 25))


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    runs = 1 if ctx.quick else 5
    ok, why = qemu_available()
    if not ok:
        sec.not_measured("dutlab − raw (median)", why, "<= 1.0", "s")
        return sec
    manifest = json.loads((ASSETS / "amd64" / "manifest.json").read_text())
    prompt = manifest["prompt"]
    text, origin = standard_job_text()
    definition = yaml.safe_load(text)
    commands = test_commands(definition)
    sec.note(f"job: {origin}; test commands run raw: {commands}")
    have_worker, why_worker = worker_available()
    if not have_worker:
        plain = [raw_run(raw_argv(None, manifest), prompt, commands)["total"] for _ in range(runs)]
        sec.add("raw QEMU (manifest command), median", statistics.median(plain), "s")
        sec.not_measured("dutlab − raw (median)", why_worker, "<= 1.0", "s")
        return sec

    lab, _ = qemu_lab(ctx, "overhead", health_check=True)
    try:
        warm = dutlab_run(lab, text, len(commands))  # warm-up; gives dutlab-run's QEMU command line
        argv = raw_argv(warm["qemu_command"], manifest)
        plain_argv = raw_argv(None, manifest)
        sec.note(f"raw QEMU command (dutlab-run's, asset files): {shlex.join(argv)}")
        raw_runs, job_runs, plain_runs = [], [], []
        for _ in range(runs):
            raw_runs.append(raw_run(argv, prompt, commands))
            job_runs.append(dutlab_run(lab, text, len(commands)))
            if not ctx.quick:
                plain_runs.append(raw_run(plain_argv, prompt, commands))
        if not ctx.quick:
            sec.profiles.append(profiled_job(lab, text, len(commands)))
    finally:
        lab.stop()

    a = statistics.median(r["total"] for r in raw_runs)
    b = statistics.median(r["total"] for r in job_runs)
    sec.add("raw QEMU + pexpect (a), median", a, "s", note=f"{runs} runs, min {min(r['total'] for r in raw_runs):.2f}")
    sec.add("dutlab submit → Finished (b), median", b, "s",
            note=f"{runs} runs, min {min(r['total'] for r in job_runs):.2f}")
    sec.add("b − a (dutlab overhead)", b - a, "s", "<= 1.0")
    sec.add("b / a", b / a, "×")
    ctx.shared["single_job_s"] = [r["total"] for r in job_runs]
    if plain_runs:
        a0 = statistics.median(r["total"] for r in plain_runs)
        sec.add("raw QEMU, manifest command line (no NIC/-cpu max), median", a0, "s",
                note="what the device type's QEMU options cost: a − this")
    # where b - a goes: dutlab phases next to the raw ones
    rows = []
    for phase in job_runs[0]["phases"]:
        values = [r["phases"][phase] for r in job_runs if r["phases"][phase] is not None]
        rows.append([phase, statistics.median(values) if values else "—"])
    raw_rows = [[f"raw: {k}", statistics.median(r[k] for r in raw_runs)] for k in ("boot", "tests", "stop")]
    sec.tables.append("Phases (median over runs, seconds):\n\n" + md_table(["phase", "s"], rows + raw_rows))
    sec.data = {"raw": raw_runs, "dutlab": job_runs, "raw_manifest": plain_runs, "raw_argv": argv}
    return sec
