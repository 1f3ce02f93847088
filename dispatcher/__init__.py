"""dutlab dispatcher: the worker daemon, dutlab-run and the job pipeline."""

__version__ = "0.1.0"
