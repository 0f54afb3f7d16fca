"""``OPTIONS`` answers every method its path has.

Litestar 2.25 builds a path's automatic ``OPTIONS`` handler with the first handler registered
there and keeps it when the path's other handlers join, so ``OPTIONS`` on a conversation
answered ``Allow: DELETE, OPTIONS`` although ``GET`` and ``PATCH`` serve it too. This hook
answers ``OPTIONS`` from the app's finished routes instead.
"""

from __future__ import annotations

from litestar import Request, Response
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT


async def answer_options(request: Request) -> Response | None:
    """A Litestar ``before_request`` hook: None (go on) for every other method."""
    if request.method != "OPTIONS":
        return None
    template = request.scope.get("path_template")
    methods = {"OPTIONS"}
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods |= set(route.methods)
    return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(methods))})
