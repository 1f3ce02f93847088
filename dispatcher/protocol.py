"""The worker protocol (docs/worker-api.md): version, error types, the job result, API paths.

One home for what dutlab-worker, dutlab-run and the server's ``/internal/v1`` routes must agree
on. The server imports these definitions (``dispatcher/`` never imports ``service/``), so a
change here is a change to both sides at once. Standard library only: the server and the
worker each import it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the protocol this code speaks (sent as ``Dutlab-Protocol`` and in polls)
PROTOCOL = 1
#: the oldest protocol the server still accepts from a worker (one version back)
OLDEST_PROTOCOL = max(1, PROTOCOL - 1)
#: the worker API's path prefix on the server
PREFIX = "/internal/v1"

#: every error type a finished job may carry, as LAVA names them
ERROR_TYPES = ("Infrastructure", "Configuration", "Bug", "Job", "Test", "Canceled", "Timeout", "LAVATimeout")
#: the error types that mean "not the test's fault": a Good device goes Unknown and is re-checked
INFRASTRUCTURE_ERRORS = ("Infrastructure", "Configuration", "Bug")
#: how long an error type may be on the wire (the server's column)
ERROR_TYPE_MAX = 30


def supported(protocol: int) -> bool:
    """Whether a worker speaking ``protocol`` may talk to this server."""
    return OLDEST_PROTOCOL <= protocol <= PROTOCOL


# -- paths ----------------------------------------------------------------------------------
# Relative to the server URL; the server's routes are declared from the same templates.

POLL = PREFIX + "/workers/{name}/poll"
JOB = PREFIX + "/jobs/{job_id}"
JOB_STATE = JOB + "/state"
JOB_LOGS = JOB + "/logs"
JOB_FINISH = JOB + "/finish"


def poll_path(worker: str) -> str:
    return POLL.format(name=worker)


def job_path(job_id: int, what: str = "") -> str:
    """``/internal/v1/jobs/<id>`` or one of its parts (``state``, ``logs``, ``finish``)."""
    path = JOB.format(job_id=job_id)
    return f"{path}/{what}" if what else path


# -- the job result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    """How a job ended, as dutlab-run writes it to ``result.yaml`` and sends it in ``finish``.

    :param result: ``pass`` or ``fail``.
    :param error_type: one of ERROR_TYPES when the job failed, else empty.
    :param error_msg: one sentence with the evidence when the job failed, else empty.
    """

    result: str
    error_type: str = ""
    error_msg: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @classmethod
    def failed(cls, error_type: str, error_msg: str) -> JobResult:
        return cls("fail", error_type, error_msg)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> JobResult:
        """From ``result.yaml``, a results record or a finish body; anything but pass is a fail."""
        data = data or {}
        if data.get("result") == "pass":
            return cls("pass")
        return cls("fail", str(data.get("error_type") or ""), str(data.get("error_msg") or ""))

    def to_mapping(self) -> dict[str, str]:
        """``result.yaml``'s mapping: only the fields that are set."""
        data = {"result": self.result}
        if not self.passed:
            data.update(error_type=self.error_type, error_msg=self.error_msg)
        return data

    def finish_body(self, description: str, log_line_count: int) -> dict[str, Any]:
        """The body of ``POST .../finish``."""
        return {"result": self.result, "error_type": self.error_type, "error_msg": self.error_msg,
                "description": description, "log_line_count": log_line_count}
