"""XML-RPC at /RPC2, as LAVA serves it to lavacli (lava-interfaces.md §1.1).

Authentication happens here, not in AuthPlugin: LAVA answers an unknown user or token with an
HTTP 401 and a Basic challenge before any method runs (lavacli then prints "Unable to
connect"), while application errors are XML-RPC faults inside a 200 answer. The methods live
in `service/rpc/`.
"""

from __future__ import annotations

import gzip
import io
import re
import xmlrpc.client
import zlib
from typing import Any

from bottle import HTTPResponse, request

from .. import auth
from ..errors import ApiError, log_incident
from ..models import User
from ..plugins import parse_authorization
from ..rpc import INTERNAL_ERROR, Call, Fault, dispatch, log, methods
from . import Routes
from .rpc2_request import decode

routes = Routes()
CHALLENGE = 'Basic realm="XML-RPC Authentication token"'
#: largest request after gzip decoding when no caller limit is known (the caller's body limit otherwise)
MAX_REQUEST = 4 * 1024 * 1024


def _plain(status: int, text: str, **headers: str) -> HTTPResponse:
    return HTTPResponse(text + "\n", status=status, headers={"Content-Type": "text/plain; charset=utf-8", **headers})


def _caller() -> User | None:
    """The user of the Basic username:token (or dutlab's `Token <secret>`), None when anonymous."""
    try:
        scheme, secret, username = parse_authorization()
    except ApiError as exc:
        raise _plain(400, f"{exc.message} (XML-RPC takes HTTP Basic username:token)") from None
    if not scheme:
        return None
    if scheme not in ("basic", "token", "bearer"):
        raise _plain(400, f"a {scheme} token cannot call XML-RPC; use HTTP Basic username:token")
    user = auth.user_for_token(secret, username)
    if user is None:
        raise _plain(401, "Invalid token", **{"WWW-Authenticate": CHALLENGE})
    return user


def _body() -> bytes:
    raw = request.body.read()
    limit = request.environ.get("dutlab.body_limit", MAX_REQUEST)  # the caller's (limits.RequestLimitsPlugin)
    if request.get_header("Content-Encoding", "").lower() == "gzip":
        try:
            raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(limit + 1)
        except (OSError, EOFError, zlib.error):
            raise _plain(400, "the request body is not valid gzip") from None
    if len(raw) > limit:
        raise _plain(413, f"XML-RPC requests are limited to {limit} bytes (after gzip decoding)")
    return raw


def _answer(value: Any) -> HTTPResponse:
    try:
        payload = xmlrpc.client.dumps(value if isinstance(value, Fault) else (value,), methodresponse=True,
                                      allow_none=True, encoding="utf-8")
    except (TypeError, OverflowError):  # a value XML-RPC cannot carry: our bug
        incident = log_incident(log, "XML-RPC answer")
        payload = xmlrpc.client.dumps(Fault(INTERNAL_ERROR, f"Internal Server Error (contact server administrator "
                                                            f"for details): incident {incident}"), methodresponse=True)
    return HTTPResponse(payload.encode("utf-8"), status=200,
                        headers={"Content-Type": "application/xml; charset=utf-8"})


@routes.post("/RPC2", skip=["dutlab-auth"])
@routes.post("/RPC2/", skip=["dutlab-auth"])
def rpc2() -> HTTPResponse:
    """lavacli's endpoint: one XML-RPC call per POST."""
    try:
        user = _caller()
        raw = _body()
    except HTTPResponse as response:
        return response
    if not raw.strip():
        return HTTPResponse(status=303, headers={"Location": "/RPC2"})
    call = Call(user=user, settings=request.app.config["dutlab.settings"])
    try:
        params, name = decode(raw)
        return _answer(dispatch(call, name, params))
    except Fault as fault:
        return _answer(fault)


@routes.get("/RPC2", skip=["dutlab-auth"])
@routes.get("/RPC2/", skip=["dutlab-auth"])
def rpc2_help() -> HTTPResponse:
    """What a browser gets at /RPC2: the methods and how to call them."""
    lines = ["dutlab XML-RPC (LAVA-compatible; point lavacli at this URL, see docs/lava-migration.md)", ""]
    for name, method in sorted(methods().items()):
        first = method.help.splitlines()[0] if method.help else ""
        lines.append(f"{name}({', '.join(p.name for p in method.params)})  {first}")
    return _plain(200, "\n".join(lines))


@routes.get("/scheduler/job/<job_id>")
def job_page(job_id: str) -> HTTPResponse:
    """`lavacli jobs submit --url` prints LAVA's job page URL; send it to the job's page."""
    if not re.fullmatch(r"\d{1,18}(\.\d{1,6})?", job_id):  # a job number or a MultiNode sub-id
        return _plain(404, f"no job '{job_id[:40]}': job ids are numbers, or sub-ids such as 12.1")
    return HTTPResponse(status=302, headers={"Location": f"/jobs/{job_id}"})
