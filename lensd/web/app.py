"""The dashboard as an ASGI app (Starlette), read-only, every route behind the token.

Reads run in worker threads, one at a time per database connection (``Reads``), so a slow
histogram never blocks the event loop that serves the overview's refreshes; plots are drawn in
threads too, one at a time (matplotlib figures are not shared between threads).
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lensd.errors import LensdError, QueryError, QuerySyntaxError
from lensd.web import pages, plots
from lensd.web.auth import TokenGuard
from lensd.web.data import LocalSource, Query, parse_query

T = TypeVar("T")
STATIC: Final = Path(__file__).parent / "static"
PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
MAX_IMAGES: Final = 24
CORNER_SAMPLES: Final = 200_000  # more are drawn as a weighted random subset (histograms look the same)
HEADERS: Final = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-store",
}


class Reads:
    """The source's calls, each in a worker thread, one at a time."""

    def __init__(self, source: LocalSource) -> None:
        self.source = source
        self.label = source.label
        self._limiter = anyio.CapacityLimiter(1)
        self._plotting = anyio.CapacityLimiter(1)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=self._limiter)

    async def plot(self, function: Callable[..., str], *args: Any) -> str:
        return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=self._plotting)


def _json(data: Any, status: int = 200) -> Response:
    """Strict JSON (RFC 8259: NaN and infinities become null, as ``lensd export`` writes them)."""
    from lensd.cli.export import strict_json

    body = json.dumps(strict_json(data), default=_plain, allow_nan=False)
    return Response(body, status, media_type="application/json", headers=HEADERS)


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers=HEADERS)


def _query(request: Request) -> Query:
    p = request.query_params
    return parse_query(p.get("q", ""), p.get("sort", ""), p.get("desc", "") == "1")


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(request.query_params.get(name, default))))
    except ValueError:
        return default


