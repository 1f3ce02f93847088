"""Pipeline compatibility: the dutlab a job needs, from the methods its blocks use (lava-interfaces.md §8).

A method module may set ``COMPATIBILITY`` (an integer, 1 when absent) and raises it whenever the
method learns something a job can ask for that an older dutlab-run would not do (a new key, a
new behaviour). A job's compatibility is the highest number among its blocks' methods.

The server computes it at submission with its own code and sends it with the job; a worker
whose code gives a lower number for the same job, or lacks one of its methods, refuses the job
when it fetches it, before anything runs, and says which side to upgrade. This is LAVA 2023's
rule (the dispatcher refused a job whose number it could not meet); LAVA dropped it once its
server stopped sending the number, dutlab keeps it because a lab upgrades its server first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .registry import METHODS

#: the compatibility of a method module that sets none, and of a job without blocks
BASE = 1
#: the keys a test block may be selected by (LAVA's three kinds of test)
TEST_KEYS = ("definitions", "monitors", "interactive")


def block_method(kind: str, params: Any) -> str:
    """The method name a block asks for: deploy ``to:``, boot ``method:``, the test block's key."""
    if not isinstance(params, dict):
        return ""
    if kind == "deploy":
        return str(params.get("to", ""))
    if kind == "boot":
        return str(params.get("method", ""))
    if kind == "test":
        return next((key for key in TEST_KEYS if key in params), "")
    return kind  # a command block has one form


def _module(kind: str, method: str) -> ModuleType | None:
    return next((m for m in METHODS.get(kind, ()) if method == m.METHOD), None)


def module_compatibility(module: ModuleType) -> int:
    return int(getattr(module, "COMPATIBILITY", BASE))


def job_compatibility(job: dict[str, Any]) -> tuple[int, list[str]]:
    """The job's compatibility with this code, and the methods this code lacks ("boot barebox")."""
    number, missing = BASE, []
    for item in job.get("actions") or []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (kind, params), = item.items()
        method = block_method(kind, params)
        module = _module(kind, method)
        if module is None:
            missing.append(f"{kind} {method}".strip())
        else:
            number = max(number, module_compatibility(module))
    return number, missing


def refusal(job: dict[str, Any], required: int, job_id: int, worker: str, version: str,
            server_version: str = "") -> str:
    """Why this code cannot run a job the server computed `required` for ('' when it can)."""
    number, missing = job_compatibility(job)
    server = f" (the server runs dutlab {server_version})" if server_version else ""
    if missing:
        return (f"job {job_id} uses {', '.join(missing)}, which dutlab {version} on worker {worker} does not have: "
                f"upgrade dutlab on worker {worker}{server}")
    if number < required:
        return (f"job {job_id} needs pipeline compatibility {required}, dutlab {version} on worker {worker} "
                f"offers {number} for its methods: upgrade dutlab on worker {worker}{server}")
    return ""
