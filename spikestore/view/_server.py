"""Running the viewer: a token, a listening socket on 127.0.0.1, and uvicorn.

:func:`serve` blocks until interrupted; :class:`Viewer` runs the same server in a
thread of the caller's process (tests, notebooks) and stops it on :meth:`Viewer.close`.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import socket
import threading
import time
from typing import Any

from ._app import make_app
from ._data import ViewData

__all__ = ["serve", "Viewer", "require", "DEFAULT_PORT"]

#: The first port tried; the next nine are tried when it is taken.
DEFAULT_PORT = 8765


def require() -> None:
    """Raise ImportError naming what is missing when the ``view`` extra is not installed."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"spikestore view needs the view extra ({', '.join(missing)} not installed): "
            "pip install 'spikestore[view]'"
        )


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host`` at ``port`` (0: any free port), else on one of the
    next nine ports when ``port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = [port] if port == 0 else list(range(port, port + 10))
    last: OSError | None = None
    for p in tries:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, p))
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
    raise OSError(
        errno.EADDRINUSE, f"ports {tries[0]} to {tries[-1]} on {host} are taken; pass --port"
    ) from last


def _url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def _server(data: ViewData, sock: socket.socket, token: str, log_level: str) -> Any:
    import uvicorn

    config = uvicorn.Config(
        make_app(data, token), log_level=log_level, access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)


class Viewer:
    """The viewer running in a background thread of this process.

    Parameters
    ----------
    path : str or os.PathLike
        The store (a folder or a URL).
    host, port : str, int
        Where to listen (default 127.0.0.1, any free port).
    token : str, optional
        The token the URL carries (default: a new random one).
    storage_options : dict, optional
        For a URL: the object store's endpoint and credentials.

    Examples
    --------
    >>> with Viewer("demo.spikes") as v:   # doctest: +SKIP
    ...     print(v.url)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        require()
        self.data = ViewData(path, storage_options)
        self.token = token or secrets.token_hex(24)
        self._sock = _listen(host, port)
        self.host, self.port = host, self._sock.getsockname()[1]
        self.url = _url(host, self.port, self.token)
        self._server = _server(self.data, self._sock, self.token, "warning")
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True,
            name="spikestore-view",
        )  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the viewer of {path} did not start within 10 s")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the server and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
    announce: Any = None,
) -> None:
    """Serve the viewer of the store at ``path`` until interrupted (Ctrl-C).

    Listens on ``host`` (default 127.0.0.1: this machine only) at ``port`` (or one of
    the next nine when it is taken; 0 for any free port) and calls ``announce`` with
    the page's URL, which carries the token (a new random one unless given).
    """
    require()
    data = ViewData(path, storage_options)
    token = token or secrets.token_hex(24)
    sock = _listen(host, port)
    url = _url(host, sock.getsockname()[1], token)
    if announce is None:
        announce = functools.partial(print, flush=True)
    announce(f"spikestore view: serving {data.path} (read-only) at\n    {url}\nCtrl-C stops.")
    try:
        _server(data, sock, token, "warning").run(sockets=[sock])
    finally:
        sock.close()