def make_app(source: LocalSource, token: str, secure_cookie: bool = False) -> TokenGuard:
    reads = Reads(source)

    async def overview(request: Request) -> Response:
        return _html(pages.overview(await reads.run(source.overview), reads.label))

    async def overview_partial(request: Request) -> Response:
        return _html(pages.overview_fragment(await reads.run(source.overview)))

    async def overview_json(request: Request) -> Response:
        return _json(await reads.run(source.overview))

    async def _page(request: Request) -> tuple[Query, list[Any], int, int, int]:
        query = _query(request)
        page, size = _int(request, "page", 1, 1, 10**9), _int(request, "size", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        if query.error:
            return query, [], 0, page, size

        def read() -> tuple[list[Any], int]:
            return source.page(query.state, (page - 1) * size, size), source.count(query.state)
        try:
            rows, total = await reads.run(read)
        except QueryError as exc:
            return Query(query.text, query.state, str(exc)), [], 0, page, size
        return query, rows, total, page, size

    async def fits(request: Request) -> Response:
        query, rows, total, page, size = await _page(request)
        status = 400 if query.error else 200
        return _html(pages.fits(dict(request.query_params), query.error, rows, total, page, size, reads.label), status)

    async def fits_json(request: Request) -> Response:
        query, rows, total, page, size = await _page(request)
        if query.error:
            return _json({"error": query.error, "position": query.position}, 400)
        items = [{c: getattr(f, c) for c in pages.FIT_COLUMNS} for f in rows]
        return _json({"total": total, "page": page, "size": size, "fits": items})

    async def export(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        query = _query(request)
        if query.error:
            return Response(query.error + "\n", 400, media_type="text/plain", headers=HEADERS)
        spill = tempfile.TemporaryFile("w+b")  # noqa: SIM115 - closed when the response ends

        def write() -> None:
            import io

            from lensd.cli import export as exporting

            out = io.TextIOWrapper(spill, encoding="utf-8", newline="", write_through=True)
            exporting.write(source.export_rows(query.state), fmt, out)
            out.detach()
            spill.seek(0)
        await reads.run(write)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while block := await anyio.to_thread.run_sync(spill.read, 1 << 16):
                    yield block
            finally:
                spill.close()
        kind = "text/csv" if fmt == "csv" else "application/json"
        disposition = {"content-disposition": f'attachment; filename="lensd-fits.{fmt}"'}
        return StreamingResponse(chunks(), media_type=kind, headers={**HEADERS, **disposition})

    async def fit(request: Request) -> Response:
        fit_id = request.path_params.get("fit_id", request.query_params.get("id", ""))
        found = await reads.run(source.fit, fit_id)
        if found is None:
            return _html(pages.error_page(404, f"no fit {fit_id!r}", reads.label), 404)
        sections = await _fit_sections(reads, source, found)
        return _html(pages.fit_page(found, sections, reads.label))

    async def fit_file(request: Request) -> Response:
        found = await reads.run(source.fit, request.query_params.get("id", ""))
        name = request.query_params.get("name", "")
        value = None if found is None else await reads.run(found.file, name)
        if value is None:
            return Response("no such file\n", 404, media_type="text/plain", headers=HEADERS)
        return _json(value)

    async def fit_image(request: Request) -> Response:
        found = await reads.run(source.fit, request.query_params.get("id", ""))
        wanted = request.query_params.get("path", "")
        images = [] if found is None else await anyio.to_thread.run_sync(image_files, found.source)
        for root, relative in images:
            if relative == wanted:
                data = await anyio.to_thread.run_sync((root / relative).read_bytes)
                return Response(data, media_type="image/png", headers=HEADERS)
        return Response("no such image\n", 404, media_type="text/plain", headers=HEADERS)

    async def plot(request: Request) -> Response:
        p = dict(request.query_params)
        query = _query(request)
        keys = await reads.run(plot_keys, source)
        p.setdefault("x", next((k for k in keys if k.startswith("model.")), "max_log_likelihood"))
        if query.error:
            return _html(pages.plot_page(p, query.error, "", 0, keys, reads.label), 400)
        try:
            result = await reads.run(source.histogram, query.state, p["x"], p.get("colour", ""), p.get("y", ""))
        except QuerySyntaxError as exc:
            return _html(pages.plot_page(p, exc.pointed(), "", 0, keys, reads.label), 400)
        except QueryError as exc:
            return _html(pages.plot_page(p, str(exc), "", 0, keys, reads.label), 400)
        try:
            svg = await reads.plot(plots.histogram, result) if result["series"] else "<p>no values to plot</p>"
        except (ValueError, ArithmeticError) as exc:  # values matplotlib cannot draw: say so, not a 500
            message = f"cannot draw this plot: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            return _html(pages.plot_page(p, message, "", 0, keys, reads.label), 400)
        return _html(pages.plot_page(p, None, svg, result["total"], keys, reads.label, result["left_out"]))

    async def histogram_json(request: Request) -> Response:
        query = _query(request)
        p = request.query_params
        if query.error:
            return _json({"error": query.error}, 400)
        try:
            result = await reads.run(source.histogram, query.state, p.get("x", "max_log_likelihood"),
                                     p.get("colour", ""), p.get("y", ""))
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(result)

    async def failure(request: Request, exc: Exception) -> Response:
        message = str(exc) if isinstance(exc, LensdError) else "internal error (see the log)"
        return _html(pages.error_page(500, message, reads.label), 500)

    routes = [
        Route("/", overview), Route("/partial/overview", overview_partial), Route("/api/overview", overview_json),
        Route("/fits", fits), Route("/api/fits", fits_json),
        Route("/export.{fmt:str}", _only_formats(export)),
        Route("/fit/{fit_id:path}", fit), Route("/fit", fit),  # /fit?id=: the ids "." and ".."
        Route("/fitfile", fit_file), Route("/fitimage", fit_image),
        Route("/plot", plot), Route("/api/histogram", histogram_json),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, exception_handlers={LensdError: failure, Exception: failure})
    return TokenGuard(_timed(app), token, secure_cookie)


def _timed(app: Any) -> Any:
    """Add ``Server-Timing: app;dur=<ms>`` (request in to response start), for bench/web.py and
    the browser's network panel."""
    import time

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        began = time.perf_counter()

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - began) * 1000:.1f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)
        await app(scope, receive, stamped)
    return timed


