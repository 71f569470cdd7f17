"""The UI's routes: four static pages, their scripts, and the JSON API they read.

Pages are fixed files (no templating): each script reads the API and writes every run name,
tag and value with ``textContent``. Only the files listed in ``STATIC_FILES`` are served, read
from the package when the app is built; the API reads only the source it was given.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .downsample import DEFAULT_MAX_POINTS, LIMIT_MAX_POINTS
from .security import AccessControl
from .sources import NotDeletable, RunSource, SourceError, UnknownRun

#: name -> content type; nothing else under /static/ (or anywhere) is served.
STATIC_FILES = {
    "app.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "runs.js": "text/javascript; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
    "compare.js": "text/javascript; charset=utf-8",
    "table.js": "text/javascript; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
PAGES = ("index.html", "run.html", "compare.html", "table.html")
#: Rows a table page asks for at once (and the most one answer holds).
TABLE_PAGE_ROWS = 50
LIMIT_TABLE_ROWS = 1_000
_NO_STORE = {"cache-control": "no-store"}


def _read_static() -> dict[str, bytes]:
    folder = resources.files("tplr_metrics.ui").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in (*STATIC_FILES, *PAGES)}


class SegmentPaths:
    """Route on the path as sent, one segment at a time: a run id or table name holding "/"
    arrives as %2F, which the server would decode into a separator. Each segment is kept
    percent-encoded for routing; :func:`_param` decodes it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            raw = scope["raw_path"].decode("latin-1").split("?", 1)[0]
            scope = {**scope, "path": "/".join(quote(unquote(part), safe="") for part in raw.split("/"))}
        await self.app(scope, receive, send)


def _param(request: Request, name: str) -> str:
    return unquote(request.path_params[name])


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_NO_STORE)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError: a 400 below
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def create_app(source: RunSource, *, token: str | None, loopback: bool) -> Starlette:
    files = _read_static()

    def page(name: str) -> Response:
        return Response(files[name], media_type="text/html; charset=utf-8", headers=_NO_STORE)

    async def index(request: Request) -> Response:
        return page("index.html")

    async def run_page(request: Request) -> Response:
        return page("run.html")

    async def compare_page(request: Request) -> Response:
        return page("compare.html")

    async def table_page(request: Request) -> Response:
        return page("table.html")

    async def static(request: Request) -> Response:
        name = _param(request, "name")
        if name not in STATIC_FILES:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(files[name], media_type=STATIC_FILES[name])

    def answer(work: Any, run_id: str | None = None) -> JSONResponse:
        """Run a source call; its failures become JSON errors with the right status. An answer
        about one run's points says when they come from a preview (``partial``)."""
        try:
            body = work()
            if run_id is not None:
                body["partial"] = source.progress(run_id)
            return JSONResponse(body, headers=_NO_STORE)
        except UnknownRun as exc:
            return _error(404, str(exc))
        except NotDeletable as exc:
            return _error(409, str(exc))
        except SourceError as exc:
            return _error(503, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))

    # Sync endpoints: Starlette runs them in its thread pool, so SQLite never blocks the loop.
    def api_runs(request: Request) -> JSONResponse:
        return answer(lambda: {"source": source.describe(), "deletable": source.deletable, "runs": source.runs()})

    def api_run(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        return answer(lambda: {**source.run(run_id), "deletable": source.deletable})

    def api_delete(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        return answer(lambda: {"run_id": run_id, "deleted_points": source.delete(run_id)})

    def api_metrics(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        return answer(lambda: {"run_id": run_id, "metrics": source.metrics(run_id)}, run_id)

    def api_series(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")

        def read() -> dict[str, Any]:
            metric = request.query_params.get("metric")
            if not metric:
                raise ValueError("name a metric: ?metric=measurement.field")
            max_points = _int_param(request, "max_points", DEFAULT_MAX_POINTS, 3, LIMIT_MAX_POINTS)
            window = _int_param(request, "window", 10, 1, 10_000)
            smoothing = request.query_params.get("smoothing") or None
            if smoothing == "none":
                smoothing = None
            x = request.query_params.get("x", "step")
            return {"run_id": run_id, **source.series(run_id, metric, x, max_points, smoothing, window)}

        return answer(read, run_id)

    def api_tables(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        return answer(lambda: {"run_id": run_id, "tables": source.tables(run_id)}, run_id)

    def api_artifacts(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        return answer(lambda: {"run_id": run_id, "artifacts": source.artifacts(run_id)}, run_id)

    def api_table(request: Request) -> JSONResponse:
        run_id = _param(request, "run_id")
        name = _param(request, "name")

        def read() -> dict[str, Any]:
            offset = _int_param(request, "offset", 0, 0, 10**9)
            limit = _int_param(request, "limit", TABLE_PAGE_ROWS, 1, LIMIT_TABLE_ROWS)
            version = _int_param(request, "version", -1, -(10**9), 10**9)
            query = request.query_params.get("q", "")
            return {"run_id": run_id, **source.table(run_id, name, offset, limit, query, version)}

        return answer(read, run_id)

    routes = [
        Route("/", index),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/tables/{name}", table_page),
        Route("/compare", compare_page),
        Route("/static/{name}", static),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run, methods=["GET"]),
        Route("/api/runs/{run_id}", api_delete, methods=["DELETE"]),
        Route("/api/runs/{run_id}/metrics", api_metrics),
        Route("/api/runs/{run_id}/series", api_series),
        Route("/api/runs/{run_id}/tables", api_tables),
        Route("/api/runs/{run_id}/artifacts", api_artifacts),
        Route("/api/runs/{run_id}/tables/{name}", api_table),
    ]
    middleware = [Middleware(AccessControl, token=token, loopback=loopback), Middleware(SegmentPaths)]
    return Starlette(routes=routes, middleware=middleware)


__all__ = ["STATIC_FILES", "create_app"]
