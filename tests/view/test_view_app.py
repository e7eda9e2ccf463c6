"""The viewer's HTTP side: the token, read-only routes, errors as JSON (Starlette's
test client; no browser)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

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
from spikestore.view._app import HEADER

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


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_sets_a_cookie(client: TestClient, route: str) -> None:
    # A cookie ignores ports: the browser would send the token to every local service.
    sep = "&" if "?" in route else "?"
    for r in (client.get(f"{route}{sep}token={TOKEN}"), client.get(route)):
        assert "set-cookie" not in r.headers
    assert not client.cookies


def test_the_page_carries_the_token_in_its_urls_and_a_cookie_is_no_token(
    client: TestClient,
) -> None:
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "{{token}}" not in page.text
    for name in ("view.css", "view.js", "plotly.min.js"):
        assert f'"static/{name}?token={TOKEN}"' in page.text
    assert f'<meta name="spikestore-token" content="{TOKEN}">' in page.text
    assert client.get(f"/static/view.css?token={TOKEN}").status_code == 200
    client.cookies.set("spikestore_view_token", TOKEN)
    try:
        assert client.get("/api/layers").status_code == 403
    finally:
        client.cookies.clear()


def test_a_token_is_quoted_into_the_page(tmp_path: Path) -> None:
    path = tmp_path / "q.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("output", "lif", torch.zeros(4))
    hostile = '"><script>alert(1)</script>&x=1 é'
    c = TestClient(make_app(ViewData(path), hostile))
    page = c.get("/", headers={HEADER: "unused"}, params={"token": hostile}).text
    assert "<script>alert" not in page
    assert "%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E%26x%3D1%20%C3%A9" in page


def _client(path: Path) -> TestClient:
    return TestClient(make_app(ViewData(path), TOKEN), raise_server_exceptions=False)


def _small(path: Path, **kw: object) -> Path:
    with spikestore.StoreWriter(path, **kw) as w:  # type: ignore[arg-type]
        for _ in range(6):
            w.append("output", "lif", torch.ones(3, 4))
            w.append("output", "ok", torch.zeros(3, 4))
    return path


def test_nan_in_the_root_attrs_is_sent_as_null(tmp_path: Path) -> None:
    path = _small(tmp_path / "nan.spikes", attrs={"loss": 1.0, "deep": [{"x": 2.0}]})
    meta = json.loads((path / "zarr.json").read_text())
    attrs = meta["attributes"]["spikestore_run"]["attrs"]
    attrs["loss"], attrs["deep"][0]["x"] = float("nan"), float("-inf")
    (path / "zarr.json").write_text(json.dumps(meta))  # NaN, -Infinity: not JSON
    r = _client(path).get("/api/layers", headers={HEADER: TOKEN})
    assert r.status_code == 200
    body = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert body["attrs"] == {"loss": None, "deep": [{"x": None}]}
    assert [x["layer"] for x in body["layers"]] == ["lif", "ok"]


def test_a_hostile_step_count_is_one_damaged_layer_not_a_failed_page(tmp_path: Path) -> None:
    path = _small(tmp_path / "steps.spikes")
    f = path / "output" / "lif" / "f0" / "zarr.json"
    meta = json.loads(f.read_text())
    meta["attributes"]["spikestore"]["committed_steps"] = 10**12
    f.write_text(json.dumps(meta))
    c = _client(path)
    r = c.get("/api/layers", headers={HEADER: TOKEN})
    assert r.status_code == 200
    body = r.json()
    rows = {x["layer"]: x for x in body["layers"]}
    assert rows["ok"]["kind"] == "spikes" and rows["ok"]["steps"] == 6
    if "lif" in rows:  # listed with its error
        assert rows["lif"]["kind"] is None and "'lif'" in rows["lif"]["error"]
    else:  # or left out by the reader, and named among the damaged parts
        assert any("'lif'" in d for d in body["damaged"])
    r = c.get("/api/overview?monitor=output&layer=lif", headers={HEADER: TOKEN})
    assert r.status_code in (400, 404, 500) and r.json()["error"]


def test_a_layer_out_of_memory_is_listed_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikestore.view import _data

    real = _data.analysis.summary

    def summary(lay: object, *a: object, **k: object) -> object:
        if getattr(lay, "name", None) == "lif":  # as a hostile step count once made it
            raise MemoryError("Unable to allocate 7.28 TiB")
        return real(lay, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(_data.analysis, "summary", summary)
    r = _client(_small(tmp_path / "oom.spikes")).get("/api/layers", headers={HEADER: TOKEN})
    assert r.status_code == 200
    bad, good = r.json()["layers"]
    assert bad["kind"] is None and bad["error"] == (
        "monitor 'output', layer 'lif': MemoryError: Unable to allocate 7.28 TiB"
    )
    assert good["kind"] == "spikes" and good["steps"] == 6 and "error" not in good


def test_an_unexpected_failure_is_a_json_error_not_a_bare_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _small(tmp_path / "bug.spikes")
    data = ViewData(path)

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(data, "status", broken)
    r = TestClient(make_app(data, TOKEN), raise_server_exceptions=False).get(
        "/api/status", headers={HEADER: TOKEN}
    )
    assert r.status_code == 500
    assert r.json() == {"error": "/api/status failed: RuntimeError: a bug"}


def test_a_deleted_store_says_it_is_gone(tmp_path: Path) -> None:
    path = _small(tmp_path / "gone.spikes")
    data = ViewData(path)
    c = TestClient(make_app(data, TOKEN), raise_server_exceptions=False)
    assert c.get("/api/status", headers={HEADER: TOKEN}).status_code == 200
    shutil.rmtree(path)
    data._refreshed = -1e9  # as if REFRESH_EVERY had passed
    for route in ("/api/status", "/api/layers", "/api/overview?monitor=output&layer=lif"):
        r = c.get(route, headers={HEADER: TOKEN})
        assert r.status_code == 503
        assert r.json()["error"].startswith(f"the store at {path} is gone")
    _small(path)  # back: shown again
    assert c.get("/api/layers", headers={HEADER: TOKEN}).json()["layers"][0]["steps"] == 6


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
