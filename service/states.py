"""States and healths with LAVA's names and integer encodings (stored as integers)."""

from enum import IntEnum


class Labelled(IntEnum):
    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def parse(cls, value: "str | int") -> "Labelled":
        """Accept 'Running', 'RUNNING', 'running' or the integer code."""
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            choices = ", ".join(m.label for m in cls)
            raise ValueError(f"'{value}' is not a {cls.__name__}; choose one of {choices}") from None

    @classmethod
    def labels(cls) -> list[str]:
        return [m.label for m in cls]


class JobState(Labelled):
    SUBMITTED = 0
    SCHEDULING = 1
    SCHEDULED = 2
    RUNNING = 3
    CANCELING = 4
    FINISHED = 5


class JobHealth(Labelled):
    UNKNOWN = 0
    COMPLETE = 1
    INCOMPLETE = 2
    CANCELED = 3


class DeviceState(Labelled):
    IDLE = 0
    RESERVED = 1
    RUNNING = 2


class DeviceHealth(Labelled):
    GOOD = 0
    UNKNOWN = 1
    LOOPING = 2
    BAD = 3
    MAINTENANCE = 4
    RETIRED = 5


class WorkerState(Labelled):
    ONLINE = 0
    OFFLINE = 1


class WorkerHealth(Labelled):
    ACTIVE = 0
    MAINTENANCE = 1
    RETIRED = 2


class ResultCode(Labelled):
    PASS = 0
    FAIL = 1
    SKIP = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:  # results are lower case on the wire, as in LAVA
        return self.name.lower()


# The error types a finished job may carry are the worker protocol's: ERROR_TYPES and
# INFRASTRUCTURE_ERRORS in dutlab.dispatcher.protocol.

PRIORITY_NAMES = {"low": 0, "medium": 50, "high": 100}

#: permissions a group can grant (LAVA's "submit", "cancel or resubmit", staff/admin)
PERMISSIONS = ("submit", "cancel_resubmit", "admin")
