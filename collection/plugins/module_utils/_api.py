# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dutlab REST client and the object state machine every dutlab.lab module shares.

PRIVATE to the collection dutlab.lab: no compatibility promise to anything outside it.

`DutlabClient` is the only code that speaks HTTP: `open_url` with `Authorization: Token`,
`validate_certs`, `ca_path` and `timeout`. Every failure becomes a `DutlabError` whose text
names the operation, the object, the status and the server's sentence, e.g.
``PUT /api/v1/devices/qemu01/dictionary: 403 user 'bob' is not an admin``.

`_DutlabObjectModule.execute()` reads the object, then creates, updates or deletes it, with
check mode, diff and `changed` only on a real difference, and turns a `DutlabError` raised
anywhere on the way into `fail_json` (never a traceback).
"""

from __future__ import absolute_import, division, print_function

import json
import socket
from http.client import HTTPException
from types import MappingProxyType
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import SSLValidationError, open_url

API_PREFIX = "/api/v1/"
#: how many rows one page of a list asks for (the server's maximum)
PAGE_SIZE = 1000

STATE_PRESENT = "present"
STATE_ABSENT = "absent"
OPERATION_CREATE = "create"
OPERATION_UPDATE = "update"
OPERATION_REMOVE = "remove"
OPERATION_NONE = "none"


def api_argument_spec():
    """The connection options every module takes (documented in the `_server` doc fragment)."""
    return dict(
        api_url=dict(type="str", fallback=(env_fallback, ["DUTLAB_URL"])),
        api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["DUTLAB_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="int", default=30),
    )


class DutlabError(Exception):
    """The server refused a request (`status` 4xx/5xx) or could not be reached (`status` None).

    :param method: HTTP method of the request
    :param path: URL path of the request, e.g. ``/api/v1/devices/qemu01``
    :param status: HTTP status, or None when no answer came
    :param message: the server's sentence (its JSON ``error``) or the connection error
    :param field: where in the request body the server found the problem, if it said
    """

    def __init__(self, method, path, status, message, field=""):
        super(DutlabError, self).__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.field = field

    def __str__(self):
        where = " (at %s)" % self.field if self.field else ""
        if self.status is None:
            return "%s %s: %s%s" % (self.method, self.path, self.message, where)
        return "%s %s: %s %s%s" % (self.method, self.path, self.status, self.message, where)


class DutlabClient:
    """A thin JSON client for ``<api_url>/api/v1/``.

    :param url: the server's base URL, e.g. ``http://lab.example.org:8000``
    :param token: an API token (sent as ``Authorization: Token <token>``), or None
    """

    def __init__(self, url, token=None, validate_certs=True, ca_path=None, timeout=30):
        self.url = url.rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    @classmethod
    def from_module(cls, module):
        params = module.params
        url = params.get("api_url")
        if not url:
            module.fail_json(msg="api_url is not set: give the dutlab server URL (e.g. http://lab:8000) "
                                 "as api_url or in the environment variable DUTLAB_URL")
        if not url.startswith(("http://", "https://")):
            module.fail_json(msg="api_url must start with http:// or https://, not %r" % url)
        return cls(url, params.get("api_token"), params.get("validate_certs"), params.get("ca_path"),
                   params.get("timeout"))

    def request(self, method, path, body=None, query=None, text_body=None, anonymous=False):
        """Send one request; return the decoded JSON answer (text if not JSON, None if empty).

        :param path: path under ``/api/v1/``, e.g. ``devices/qemu01``
        :param body: a JSON-serialisable request body
        :param query: a dict of query parameters (None values are left out)
        :param text_body: a text request body (sent as text/plain), instead of `body`
        :param anonymous: send no token
        :raises DutlabError: on any status >= 400 and when the server cannot be reached
        """
        url_path = API_PREFIX + path
        if query:
            url_path += "?" + urlencode([(k, v) for k, v in sorted(query.items()) if v is not None])
        headers = {"Accept": "application/json"}
        if self.token and not anonymous:
            headers["Authorization"] = "Token %s" % self.token
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        elif text_body is not None:
            data = text_body.encode("utf-8")
            headers["Content-Type"] = "text/plain; charset=utf-8"
        try:
            response = open_url(self.url + url_path, data=data, headers=headers, method=method,
                                validate_certs=self.validate_certs, ca_path=self.ca_path, timeout=self.timeout,
                                follow_redirects="safe", use_netrc=False)
            raw = response.read()
            content_type = response.headers.get("Content-Type", "")
        except HTTPError as exc:
            raise self._refusal(method, url_path, exc)
        except (URLError, SSLValidationError, UrlsConnectionError, socket.timeout, HTTPException, OSError) as exc:
            raise DutlabError(method, url_path, None, "cannot reach the dutlab server at %s: %s"
                              % (self.url, to_native(getattr(exc, "reason", exc))))
        return _decode(raw, content_type)

    @staticmethod
    def _refusal(method, url_path, exc):
        try:
            raw = exc.read()
        except Exception:  # the body of an error answer is a courtesy; the status is what counts
            raw = b""
        answer = _decode(raw, exc.headers.get("Content-Type", "") if exc.headers else "")
        if isinstance(answer, dict) and answer.get("error"):
            return DutlabError(method, url_path, exc.code, to_text(answer["error"]), to_text(answer.get("path") or ""))
        message = to_text(answer).strip() if answer else to_text(exc.reason)
        return DutlabError(method, url_path, exc.code, message[:500])

    def get_or_none(self, path, query=None):
        """The object at `path`, or None when the server answers 404."""
        try:
            return self.request("GET", path, query=query)
        except DutlabError as exc:
            if exc.status == 404:
                return None
            raise

    def get_all(self, path, query=None):
        """Every row of a paged list (``{"count": N, "results": [...]}``)."""
        rows = []
        query = dict(query or {})
        while True:
            query.update(limit=PAGE_SIZE, offset=len(rows))
            page = self.request("GET", path, query=query)
            rows.extend(page.get("results", []))
            if not page.get("results") or len(rows) >= page.get("count", 0):
                return rows


def _decode(raw, content_type):
    if not raw:
        return None
    text = to_text(raw, errors="surrogate_or_replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def object_path(endpoint, name):
    """``<endpoint>/<name>`` with the name quoted (a hostname may hold '+')."""
    return "%s/%s" % (endpoint, quote(to_text(name), safe=""))


class _DutlabObjectModule:
    """One REST object with ``state: present|absent``, for modules of about 40 lines.

    A subclass sets the class attributes and overrides hooks where its API differs; `execute()`
    runs read → create / update / delete, honours check mode, builds the diff and exits.
    """

    #: collection path under /api/v1/, e.g. "devices"
    api_endpoint = ""
    #: key of the object in the module result, e.g. "device"
    result_key = ""
    #: option that names the object, e.g. "hostname"
    identifier = ""
    #: options sent to the API (under `api_names[option]`, else under the option's name)
    fields = ()
    #: option -> API field where the names differ
    api_names = MappingProxyType({})
    #: fields whose value is a list compared without regard to order
    list_fields = ()

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.client = DutlabClient.from_module(module)

    # naming ###########################################################################

    @property
    def name(self):
        return self.params[self.identifier]

    def api_name(self, option):
        return self.api_names.get(option, option)

    def path(self):
        return object_path(self.api_endpoint, self.name)

    def managed(self):
        """API field names this module can set: the diff shows these and the identifier."""
        return [self.api_name(self.identifier)] + [self.api_name(o) for o in self.fields]

    # hooks ############################################################################

    def read(self):
        """The object as the API shows it, or None when it does not exist."""
        return self.client.get_or_none(self.path())

    def desired(self):
        """API field -> wanted value, for the options the user gave (None means "leave it")."""
        return dict((self.api_name(o), self.params[o]) for o in self.fields if self.params.get(o) is not None)

    def same(self, field, current, wanted):
        if field in self.list_fields:
            return sorted(current or []) == sorted(wanted or [])
        if wanted in ("", None) and current in ("", None):
            return True
        return current == wanted

    def changes(self, before, desired):
        return dict((k, v) for k, v in desired.items() if not self.same(k, before.get(k), v))

    def create(self, desired):
        body = dict(desired)
        body[self.api_name(self.identifier)] = self.name
        if self.module.check_mode:
            return body
        return self.client.request("POST", self.api_endpoint, body=body)

    def update(self, before, changes):
        if self.module.check_mode:
            return dict(before, **changes)
        return self.client.request("PATCH", self.path(), body=changes)

    def delete(self, before):
        if not self.module.check_mode:
            self.client.request("DELETE", self.path())

    def extra_results(self, operation, after):
        """More keys for the result (a token shown once, ...)."""
        return {}

    # the state machine ################################################################

    def execute(self):
        try:
            result = self.run()
        except DutlabError as exc:
            self.fail(exc)
        self.module.exit_json(**result)

    def fail(self, exc):
        """fail_json naming the operation, and the object when the URL does not."""
        msg = str(exc)
        if object_path(self.api_endpoint, self.name) not in exc.path:
            msg += "; %s '%s'" % (self.result_key.replace("_", " "), self.name)
        self.module.fail_json(msg=msg, status=exc.status, error=exc.message, field=exc.field)

    def run(self):
        before = self.read()
        after = None
        operation = OPERATION_NONE
        if self.params["state"] == STATE_ABSENT:
            if before is not None:
                self.delete(before)
                operation = OPERATION_REMOVE
        elif before is None:
            after = self.create(self.desired())
            operation = OPERATION_CREATE
        else:
            changes = self.changes(before, self.desired())
            after = before
            if changes:
                after = self.update(before, changes)
                operation = OPERATION_UPDATE
        result = dict(changed=operation != OPERATION_NONE, operation=operation)
        if after is not None:
            result[self.result_key] = after
        result.update(self.extra_results(operation, after))
        if self.module._diff:
            result["diff"] = dict(before=self.comparable(before), after=self.comparable(after))
        return result

    def comparable(self, obj):
        """The managed fields of `obj` (lists sorted): what the diff shows."""
        if not obj:
            return {}
        out = {}
        for field in self.managed():
            if field in obj:
                value = obj[field]
                out[field] = sorted(value) if field in self.list_fields and value else value
        return out
