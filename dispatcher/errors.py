"""Job failure classes: each carries the error_type the server records."""


class DutlabError(Exception):
    """A classified job failure; the message is a sentence with the evidence."""

    error_type = "Bug"


class InfrastructureError(DutlabError):
    """The worker, the device or the lab plumbing failed (not the job's fault)."""

    error_type = "Infrastructure"


class JobError(DutlabError):
    """The job asked for something that cannot work (bad URL, checksum, kernel)."""

    error_type = "Job"


class TestError(DutlabError):
    """The test itself asked to stop (lava-test-raise) or broke the test shell protocol."""

    __test__ = False  # not a pytest test class
    error_type = "Test"


class ConfigurationError(DutlabError):
    """The device configuration or the worker setup is wrong."""

    error_type = "Configuration"


class JobCanceled(DutlabError):
    error_type = "Canceled"


class JobTimeout(DutlabError):
    error_type = "Timeout"


class Bug(DutlabError):
    error_type = "Bug"