def _only_formats(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def checked(request: Request) -> Response:
        if request.path_params["fmt"] not in ("csv", "json"):
            return Response("export as .csv or .json\n", 404, media_type="text/plain", headers=HEADERS)
        return await handler(request)  # type: ignore[no-any-return]
    return checked


def _plain(value: Any) -> Any:
    """numpy arrays of stored files as lists, for JSON."""
    from lensd.cli.export import strict_json

    return strict_json(value.tolist()) if hasattr(value, "tolist") else str(value)


def image_files(source: str | None) -> list[tuple[Path, str]]:
    """PNG images PyAutoFit/PyAutoLens wrote in the fit's output folder (``image/``), if it still exists."""
    if not source:
        return []
    root = Path(source) / "image"
    if not root.is_dir():
        return []
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if p.is_file() and not p.is_symlink())
    return [(root, relative) for relative in found[:MAX_IMAGES]]


def plot_keys(source: LocalSource) -> list[str]:
    """Suggestions for the axes: the parameter paths and info keys of the latest fits."""
    rows = source.rows("SELECT DISTINCT kind, key FROM facts WHERE fit_key IN "
                        "(SELECT fit_key FROM fits ORDER BY fit_key DESC LIMIT 20) AND kind IN (0, 2) "
                        "ORDER BY kind, key", [])
    return [f"model.{key}" if kind == 0 else f'info["{key}"]' for kind, key in rows
            if '"' not in key and "\\" not in key]


async def _fit_sections(reads: Reads, source: LocalSource, fit: Any) -> dict[str, str]:
    from html import escape
    from urllib.parse import urlencode

    samples = await reads.run(lambda: fit.samples)
    history = await reads.run(lambda: fit.progress_history)
    names = await reads.run(source.payload_names, fit)
    children = await reads.run(source.children, fit) if fit.is_grid_search else []
    images = await anyio.to_thread.run_sync(image_files, fit.source)
    sections = {"parameters": pages.parameters(fit.to_dict().get("instance") or {}, fit.model, samples)}
    if samples is not None and len(samples) and samples.paths:
        parameters, weight = samples.parameters, samples.weight
        if len(samples) > CORNER_SAMPLES:
            import numpy as np

            chosen = np.random.default_rng(0).choice(len(samples), CORNER_SAMPLES, replace=False)
            parameters, weight = parameters[chosen], weight[chosen]
        svg = await reads.plot(plots.corner, samples.paths, parameters, weight)
        sections["corner"] = (f'<p>{len(samples)} samples, {len(samples.paths)} free parameters</p>'
                              f'<div class="plot" id="corner-plot">{svg}</div>')
    if history:
        svg = await reads.plot(plots.convergence, [p.time for p in history],
                               [p.max_log_likelihood for p in history], [p.progress for p in history])
        sections["convergence"] = (f'<p><span id="history-points">{len(history)}</span> progress events</p>'
                                   f'<div class="plot" id="convergence-plot">{svg}</div>')
    else:
        sections["convergence"] = "<p>no progress events were recorded for this fit</p>"
    if images:
        sections["images"] = "".join(
            f'<figure><img src="/fitimage?{escape(urlencode({"id": fit.id, "path": rel}))}" alt="{escape(rel)}">'
            f"<figcaption>{escape(rel)}</figcaption></figure>" for _, rel in images)
    files = [n.removeprefix("file:") for n in names if n.startswith("file:")]
    if files:
        sections["files"] = "<ul>" + "".join(
            f'<li><a href="/fitfile?{escape(urlencode({"id": fit.id, "name": n}))}">{escape(n)}</a></li>'
            for n in files) + "</ul>"
    if children:
        sections["children"] = pages.table(["fit", "status", "max log L"], (
            [pages.fit_link(c.id), pages.e(c.status), pages.number(c.max_log_likelihood)] for c in children))
    if fit.summary:
        sections["summary-json"] = pages.json_block(fit.summary)
    return sections
