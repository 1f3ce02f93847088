"""MultiNode in dutlab-run: this job's group, and the API calls its test shell makes.

A sub-job (``protocols.lava-multinode`` with ``target_group``, ``role``, ``group_size``) joins its
group at the coordinator when it starts (``group_data``, every member waits for all), answers the
DUT's ``lava-send``/``lava-wait``/``lava-wait-all``/``lava-sync`` requests while its tests run,
and leaves the group (``clear_group``) in finalize.

On the console (lava-interfaces.md §6.5): the DUT prints ``<LAVA_MULTI_NODE> <LAVA_WAIT ID>``;
dutlab-run asks the coordinator and types the answer back, ``<LAVA_WAIT_COMPLETE 12:k=v ...>``
(``<LAVA_SYNC_COMPLETE>`` for a sync, `` nack`` in place of the data when the call failed); a
send gets no answer. The DUT-side scripts are ``dispatcher/shell/lava-send`` and friends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .coordinator_client import CoordinatorClient, CoordinatorError, CoordinatorTimeout, Endpoint
from .schema.common import timeout_seconds

REQUEST = re.compile(r"<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>")
#: the calls the DUT may make, by the name in its request
APIS = ("SEND", "WAIT", "WAIT_ALL", "SYNC")
#: seconds for group_data when the job sets no protocol timeout (LAVA's system timeout)
SETUP_TIMEOUT = 90.0
LEAVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Request:
    """One API call of the DUT: ``api`` (SEND, WAIT, WAIT_ALL, SYNC), the message ID, the rest."""

    api: str
    message_id: str
    args: tuple[str, ...] = ()

    @property
    def case(self) -> str:
        """The test case that records the call (LAVA's ``multinode-<api>-<id>``, lower case)."""
        return f"multinode-{self.api.lower()}-{self.message_id}".lower()

    @property
    def data(self) -> dict[str, str]:
        """``k=v`` arguments of a send."""
        pairs = (arg.partition("=") for arg in self.args)
        return {key: value for key, sep, value in pairs if sep and key}


def parse_request(line: str) -> Request | None:
    match = REQUEST.search(line)
    if match is None:
        return None
    words = match.group(2).split()
    if not words:
        return None
    return Request(match.group(1).upper(), words[0], tuple(words[1:]))


@dataclass
class Answer:
    """What a call gave: the line to type on the console ('' for none), pass/fail, the data."""

    reply: str
    passed: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    #: no final answer came within the call's timeout
    timed_out: bool = False


def reply_line(api: str, data: dict[str, dict[str, Any]] | None) -> str:
    """``<LAVA_<API>_COMPLETE ...>``: ``sender:key=value`` words, or ``nack`` when `data` is None."""
    head = f"<LAVA_{api}_COMPLETE"
    if data is None:
        return f"{head} nack>"
    words = [f"{sender}:{key}={value}" for sender, values in data.items() for key, value in (values or {}).items()]
    return " ".join([head, *words]) + ">"


@dataclass
class Group:
    """This job's place in its MultiNode group."""

    client: CoordinatorClient
    size: int
    role: str
    #: protocols.lava-multinode.timeout in seconds: the limit of one API call (None: the action's)
    timeout: float | None = None
    #: job id -> role of every member (the server's table, then the coordinator's answer)
    roles: dict[str, str] = field(default_factory=dict)
    joined: bool = False

    @classmethod
    def of_job(cls, job: dict[str, Any], job_id: int, endpoint: Endpoint) -> Group | None:
        """The group of a sub-job definition; None for a job that is not part of one."""
        proto = (job.get("protocols") or {}).get("lava-multinode")
        if not isinstance(proto, dict) or "target_group" not in proto:
            return None
        timeout = float(timeout_seconds(proto["timeout"])) if proto.get("timeout") else None
        client = CoordinatorClient(endpoint, group_name=str(proto["target_group"]), client_name=str(job_id),
                                   role=str(proto["role"]))
        return cls(client, int(proto["group_size"]), str(proto["role"]), timeout,
                   {str(k): str(v) for k, v in (proto.get("roles") or {}).items()})

    @property
    def name(self) -> str:
        return self.client.group_name

    def join(self, timeout: float) -> dict[str, str]:
        """group_data: wait until every member has joined; the members' roles by job id."""
        self.roles = self.client.group_data(self.size, timeout=timeout)
        self.joined = True
        return self.roles

    def call(self, request: Request, within: float) -> Answer:
        """Run one DUT request against the coordinator, for at most the protocol timeout (and `within`)."""
        timeout = min(self.timeout or within, within)
        api = request.api
        try:
            if api == "SEND":
                self.client.send(request.message_id, request.data, timeout=timeout)
                return Answer("", True, request.data)
            if api == "WAIT":
                data = self.client.wait(request.message_id, timeout=timeout)
            elif api == "WAIT_ALL":
                role = request.args[0] if request.args else None
                data = self.client.wait_all(request.message_id, timeout=timeout, role=role)
            elif api == "SYNC":
                self.client.sync(request.message_id, timeout=timeout)
                return Answer(reply_line(api, {}), True)
            else:
                return Answer(reply_line(api, None), False, error=f"unknown MultiNode call LAVA_{api}; "
                                                                   f"use one of {', '.join(APIS)}")
        except CoordinatorError as exc:  # a nack, or no answer in time (CoordinatorTimeout)
            return Answer(reply_line(api, None), False, error=str(exc), timed_out=isinstance(exc, CoordinatorTimeout))
        return Answer(reply_line(api, data), True, data)

    def leave(self) -> str:
        """clear_group, so the coordinator can forget the group; '' or why it could not."""
        if not self.joined:
            return ""
        try:
            self.client.clear_group(self.size, timeout=LEAVE_TIMEOUT)
        except (CoordinatorError, OSError) as exc:
            return str(exc)
        return ""
