"""The viewer's HTTP side: the token, read-only routes, errors as JSON (Starlette's
test client; no browser)."""

from __future__ import annotations

import warnings

import pytest
import torch

import spikestore

pytest.importorskip("starlette", reason="the view extra (starlette) is not installed")
pytest.importorskip("httpx", reason="starlette's test client needs httpx")
pytest.importorskip("plotly", reason="the view extra (plotly) is not installed")

with warnings.catch_warnings():  # starlette's advice to install httpx2 instead
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from spikestore.view import ViewData, make_app
from spikestore.view._app import COOKIE, HEADER

TOKEN = "t0ken-for-tests"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    path = tmp_path_factory.mktemp("app") / "run.spikes"
    g = torch.Generator().manual_seed(0)
    with spikestore.StoreWriter(path) as w:
        for _ in range(40):
            w.append("output", "lif", (torch.rand(16, generator=g) < 0.2).float())
    return TestClient(make_app(ViewData(path), TOKEN))


ROUTES = [
    "/",
    "/static/view.js",
    "/static/plotly.min.js",
    "/api/layers",
    "/api/status",
    "/api/overview?monitor=output&layer=lif",
    "/api/raster?monitor=output&layer=lif",
    "/api/traces?monitor=output&layer=lif&neurons=1",
]


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_a_request_without_the_token(client: TestClient, route: str) -> None:
    client.cookies.clear()
    assert client.get(route).status_code == 403
    sep = "&" if "?" in route else "?"
    assert client.get(f"{route}{sep}token=wrong").status_code == 403
    assert client.get(route, headers={HEADER: TOKEN[:-1]}).status_code == 403
    assert client.get(f"{route}{sep}token={TOKEN}").status_code == 200
    assert client.get(route, headers={HEADER: TOKEN}).status_code == 200


def test_the_page_sets_a_cookie_that_later_requests_carry(client: TestClient) -> None:
    client.cookies.clear()
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "plotly.min.js" in page.text
    assert COOKIE in page.cookies
    assert client.get("/static/view.css").status_code == 200
    assert client.get("/api/layers").json()["layers"][0]["layer"] == "lif"
    client.cookies.clear()


def test_errors_are_json_with_their_status(client: TestClient) -> None:
    h = {HEADER: TOKEN}
    r = client.get("/api/overview?monitor=output&layer=nope", headers=h)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = client.get("/api/overview?monitor=output&layer=lif&start=abc", headers=h)
    assert r.status_code == 400 and "start" in r.json()["error"]
    r = client.get("/api/overview?layer=lif", headers=h)
    assert r.status_code == 400 and "monitor" in r.json()["error"]
    r = client.get("/api/traces?monitor=output&layer=lif&neurons=1,x", headers=h)
    assert r.status_code == 400
    assert client.get("/static/..%2F_data.py", headers=h).status_code == 404
    assert client.get("/static/index.html", headers=h).status_code == 404


def test_only_reads_are_served(client: TestClient) -> None:
    for route in ("/", "/api/layers"):
        assert client.post(f"{route}?token={TOKEN}").status_code == 405
        assert client.delete(f"{route}?token={TOKEN}").status_code == 405


def test_plotly_is_served_from_the_installed_package(client: TestClient) -> None:
    r = client.get("/static/plotly.min.js", headers={HEADER: TOKEN})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert len(r.content) > 1_000_000
