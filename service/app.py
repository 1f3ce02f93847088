"""The WSGI application: one Bottle app, our plugins, one route table per resource."""

from __future__ import annotations

import json
import logging

import bottle
from bottle import Bottle

from .api import (
    device_types,
    devices,
    internal,
    jobs,
    metrics,
    openapi,
    playbook_runs,
    rpc2,
    system,
    tags,
    users,
    workers,
)
from .config import Settings
from .errors import log_incident
from .limits import RequestLimitsPlugin, int_filter, job_id_filter
from .plugins import AuthPlugin, DatabasePlugin, ErrorPlugin, security_headers
from .web import accounts, overview, static
from .web import devices as device_pages
from .web import jobs as job_pages
from .web import lab as lab_pages

# Bodies are read and bounded by limits.RequestLimitsPlugin before bottle sees them; this is only
# bottle's own cap for form and JSON parsing, above every limit of ours
bottle.BaseRequest.MEMFILE_MAX = 64 * 1024 * 1024

#: every route table, in the order Bottle matches them; the OpenAPI document is built from them
ROUTE_MODULES = (system, jobs, devices, device_types, workers, users, tags, internal, playbook_runs, openapi, rpc2,
                 metrics, overview, accounts, job_pages, device_pages, lab_pages, static)


def make_app(settings: Settings) -> Bottle:
    app = Bottle(catchall=True, autojson=True)
    app.config["dutlab.settings"] = settings
    app.router.add_filter("int", int_filter)  # ids in paths within the database's range, else a 400
    app.router.add_filter("jobid", job_id_filter)  # the same for a job number or a MultiNode sub-id
    app.install(ErrorPlugin())
    app.install(RequestLimitsPlugin())
    app.install(DatabasePlugin())
    app.install(AuthPlugin())
    for module in ROUTE_MODULES:
        module.routes.install(app)
    app.default_error_handler = _json_error
    app.add_hook("after_request", security_headers)
    return app


def _json_error(err: bottle.HTTPError) -> str:
    """Bottle's own errors (404 no route, 405, bad JSON) as JSON like ours."""
    bottle.response.content_type = "application/json"
    message = err.body if isinstance(err.body, str) and err.body else bottle.HTTP_CODES.get(err.status_code, "")
    if err.status_code == 404:
        message = f"no such endpoint: {bottle.request.method} {bottle.request.path}"
    elif err.status_code == 405:
        message = f"{bottle.request.method} is not allowed on {bottle.request.path}"
    elif err.status_code >= 500:
        # raised outside our plugins (bottle itself): logged under an incident id as ErrorPlugin does
        incident = log_incident(logging.getLogger("dutlab.server"), f"{bottle.request.method} {bottle.request.path}",
                                err.traceback or repr(err.exception))
        message = f"internal server error (a bug): incident {incident} in the server log"
    return json.dumps({"error": message, "path": ""})
