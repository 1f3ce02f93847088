"""dutlab-run: run one job on one device and write an honest log and result.

Standalone (an admin debugging a device)::

    dutlab-run JOB.yaml --device DEVICE.yaml --output-dir DIR [--job-id N] [--work-dir DIR]
               [--tftp-root DIR --dispatcher-ip ADDRESS]   (boards that boot over TFTP)

Connected (started by dutlab-worker): add ``--server URL --job-token-file F``; the log is
uploaded as it grows and the result is reported to the server at the end.

Output files in DIR: ``output.yaml`` (the log, one record per line), ``description.yaml``
(the pipeline, written after validation), ``result.yaml`` (``result``, ``error_type``,
``error_msg``). Exit status 0 when the job passed, 1 when it failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from . import __version__, envfile, plan, workerfiles
from .context import JobContext
from .errors import ConfigurationError, DutlabError, InfrastructureError, JobCanceled, JobError
from .log import JobLogger, read_log
from .protocol import ErrorType, JobResult
from .schema.common import JobDefinitionError
from .schema.loader import parse_job

DEFAULT_WORK_DIR = Path("/var/lib/dutlab/worker")
DEFAULT_TFTP_ROOT = Path("/srv/tftp")
UPLOAD_CLOSE_TIMEOUT = 60.0
#: libyaml's SafeLoader reads a rendered device (300 lines) in 3 ms, the pure-Python one in 25
_DEVICE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dutlab-run", description="Run one dutlab (LAVA) job on one device.")
    p.add_argument("job", type=Path, help="job definition (YAML)")
    p.add_argument("--device", type=Path, required=True, help="rendered device configuration (YAML)")
    p.add_argument("--output-dir", type=Path, required=True, help="where output.yaml, description.yaml "
                   "and result.yaml go")
    p.add_argument("--job-id", type=int, default=0, help="job id (names /lava-<id> on the DUT; default 0)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help=f"download cache and scratch space (default {DEFAULT_WORK_DIR})")
    p.add_argument("--env-file", type=Path, help="env.yaml (purge/removes/overrides) for this run")
    p.add_argument("--env-dut", type=Path, help="env-dut.yaml (removes/overrides) for the test shell on the device")
    p.add_argument("--tftp-root", type=Path, default=DEFAULT_TFTP_ROOT,
                   help=f"the TFTP server's root: deploy to: tftp stages files there (default {DEFAULT_TFTP_ROOT})")
    p.add_argument("--dispatcher-ip", default="", help="the address boards reach this worker's TFTP server on "
                   "({SERVER_IP}; default: the worker's address on its default route)")
    p.add_argument("--file-roots", metavar="DIR[:DIR...]", help="file:// URLs may name only files under these "
                   "folders and the job's own output and scratch folders ('' for those alone; dutlab-worker passes "
                   "its file_roots); without it, any file this process can read")
    p.add_argument("--coordinator", type=Path, help="the MultiNode coordinator to use: a file with host, port, "
                   "secret (dutlab-worker writes one per job) or LAVA's lava-coordinator.conf (the default)")
    p.add_argument("--server", help="lab server URL: upload the log and report the result there")
    p.add_argument("--job-token-file", type=Path, help="file holding the job token (with --server)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print every log record on stderr")
    args = p.parse_args(argv)
    if args.server and not args.job_token_file:
        p.error("--server needs --job-token-file")
    if args.file_roots is not None:
        roots = [Path(d) for d in args.file_roots.split(os.pathsep) if d]
        if not all(root.is_absolute() for root in roots):
            p.error(f"--file-roots {args.file_roots!r}: every folder must be an absolute path")
        args.file_roots = roots
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before the pipeline takes over (and after it hands back), SIGTERM is only noted: the
    # pipeline turns it into JobCanceled inside actions, where finalize is sure to follow.
    signal.signal(signal.SIGTERM, _note_cancel)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logger = JobLogger(args.output_dir / "output.yaml", echo=sys.stderr if args.verbose else None)
    token = args.job_token_file.read_text().strip() if args.job_token_file else ""
    logger.add_secret(token)
    uploader = _start_uploader(args, token)
    started = time.monotonic()
    result = _run_job(args, logger)
    # result.yaml and the server get no secrets either
    result = dataclasses.replace(result, error_msg=logger.mask(result.error_msg))
    (args.output_dir / "result.yaml").write_text(yaml.safe_dump(result.to_mapping(), sort_keys=False))
    logger.close()
    if uploader is not None:
        _close_uploader(uploader, result)
    _print_summary(args, result, time.monotonic() - started)
    return 0 if result.passed else 1


_CANCELED: list[str] = []


def _note_cancel(signum: int, frame: Any) -> None:
    _CANCELED.append(f"the job was canceled ({signal.Signals(signum).name} received)")


def _run_job(args: argparse.Namespace, logger: JobLogger) -> JobResult:
    logger.info(f"dutlab-run {__version__}, job {args.job_id}, pid {os.getpid()}")
    ctx: JobContext | None = None
    try:
        ctx = _prepare(args, logger)
        pipeline = plan.build(ctx)
        pipeline.validate()
        description = plan.description(ctx, pipeline)
        (args.output_dir / "description.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
        if _CANCELED:
            raise JobCanceled(_CANCELED[0])
    except DutlabError as exc:
        return _fail_before_start(logger, exc, ctx)
    return pipeline.run()


def _prepare(args: argparse.Namespace, logger: JobLogger) -> JobContext:
    if args.env_file:
        try:
            env = envfile.build([envfile.load(args.env_file)], os.environ)
        except envfile.EnvFileError as exc:
            raise ConfigurationError(str(exc)) from None
        os.environ.clear()
        os.environ.update(env)
    env_dut = _load_env_dut(args.env_dut) if args.env_dut else {}
    job = _load_job(args.job)
    for secret in (job.get("secrets") or {}).values():
        logger.add_secret(str(secret))
    device = _load_device(args.device)
    logger.info(f"job {job.get('job_name', '')!r} on device {device.get('hostname', args.device.name)}")
    tmp_dir = _scratch_dir(args.work_dir, args.job_id)
    roots = None if args.file_roots is None else (*args.file_roots, args.output_dir.absolute(), tmp_dir)
    return JobContext(job_id=args.job_id, job=job, device=device, logger=logger, output_dir=args.output_dir,
                      work_dir=args.work_dir, tmp_dir=tmp_dir, tftp_root=args.tftp_root,
                      dispatcher_ip=args.dispatcher_ip, file_roots=roots, env_dut=env_dut,
                      coordinator=args.coordinator)


def _load_env_dut(path: Path) -> dict[str, Any]:
    try:
        return workerfiles.parse("env-dut", path.read_text())
    except OSError as exc:
        raise InfrastructureError(f"cannot read the env-dut file {path}: {exc}") from None
    except workerfiles.WorkerFileError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def _load_job(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InfrastructureError(f"cannot read the job definition {path}: {exc}") from None
    try:
        return parse_job(text)
    except JobDefinitionError as exc:
        where = f"{exc.path}: " if exc.path else ""
        raise JobError(f"invalid job definition: {where}{exc.message}") from None


def _load_device(path: Path) -> dict[str, Any]:
    try:
        device = yaml.load(path.read_text(), Loader=_DEVICE_LOADER)  # noqa: S506 - a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the device configuration {path}: {exc}") from None
    if not isinstance(device, dict):
        raise ConfigurationError(f"the device configuration {path} is not a mapping")
    return device


def _scratch_dir(work_dir: Path, job_id: int) -> Path:
    try:
        (work_dir / "tmp").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=work_dir / "tmp"))
    except OSError as exc:
        raise InfrastructureError(f"cannot create a scratch directory in {work_dir}: {exc} "
                                  "(use --work-dir)") from None


def _fail_before_start(logger: JobLogger, exc: DutlabError, ctx: JobContext | None) -> JobResult:
    if ctx is not None:
        shutil.rmtree(ctx.tmp_dir, ignore_errors=True)
    logger.error(f"{exc.error_type} error: {exc}")
    result = JobResult.failed(exc.error_type, str(exc))
    logger.results(result.results_record())
    return result


# -- connected mode -------------------------------------------------------------------------

def _start_uploader(args: argparse.Namespace, token: str) -> Any:
    if not args.server:
        return None
    from .upload import LogUploader  # only connected runs need the HTTP client

    uploader = LogUploader(args.server, args.job_id, token, args.output_dir)
    uploader.start()
    return uploader


def _close_uploader(uploader: Any, result: JobResult) -> None:
    if uploader.close(result, UPLOAD_CLOSE_TIMEOUT):
        return
    if uploader.gone:
        print(f"dutlab-run: nothing more was sent: {uploader.gone}", file=sys.stderr)
    else:
        print(f"dutlab-run: the server did not acknowledge the result within {UPLOAD_CLOSE_TIMEOUT:.0f} s; "
              "the worker will report it", file=sys.stderr)


# -- summary --------------------------------------------------------------------------------

def _print_summary(args: argparse.Namespace, result: JobResult, elapsed: float) -> None:
    health = "Complete" if result.passed else (
        "Canceled" if result.error_type == ErrorType.CANCELED else "Incomplete")
    print(f"job {args.job_id}: {health} in {elapsed:.1f} s")
    if not result.passed:
        print(f"  {result.error_type} error: {result.error_msg}")
    for suite, counts in _result_counts(args.output_dir / "output.yaml").items():
        print(f"  {suite}: " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items())))
    print(f"  log: {args.output_dir / 'output.yaml'}")


def _result_counts(path: Path) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for record in read_log(path):
        msg = record.get("msg")
        if record.get("lvl") == "results" and isinstance(msg, dict) and msg.get("definition") != "lava":
            counts.setdefault(str(msg.get("definition")), Counter())[str(msg.get("result"))] += 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
