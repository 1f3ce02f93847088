"""dutlab lab server: REST API, XML-RPC, scheduler and job output store."""

__version__ = "0.1.0"
