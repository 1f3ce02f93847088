"""Job failure classes: each carries the error_type the server records (protocol.ErrorType)."""

from .protocol import ErrorType


class DutlabError(Exception):
    """A classified job failure; the message is a sentence with the evidence."""

    error_type = ErrorType.BUG


class InfrastructureError(DutlabError):
    """The worker, the device or the lab plumbing failed (not the job's fault)."""

    error_type = ErrorType.INFRASTRUCTURE


class JobError(DutlabError):
    """The job asked for something that cannot work (bad URL, checksum, kernel)."""

    error_type = ErrorType.JOB


class InvalidJob(JobError):
    """A job that cannot be built or run on this device, found before anything runs.

    :param path: where in the job the first problem is (``actions[1].test``): the server's
        answer to a submission names it.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class TestError(DutlabError):
    """The test itself asked to stop (lava-test-raise) or broke the test shell protocol."""

    __test__ = False  # not a pytest test class
    error_type = ErrorType.TEST


class ConfigurationError(DutlabError):
    """The device configuration or the worker setup is wrong."""

    error_type = ErrorType.CONFIGURATION


class JobCanceled(DutlabError):
    error_type = ErrorType.CANCELED


class JobTimeout(DutlabError):
    error_type = ErrorType.TIMEOUT


class Bug(DutlabError):
    error_type = ErrorType.BUG


class MultinodeTimeout(DutlabError):
    """A MultiNode call (group set-up, lava-wait, lava-sync...) got no answer within its timeout."""

    error_type = ErrorType.MULTINODE_TIMEOUT
