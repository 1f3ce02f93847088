"""REST route modules. Each keeps a `Routes` table that `app.make_app` installs.

(Bottle's `merge` would keep the sub-app's plugins, not ours, hence a plain table.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bottle import Bottle

Handler = Callable[..., Any]


class Routes:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[tuple[str, str, Handler, dict[str, Any]]] = []

    def route(self, path: str, method: str = "GET", **config: Any) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.items.append((self.prefix + path, method, fn, config))
            return fn

        return register

    def get(self, path: str, **config: Any) -> Callable[[Handler], Handler]:
        return self.route(path, "GET", **config)

    def post(self, path: str, **config: Any) -> Callable[[Handler], Handler]:
        return self.route(path, "POST", **config)

    def put(self, path: str, **config: Any) -> Callable[[Handler], Handler]:
        return self.route(path, "PUT", **config)

    def patch(self, path: str, **config: Any) -> Callable[[Handler], Handler]:
        return self.route(path, "PATCH", **config)

    def delete(self, path: str, **config: Any) -> Callable[[Handler], Handler]:
        return self.route(path, "DELETE", **config)

    def install(self, app: Bottle) -> None:
        for path, method, fn, config in self.items:
            app.route(path, method, fn, **config)
