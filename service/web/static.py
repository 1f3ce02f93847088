"""/static/dutlab.css and /static/dutlab.js: the pages' style and their one script (same origin,
so the Content-Security-Policy allows them and nothing inline)."""

from __future__ import annotations

from pathlib import Path

from bottle import HTTPResponse, static_file

from ..api import Routes

routes = Routes("/static")
FOLDER = Path(__file__).parent / "static"


def _serve(name: str, mimetype: str) -> HTTPResponse:
    answer = static_file(name, root=str(FOLDER), mimetype=mimetype, charset="utf-8")
    answer.set_header("Cache-Control", "public, max-age=300")
    return answer


@routes.get("/dutlab.css")
def css() -> HTTPResponse:
    """The pages' style."""
    return _serve("dutlab.css", "text/css")


@routes.get("/dutlab.js")
def js() -> HTTPResponse:
    """The log viewer's live follow and level filter."""
    return _serve("dutlab.js", "text/javascript")
