"""The pipeline a job gets on the devices it may run on: the part of the one verdict that needs a
device configuration (docs/architecture.md, "One verdict per job definition").

At submission the server renders the configuration of the job's candidate devices, one device
per distinct dictionary, with the job's context, and builds the pipeline dutlab-run will build
(`definitions.pipeline`). The job is runnable when one of them accepts it; otherwise the answer
is the first device's refusal, in dutlab-run's words. A device without a dictionary, or whose
dictionary does not render, cannot tell: it is left out (the scheduler's health checks and the
job fetch report it), and a type with no such device gets no pipeline verdict at all.

Submissions repeat the same few definitions on the same few devices, so both steps are cached:
renders in devicecfg (by device, dictionary, context and the template folders' state), verdicts
here by (definition, render).
"""

from __future__ import annotations

import json

import yaml

from .. import devicecfg
from ..config import Settings
from ..devicecfg import Lru, templates_state
from ..errors import ApiError
from ..models import Device
from .definitions import ConfigurationError, pipeline

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_VERDICTS = Lru(2048)


def _rendered(device: Device, context: dict, settings: Settings, state: tuple) -> str | None:
    """The device's configuration text for this context; None when it has none that renders."""
    if not device.dictionary.strip():
        return None
    try:
        return devicecfg.render(device, settings, context, state)
    except ApiError:
        return None


def _verdict(job: dict, definition_key: str, text: str) -> dict | ApiError | None:
    """The pipeline description, the refusal, or None (the configuration itself is unusable)."""

    def check() -> dict | ApiError | None:
        try:
            config = yaml.load(text, Loader=_YAML_LOADER)
            if not isinstance(config, dict):
                return None
            return pipeline(job, config)
        except ApiError as exc:
            return exc
        except (ConfigurationError, yaml.YAMLError):
            return None

    return _VERDICTS.get((definition_key, text), check)


def runnable(job: dict, devices: list[Device], settings: Settings) -> dict | None:
    """The pipeline description of `job` on the first of `devices` that can run it, or None when
    none of them has a configuration to tell; ApiError(400, dutlab-run's message, path) when none
    of those that can tell would run it."""
    context = job.get("context") or {}
    definition_key = json.dumps(job, sort_keys=True, default=str)
    state = templates_state(devicecfg.device_search_path(settings))
    refusal: ApiError | None = None
    seen: set[str] = set()
    for device in sorted(devices, key=lambda d: d.hostname):
        if device.dictionary in seen:
            continue  # the same dictionary renders the same pipeline (only the hostname differs)
        seen.add(device.dictionary)
        text = _rendered(device, context, settings, state)
        if text is None:
            continue
        verdict = _verdict(job, definition_key, text)
        if isinstance(verdict, dict):
            return verdict
        if isinstance(verdict, ApiError):
            refusal = refusal or verdict
    if refusal is not None:
        raise ApiError(refusal.status, refusal.message, refusal.path)
    return None
