#!/usr/bin/env python3
"""dutlab benchmarks: job overhead, pickup latency, submit rate, scheduler scale, log ingestion,
queue drain, a lab-scale simulation and memory. Writes bench-results/report.md and bench-results/report.json.

  .venv/bin/python benchmarks/run.py                 # everything (under 10 minutes on 2 cores)
  .venv/bin/python benchmarks/run.py --only pickup   # one section (repeatable)
  .venv/bin/python benchmarks/run.py --quick         # a smoke run: fewer and shorter rounds

Every figure is set against a baseline measured in the same run (raw QEMU, a trivial endpoint,
a raw file append, a bare interpreter...), because this machine is shared and noisy. Never part
of the test suite. Method and the latest figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # labkit: the lab harness the tests use

import benchmachine  # noqa: E402
import drain  # noqa: E402
import latency  # noqa: E402
import logs  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import pickup  # noqa: E402
import scheduler_scale  # noqa: E402
import simulation  # noqa: E402
import submission  # noqa: E402
import wakeups  # noqa: E402
from benchlib import Ctx, Section, fmt  # noqa: E402

from labkit import REPO, Procs, ensure_postgres, stop_everything, stop_postgres  # noqa: E402

SECTIONS = [overhead, pickup, wakeups, submission, latency, scheduler_scale, logs, drain, simulation, memory]
NAMES = {m.KEY: m for m in SECTIONS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=list(NAMES), metavar="NAME",
                   help=f"run only this section (repeatable): {', '.join(NAMES)}")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer, shorter rounds")
    p.add_argument("--out", type=Path, default=REPO / "bench-results", help="report folder (bench-results/)")
    args = p.parse_args(argv)
    out: Path = args.out
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    procs = Procs()
    ctx = Ctx(quick=args.quick, procs=procs, work=work)

    def on_signal(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    print("machine:", flush=True)
    machine = benchmachine.machine_info()
    machine["calibration_start"] = benchmachine.calibrate()
    for k, v in machine.items():
        print(f"  {k}: {v}")
    sections: list[Section] = []
    pg_started = ""
    try:
        pg_started = ensure_postgres()
        for module in SECTIONS:
            if args.only and module.KEY not in args.only:
                continue
            print(f"\n== {module.KEY}: {module.TITLE} ==", flush=True)
            t0 = time.monotonic()
            try:
                sec = module.run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
                sec = Section(module.KEY, module.TITLE)
                sec.error = f"{type(exc).__name__}: {exc}"
                sec.notes.append("traceback:\n" + traceback.format_exc())
                print(f"  ERROR: {sec.error}", flush=True)
            finally:
                stop_everything()  # whatever the section left running (labs, load generators), by PID
            sec.seconds = time.monotonic() - t0
            print(f"  ({sec.seconds:.0f} s)", flush=True)
            sections.append(sec)
    except KeyboardInterrupt:
        print("interrupted: writing the report of what finished", flush=True)
    finally:
        stop_everything()
        if pg_started:
            stop_postgres(pg_started)
    machine["loadavg_end"] = os.getloadavg()
    machine["calibration_end"] = benchmachine.calibrate()
    machine["total_seconds"] = round(time.monotonic() - started, 1)
    machine["quick"] = args.quick
    write_report(out, machine, sections)
    if not any(s.error for s in sections):
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nreport: {out / 'report.md'} ({machine['total_seconds']:.0f} s)")
    return 1 if any(s.error for s in sections) else 0


def summary_rows(sections: list[Section]) -> list[list[str]]:
    rows = []
    for sec in sections:
        if sec.error:
            rows.append([sec.title, "(section failed)", "—", "—", f"ERROR: {sec.error.splitlines()[0][:200]}"])
        for f in sec.figures:
            measured = f"{fmt(f.value)} {f.unit}".strip() if f.value is not None else f.note
            target = f"{f.target} {f.unit}".strip() if f.target else ""
            rows.append([sec.title, f.name, measured, target, f.status()])
    return rows


def write_report(out: Path, machine: dict, sections: list[Section]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# dutlab benchmark report", ""]
    lines.append(f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {machine['total_seconds']:.0f} s"
                 + (" (--quick: smoke run, figures are rough)" if machine.get("quick") else "") + ".")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    for key in ("nproc", "memory_mb", "cpu_model", "kernel", "python", "dutlab_version", "git_commit", "git_dirty",
                "sqlite", "postgresql", "peewee", "qemu", "loadavg_start", "loadavg_end", "calibration_start",
                "calibration_end"):
        if key in machine:
            lines.append(f"| {key} | {machine[key]} |")
    lines += ["", "## Summary", ""]
    header = ["section", "figure", "measured", "target", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in summary_rows(sections):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    for sec in sections:
        lines += ["", f"## {sec.title}", "", f"({sec.seconds:.0f} s)", ""]
        if sec.error:
            lines += [f"**Section failed:** {sec.error}", ""]
        for f in sec.figures:
            status = f" — **{f.status()}**" if f.status() else ""
            target = f" (target {f.target} {f.unit})" if f.target else ""
            value = f"{fmt(f.value)} {f.unit}" if f.value is not None else "not measured"
            lines.append(f"- {f.name}: {value}{target}{status}" + (f" — {f.note}" if f.note else ""))
        for table in sec.tables:
            lines += ["", table]
        for note in sec.notes:
            if note.startswith("traceback:"):
                lines += ["", "```", note, "```"]
            else:
                lines += ["", f"Note: {note}"]
        for prof in sec.profiles:
            title, _, body = prof.partition("\n")
            lines += ["", f"Profile — {title}:", "", "```", body, "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    data = {"machine": machine, "sections": [
        {"key": s.key, "title": s.title, "seconds": round(s.seconds, 1), "error": s.error, "notes": s.notes,
         "figures": [{"name": f.name, "value": f.value, "unit": f.unit, "target": f.target,
                      "status": f.status(), "note": f.note} for f in s.figures],
         "profiles": s.profiles, "data": s.data} for s in sections]}
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
