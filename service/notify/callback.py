"""Callbacks: LAVA's `notify.callback(s)` as HTTP requests, only to hosts the admin allowed.

`callback_allowed_hosts` (shell wildcards on the URL's host name) is checked when the row is
planned and again before each attempt; redirects are not followed (a redirect could lead past
the allow-list). A 2xx answer is delivered, 5xx and network errors are tried again, anything
else is permanent.
"""

from __future__ import annotations

import fnmatch
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit

from .rows import DeliveryError


def refusal(url: str, allowed: list[str]) -> str:
    """'' when the server may call `url`, else the sentence kept on the refused row."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return f"callback URL {url!r} is not an http(s) URL with a host"
    if any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed):
        return ""
    if not allowed:
        return (f"callbacks are not enabled on this server (callback_allowed_hosts is empty); ask an admin to "
                f"allow '{host}'")
    return f"host '{host}' is not in callback_allowed_hosts ({', '.join(allowed)}); ask an admin to allow it"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002 (urllib's signature)
        raise DeliveryError(f"callback {req.full_url} answered {code} with a redirect to {newurl}; callbacks do "
                            "not follow redirects: use the final URL", permanent=True)


_opener = urllib.request.build_opener(_NoRedirect)


def _form(data: dict[str, Any]) -> bytes:
    # LAVA posts the payload's fields as a form; nested values (metadata, results) go as JSON text
    flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else "" if v is None else str(v))
            for k, v in data.items()}
    return urlencode(flat).encode()


def call(url: str, method: str, payload: dict[str, Any] | None, content_type: str, headers: dict[str, str],
         timeout: float) -> int:
    """One callback; return the HTTP status (2xx), or raise DeliveryError."""
    body = None
    hdrs = {"User-Agent": "dutlab-notify", **headers}
    if method == "POST" and payload is not None:
        if content_type == "json":
            body, hdrs["Content-Type"] = json.dumps(payload).encode(), "application/json"
        else:
            body, hdrs["Content-Type"] = _form(payload), "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with _opener.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return answer.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"callback {method} {url} answered HTTP {exc.code} {exc.reason}",
                            permanent=exc.code < 500) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, DeliveryError):
            raise reason from None
        raise DeliveryError(f"callback {method} {url}: {reason}") from None
    except (OSError, ValueError) as exc:
        raise DeliveryError(f"callback {method} {url}: {exc or type(exc).__name__}") from None
