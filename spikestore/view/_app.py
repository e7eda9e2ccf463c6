"""The viewer's web application: a Starlette app of GET routes over a :class:`ViewData`.

Routes: ``/`` (the page), ``/static/<name>`` (the page's script and style, and
Plotly's ``plotly.min.js`` served from the installed ``plotly`` package, so the page
needs no internet), and ``/api/layers``, ``/api/status``, ``/api/overview``,
``/api/raster``, ``/api/traces`` (JSON). Every request must carry the token: as
``?token=`` or in the ``X-Spikestore-Token`` header; tokens are compared with
:func:`hmac.compare_digest`. Without it the answer is 403. No cookie is ever set (a
cookie ignores ports: the browser would send the token to every other web service on
this host): the page is served with the token written into it (URL-quoted, so it
cannot break out of an attribute), its script and style URLs carry it as ``?token=``
and its script sends it in the header. Only GET and HEAD are served (read-only); a
static name is looked up in a fixed table, never joined to a path.

Every API answer is JSON: a layer, field or rank the store does not have is 404, a
malformed argument (or metadata the reader refuses) 400, a store deleted while viewed
503, a store that cannot be read 500, and any other failure 500 too (one line on the
console, no traceback), each as ``{"error": ...}`` for the page to show. Values JSON
cannot hold (NaN, infinities in a store's attrs) are sent as null.

Starlette runs the routes in its thread pool; :class:`ViewData` serialises them.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import SpikestoreError
from ._data import BadRequest, NotFound, StoreGone, ViewData, json_safe
from ._windows import raster, traces

__all__ = ["make_app", "HEADER", "TOKEN_SLOT"]

HEADER = "x-spikestore-token"
#: Where ``index.html`` takes the token (URL-quoted) when it is served.
TOKEN_SLOT = "{{token}}"

_log = logging.getLogger("spikestore.view")

#: Static files by the name the page asks for: (package file, media type).
_STATIC = {
    "view.js": ("view.js", "text/javascript"),
    "view.css": ("view.css", "text/css"),
}


def _plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly is installed without {path.name}; reinstall plotly")
    return path


def _int(params: Any, name: str, default: int | None = None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or abs(value) > 2**62:
        raise BadRequest(f"{name} must be a finite number, got {text!r}")
    return math.floor(value)


def _dumps(body: Any) -> str:
    """``body`` as strict JSON; where it holds what JSON cannot (NaN, numpy values)
    those are made plain first (:func:`json_safe`), a cost paid only then."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return json.dumps(json_safe(body), allow_nan=False, separators=(",", ":"))


def _name(params: Any, name: str) -> str:
    text = params.get(name)
    if text is None:
        raise BadRequest(f"missing {name}")
    return str(text)


def make_app(data: ViewData, token: str) -> Any:
    """The Starlette application serving ``data``, refusing requests without ``token``."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    if not token:
        raise ValueError("the viewer needs a token")
    static = resources.files(__package__) / "static"
    page = (static / "index.html").read_text(encoding="utf-8")
    # URL-quoted (safe=""): only letters, digits, "_.-~" and %XX, so neither a URL nor
    # the HTML attribute it sits in can be broken out of, whatever token was given.
    page = page.replace(TOKEN_SLOT, quote(token, safe=""))

    def authorised(request: Request) -> bool:
        given = request.query_params.get("token") or request.headers.get(HEADER) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    def refuse() -> Response:
        return JSONResponse(
            {"error": "a valid token is needed: open the URL that `spikestore view` printed"},
            status_code=403,
        )

    def index(request: Request) -> Response:
        if not authorised(request):
            return refuse()
        resp = Response(page, media_type="text/html; charset=utf-8")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    def asset(request: Request) -> Response:
        if not authorised(request):
            return refuse()
        name = request.path_params["name"]
        if name == "plotly.min.js":
            # Private: the token guards it; a day: it changes only when plotly does.
            cache = {"Cache-Control": "private, max-age=86400"}
            return FileResponse(_plotly_js(), media_type="text/javascript", headers=cache)
        entry = _STATIC.get(name)
        if entry is None:
            return JSONResponse({"error": f"no static file {name!r}"}, status_code=404)
        text = (static / entry[0]).read_text(encoding="utf-8")
        return Response(text, media_type=entry[1], headers={"Cache-Control": "no-store"})

    def error(text: str, status: int) -> Response:
        return JSONResponse({"error": " ".join(text.split())}, status_code=status)

    def api(answer: Any) -> Any:
        def endpoint(request: Request) -> Response:
            if not authorised(request):
                return refuse()
            try:
                text = _dumps(answer(request.query_params))
            except NotFound as exc:
                return error(str(exc.args[0]), 404)
            except StoreGone as exc:
                return error(str(exc), 503)
            except (BadRequest, ValueError) as exc:
                return error(str(exc), 400)
            except SpikestoreError as exc:  # a damaged or replaced store: say so
                return error(str(exc), 500)
            except Exception as exc:  # the page shows it; no bare 500
                gone = data.gone() if isinstance(exc, OSError) else None
                if gone is not None:  # deleted between the refresh and a read
                    return error(str(gone), 503)
                what = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                _log.warning("spikestore view: %s failed: %s", request.url.path, what)
                return error(f"{request.url.path} failed: {what}", 500)
            no_store = {"Cache-Control": "no-store"}
            return Response(text, media_type="application/json", headers=no_store)

        return endpoint

    def layers(q: Any) -> Any:
        return data.layers(rank=_int(q, "rank"))

    def status(q: Any) -> Any:
        return data.status(rank=_int(q, "rank"))

    def overview(q: Any) -> Any:
        return data.overview(
            _name(q, "monitor"), _name(q, "layer"), _int(q, "start"), _int(q, "stop"),
            _int(q, "bins", 1000) or 1, rank=_int(q, "rank"), field=_int(q, "field", 0) or 0,
        )  # fmt: skip

    def raster_(q: Any) -> Any:
        lo, hi = _int(q, "lo"), _int(q, "hi")
        return raster(
            data, _name(q, "monitor"), _name(q, "layer"), _int(q, "start"), _int(q, "stop"),
            width=_int(q, "width", 800) or 1, height=_int(q, "height", 300) or 1,
            neurons=None if lo is None or hi is None else (lo, hi),
            rank=_int(q, "rank"), field=_int(q, "field", 0) or 0,
        )  # fmt: skip

    def traces_(q: Any) -> Any:
        text = _name(q, "neurons")
        try:
            ids = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise BadRequest(f"neurons must be integers and commas, got {text!r}") from None
        return traces(
            data, _name(q, "monitor"), _name(q, "layer"), ids, _int(q, "start"), _int(q, "stop"),
            rank=_int(q, "rank"), field=_int(q, "field", 0) or 0,
        )  # fmt: skip

    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/layers", api(layers)),
        Route("/api/status", api(status)),
        Route("/api/overview", api(overview)),
        Route("/api/raster", api(raster_)),
        Route("/api/traces", api(traces_)),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=2048)])
