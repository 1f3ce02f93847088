"""1. Job overhead: raw QEMU driven by a minimal pexpect script against the same job through dutlab.

(a) raw: the kernel + initramfs of the job, booted with the QEMU command line dutlab-run used
    (read from a warm-up job's log), to the same prompt; the job's test commands run; QEMU
    stopped with SIGTERM and reaped, as dutlab-run's finalize stops it.
(b) dutlab: the same job submitted over REST, polled until Finished, results checked.
Runs are interleaved (a, b, a, b, ...) so machine noise hits both alike. The phases of (b) come
from the server's timestamps and the job log, grouped against a's boot / tests / stop, so the
report says where b − a goes. dutlab.dispatcher is byte-compiled first, as an installed package is.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect
import yaml
from benchlib import Ctx, Section, epoch, md_table, qemu_lab, read_log, standard_job_text

from labkit import ASSETS, BIN, cmdline, descendants, qemu_available, worker_available

KEY = "overhead"
TARGET = "<= 0.3"  # issue 17 scope 7
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
    cpu0 = os.times()
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
        stop_raw(child)
    t_end = time.monotonic()
    cpu1 = os.times()
    qemu_cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    return {"total": t_end - t0, "boot": t_prompt - t0, "tests": t_tests - t_prompt, "stop": t_end - t_tests,
            "qemu_cpu": qemu_cpu}


def stop_raw(child: pexpect.spawn) -> None:
    """SIGTERM QEMU and reap it, as dutlab-run's finalize does. (pexpect's terminate() + close()
    would add 0.2 s of its own fixed sleeps, delayafterterminate and delayafterclose, to a.)"""
    if child.isalive():
        child.kill(signal.SIGTERM)
        end = time.monotonic() + 5
        while child.isalive() and time.monotonic() < end:
            time.sleep(0.002)
    if not child.isalive():
        child.ptyproc.delayafterclose = 0.0
    child.close(force=True)


def _first(records: list[dict], pattern: str) -> float | None:
    rx = re.compile(pattern)
    for r in records:
        if isinstance(r.get("msg"), str) and rx.search(r["msg"]):
            return epoch(r["dt"])
    return None


def dutlab_run(lab, text: str, expected_cases: int) -> dict:
    pids = {"server": lab.pid("serve"), "consumer": lab.pid("consumer"), "worker": lab.pid("worker-w1")}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    qemu = QemuCpu(pids["worker"])
    qemu.start()
    t0 = time.time()
    job_id = lab.submit(text)
    # poll gently (5/s): a tight poll loop would load the server and, through it, slow the TCG guest;
    # the figure is taken at the server's end_time, so the poll interval does not enter it
    job = lab.wait_job(job_id, timeout=300, interval=0.2)
    t_seen = time.time()
    deadline = time.monotonic() + 10  # the worker reaps dutlab-run (and so its QEMU's CPU time) just after
    while descendants(pids["worker"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu = {name: after[name][0] - before[name][0] for name in pids}
    cpu["dutlab-run + QEMU"] = after["worker"][1] - before["worker"][1]
    qemu.stop.set()
    qemu.join()
    if qemu.last is not None:
        cpu["QEMU (last sample, ≤ 0.1 s before its end)"] = qemu.last
        cpu["dutlab-run alone"] = cpu["dutlab-run + QEMU"] - qemu.last
    if job["health"] != "Complete":
        raise RuntimeError(f"job {job_id} ended {job['health']}: {job['error_type']} {job['error_msg']}")
    cases = lab.json("GET", f"/api/v1/jobs/{job_id}/results")
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
        "job_id": job_id, "total": end - t0,
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
            "(Finished → seen by a client polling every 0.2 s; not in b)": span(end, t_seen),
        },
        "server_submit_to_end": span(submit, end),
        "cpu": cpu,
        "qemu_command": next((r["msg"].split(":", 1)[1].strip() for r in records
                              if isinstance(r.get("msg"), str) and r["msg"].startswith("QEMU command:")), None),
    }


#: dutlab's phases (keys of dutlab_run's "phases") grouped to face the raw run's phases
STAGES = (
    ("before QEMU: submit, schedule, pickup, spawn, start-up, deploy", (
        "submit → Scheduled", "Scheduled → Running (worker pickup, fetch, spawn)",
        "Running → first dutlab-run log line (start-up)", "first line → QEMU started (deploy: copy, overlay)"), None),
    ("boot: QEMU to the prompt", ("QEMU started → prompt (boot)",), "boot"),
    ("test shell (overlay mount, runner) vs the raw commands", (
        "boot → test shell start", "test shell"), "tests"),
    ("after the tests: stop QEMU, clean up, upload, finish", (
        "test end → last log line (finalize)", "last log line → Finished (upload, finish)"), "stop"),
)


def difference_rows(job_runs: list[dict], raw_runs: list[dict]) -> list[list]:
    rows = []
    for stage, phases, raw_key in STAGES:
        values = [sum(r["phases"][k] for k in phases) for r in job_runs
                  if all(r["phases"][k] is not None for k in phases)]
        dutlab = statistics.median(values) if values else None
        raw = statistics.median(r[raw_key] for r in raw_runs) if raw_key else 0.0
        rows.append([stage, "—" if dutlab is None else dutlab, raw, "—" if dutlab is None else dutlab - raw])
    return rows


def compile_dispatcher() -> str:
    """Byte-compile dutlab.dispatcher as installing the package does (pip writes .pyc files).

    An editable tree run with PYTHONDONTWRITEBYTECODE=1 (this machine's environment) has none,
    and every dutlab-run would then compile its ~60 modules again (about 0.1 s of CPU per job).
    """
    import compileall

    import dutlab.dispatcher

    root = Path(dutlab.dispatcher.__file__).parent
    ok = compileall.compile_dir(str(root), quiet=1)
    return (f"dutlab.dispatcher byte-compiled in {root} as an installed package is "
            f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)"
            + ("" if ok else "; some files did not compile"))


def startup_profile() -> tuple[float, float, str]:
    """dutlab-run's start-up: wall time of `dutlab-run --help` and of a bare interpreter, and the
    heaviest imports of dutlab.dispatcher.run (python -X importtime)."""
    def wall(argv: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            best = min(best, time.perf_counter() - t0)
        return best

    bare = wall([sys.executable, "-c", "pass"])
    full = wall([str(BIN / "dutlab-run"), "--help"])
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import dutlab.dispatcher.run"],
                          capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            rows.append((int(parts[1]), parts[2]))
    top = sorted((r for r in rows if not r[1].startswith(" ") or r[1].startswith(" dutlab") or
                  len(r[1]) - len(r[1].lstrip()) <= 2), reverse=True)[:12]
    text = "cumulative ms  module (python -X importtime -c 'import dutlab.dispatcher.run')\n" + "\n".join(
        f"{us / 1000:12.1f}  {name}" for us, name in top)
    return bare, full, text


class QemuCpu(threading.Thread):
    """Samples the CPU time of the QEMU that a dutlab-run under `worker_pid` starts (every 0.1 s)."""

    def __init__(self, worker_pid: int) -> None:
        super().__init__(daemon=True)
        self.worker_pid = worker_pid
        self.last: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for pid in descendants(self.worker_pid):
                argv = cmdline(pid)
                if argv and "qemu-system" in argv[0]:
                    try:
                        self.last = cpu_seconds(pid)[0]
                    except (OSError, IndexError, ValueError):
                        pass


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    runs = 1 if ctx.quick else 5
    ok, why = qemu_available()
    if not ok:
        sec.not_measured("dutlab − raw (median)", why, TARGET, "s")
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
        sec.not_measured("dutlab − raw (median)", why_worker, TARGET, "s")
        return sec

    compiled = compile_dispatcher()
    sec.note(compiled)
    lab, _ = qemu_lab(ctx, "overhead", health_check=True)
    try:
        warm = dutlab_run(lab, text, len(commands))  # warm-up; gives dutlab-run's QEMU command line
        argv = raw_argv(warm["qemu_command"], manifest)
        plain_argv = raw_argv(None, manifest)
        sec.note(f"raw QEMU command (dutlab-run's, asset files): {shlex.join(argv)}")
        raw_runs, job_runs, plain_runs = [], [], []
        for i in range(runs):
            raw_runs.append(raw_run(argv, prompt, commands))
            job_runs.append(dutlab_run(lab, text, len(commands)))
            if not ctx.quick and i % 2:  # context only: 2 runs are enough
                plain_runs.append(raw_run(plain_argv, prompt, commands))
    finally:
        lab.stop()

    a = statistics.median(r["total"] for r in raw_runs)
    b = statistics.median(r["total"] for r in job_runs)
    sec.add("raw QEMU + pexpect (a), median", a, "s", note=f"{runs} runs, min {min(r['total'] for r in raw_runs):.2f}")
    sec.add("dutlab submit → Finished, results stored (b), median", b, "s",
            note=f"{runs} runs, min {min(r['total'] for r in job_runs):.2f}")
    sec.add("b − a (dutlab overhead)", b - a, "s", TARGET,
            note="a from the same run, runs interleaved a, b, a, b")
    sec.add("b / a", b / a, "×")
    # The boot is the same QEMU work in a and b; on a loaded machine its run-to-run spread is
    # larger than dutlab's whole overhead, so the stages around it are also given on their own.
    around = [r["phases"] for r in job_runs]
    outside = [sum(p[k] for stage, keys, _ in STAGES if stage != STAGES[1][0] for k in keys)
               for p in around if all(p[k] is not None for _, keys, _ in STAGES for k in keys)]
    if outside:
        raw_outside = statistics.median(r["tests"] + r["stop"] for r in raw_runs)
        sec.add("b − a outside the boot (dutlab's stages before and after the prompt − raw tests and stop)",
                statistics.median(outside) - raw_outside, "s",
                note="context: b − a without the boot's run-to-run noise; dutlab's CPU during the boot "
                     "still shows in b − a")
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
    sec.tables.append("Where b − a goes (dutlab's phases grouped against the raw run's; medians, seconds):\n\n"
                      + md_table(["stage", "dutlab (b)", "raw (a)", "b − a"], difference_rows(job_runs, raw_runs)))
    raw_qemu = statistics.median(r["qemu_cpu"] for r in raw_runs)
    cpu_rows = [["raw: QEMU", raw_qemu]]
    for name in job_runs[0]["cpu"]:
        values = [r["cpu"][name] for r in job_runs if name in r["cpu"]]
        cpu_rows.append([f"dutlab: {name}", statistics.median(values)])
    own = statistics.median(r["cpu"].get("dutlab-run alone", r["cpu"]["dutlab-run + QEMU"] - raw_qemu)
                            + r["cpu"]["server"] + r["cpu"]["consumer"] + r["cpu"]["worker"] for r in job_runs)
    cpu_rows.append(["dutlab's own CPU per job (server + consumer + worker + dutlab-run alone)", own])
    sec.add("dutlab's own CPU time per job (competes with TCG QEMU for 2 cores)", own, "CPU s")
    sec.tables.append("CPU seconds per job (median; QEMU is TCG, so CPU taken by dutlab slows the boot on a "
                      "busy 2-core machine):\n\n" + md_table(["process", "CPU s"], cpu_rows))
    bare, full, imports = startup_profile()
    sec.add("dutlab-run start-up (`dutlab-run --help`) ÷ bare interpreter", full / bare, "×",
            note=f"{full:.2f} s vs {bare:.2f} s")
    sec.profiles.append("dutlab-run start-up, heaviest imports\n" + imports)
    sec.data = {"raw": raw_runs, "dutlab": job_runs, "raw_manifest": plain_runs, "raw_argv": argv}
    return sec
