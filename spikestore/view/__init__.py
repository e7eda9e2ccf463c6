"""A live viewer of a store in the browser (extra ``view``): ``spikestore view PATH``.

A read-only local web server shows the layers of a store in call order with a rate
sparkline each; the chosen layer's rate over steps from the stored summaries
(decimated to min/mean/max per bin, from the whole run down to single steps), with the
run's marks shaded; a raster of the window in view (a density image when there are
more events than pixels); and chosen neurons' membrane traces with their spikes. It
follows a store that is being written and says whether a writer holds it.

Modules, one per role: ``_data`` (the store as JSON: layers, overview, marks, the
writer's state; summaries only), ``_windows`` (the raster and traces of a window:
these decode), ``_app`` (the Starlette routes and the token check), ``_server``
(uvicorn on a socket of 127.0.0.1: :func:`serve`, :class:`Viewer`), and ``static/``
(the page: HTML, JavaScript on Plotly, CSS).

Examples
--------
>>> from spikestore.view import Viewer
>>> with Viewer("demo.spikes") as v:     # doctest: +SKIP
...     print(v.url)                       # open it in a browser
"""

from __future__ import annotations

from ._app import make_app
from ._data import ViewData, decimate, writer_locked
from ._server import DEFAULT_PORT, Viewer, serve
from ._windows import raster, traces

__all__ = [
    "ViewData",
    "Viewer",
    "serve",
    "make_app",
    "decimate",
    "raster",
    "traces",
    "writer_locked",
    "DEFAULT_PORT",
]
