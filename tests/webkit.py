"""A browser's side of the in-process app: cookies kept between calls, forms sent with their CSRF
token (read from the page, as a browser submits the form it was given)."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

#: a form and its body: the CSRF token is read from the form that is sent, as a browser sends it
FORM = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*>(.*?)</form>', re.S)
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


class Browser:
    """Calls `app` (conftest's WsgiClient) as one browser: no token, its own cookie jar."""

    def __init__(self, app) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}
        self.last_set_cookie: list[str] = []

    def _headers(self, extra: dict | None = None) -> dict:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _keep(self, answer) -> None:
        self.last_set_cookie = [c for c in answer.headers.get("Set-Cookie", "").split("\n") if c]
        for raw in self.last_set_cookie:
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def get(self, path: str):
        answer = self.app.api("GET", path, token=None, headers=self._headers())
        self._keep(answer)
        return answer

    def csrf(self, page: str = "/") -> str:
        """This browser's CSRF token, read from any form on `page` (for a POST its page offers no form for)."""
        found = CSRF_FIELD.search(self.get(page).text)
        assert found and found.group(1), f"no CSRF token on {page}"
        return found.group(1)

    def post(self, path: str, fields: dict, csrf_from: str | None = None):
        """POST the form whose action is `path` on the page `csrf_from` (default "/"), with the CSRF
        token that form carries."""
        fields = dict(fields)
        if "csrf" not in fields:
            page = self.get(csrf_from or "/")
            forms = [body for action, body in FORM.findall(page.text) if action == path.split("?")[0]]
            found = CSRF_FIELD.search(forms[0]) if forms else None
            assert found and found.group(1), f"no form for {path} with a CSRF token on {csrf_from or '/'}"
            fields["csrf"] = found.group(1)
        answer = self.app.api("POST", path, urlencode(fields), token=None,
                              headers=self._headers({"Content-Type": "application/x-www-form-urlencoded"}))
        self._keep(answer)
        return answer

    def login(self, username: str, password: str):
        answer = self.post("/accounts/login/", {"username": username, "password": password, "next": "/"},
                           csrf_from="/accounts/login/")
        assert answer.status == 303, answer.text[:300]
        return answer
