"""The viewer in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium loads the page over a store that a writer is
appending to, and checks that the layers are listed, the charts drawn, and new steps
shown as they are committed. Screenshots go to pytest's ``tmp_path`` (and, when the
environment variable ``SPIKESTORE_VIEW_SCREENSHOTS`` names a folder, there too).

Skipped, saying why, where the view extra, selenium, chromium or chromedriver is
missing; ``.ci/run`` installs them all.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore

pytest.importorskip("starlette", reason="the view extra (starlette) is not installed")
pytest.importorskip("uvicorn", reason="the view extra (uvicorn) is not installed")
pytest.importorskip("plotly", reason="the view extra (plotly) is not installed")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)

from spikestore.view import Viewer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    why = (
        "no headless browser: install Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI") == "true":  # .ci/run installs them: a skip there hides a gap
        pytest.fail(f"{why}; .ci/run should have installed them", pytrace=False)
    pytest.skip(why, allow_module_level=True)

T, N = 4, 64


class LiveRun:
    """A writer appending LIF spikes and membrane potentials ``[T, N]`` in a thread,
    with an ``epoch`` mark every 200 steps, until stopped."""

    def __init__(self, path: Path, first: int) -> None:
        self.writer = spikestore.StoreWriter(path, flush_interval=0.2, dt=1.0, time_unit="ms")
        self.g = torch.Generator().manual_seed(0)
        self.v = torch.zeros(N)
        self.drive = torch.linspace(0.05, 0.35, N)
        self.step = 0
        for _ in range(first):
            self.record()
        self.writer.flush()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def record(self) -> None:
        if self.step % 200 == 0:
            self.writer.mark(epoch=self.step // 200)
        wave = 1 + 0.8 * torch.sin(torch.tensor(self.step / 60.0))
        vs, ss = [], []
        for _ in range(T):
            noise = 0.15 * torch.randn(N, generator=self.g)
            self.v = 0.85 * self.v + self.drive * wave + noise
            s = (self.v >= 1.0).float()
            vs.append(self.v.clone())
            ss.append(s)
            self.v = self.v * (1 - s)
        self.writer.append("output", "lif1", torch.stack(ss), time_axis=0, dims=("time", "neuron"))
        self.writer.append("v_seq", "lif1", torch.stack(vs), time_axis=0, units="mV")
        self.step += 1

    def run(self) -> None:
        while not self.stop.is_set():
            for _ in range(20):
                self.record()
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.writer.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveRun, Viewer]]:
    run = LiveRun(tmp_path / "live.spikes", first=900)
    viewer = Viewer(tmp_path / "live.spikes")
    run.thread.start()
    try:
        yield run, viewer
    finally:
        viewer.close()
        run.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(pred: Any, timeout: float, what: str) -> Any:
    """``pred()`` once it is truthy. The page rebuilds its layer list as the store grows,
    so an element found a moment ago may be gone: that try counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    out = os.environ.get("SPIKESTORE_VIEW_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)
    return path


def test_the_page_follows_a_store_being_written(live, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    _, viewer = live
    browser.get(viewer.url)

    def rows() -> list[tuple[str, bool]] | None:
        """Each layer row's key and whether it has its sparkline, read in one go."""
        found = browser.find_elements(By.CSS_SELECTOR, "#layers .layer")
        return [
            (e.get_attribute("data-key"), bool(e.find_elements(By.TAG_NAME, "polyline")))
            for e in found
        ] or None

    layers = _wait(rows, 20, "the layers")
    assert [k for k, _ in layers] == ["output/lif1", "v_seq/lif1"]
    _wait(lambda: all(spark for _, spark in rows() or []), 20, "the sparklines")

    def steps() -> int:
        text = browser.find_element(By.ID, "ov-title").get_attribute("data-steps")
        return int(text) if text else 0

    first = _wait(steps, 20, "the overview")
    assert first >= 900
    _wait(lambda: "spikes" in browser.find_element(By.ID, "raster-title").text, 10, "the raster")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#traces .scatterlayer, #traces canvas"),
          10, "the traces")  # fmt: skip
    assert "writer active" in browser.find_element(By.ID, "writer").text
    _shot(browser, tmp_path, "view-live")
    later = _wait(lambda: steps() > first and steps(), 15, "new steps on the page")
    assert later > first
    assert "spikes from output / lif1" in browser.find_element(By.ID, "trace-note").text
    # Zoom into 100 steps: every step its own bin, the raster and traces of that window.
    browser.execute_script("Plotly.relayout('overview', {'xaxis.range': [99.5, 199.5]})")
    _wait(lambda: "every step" in browser.find_element(By.ID, "ov-note").text, 10, "the zoom")
    _wait(lambda: "steps 100\u2013200" in browser.find_element(By.ID, "raster-title").text, 10,
          "the raster of the window")  # fmt: skip
    _shot(browser, tmp_path, "view-zoomed")
    assert browser.find_element(By.ID, "error").text == ""
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


HOSTILE = "<img src=x onerror=alert(1)>"


def test_a_hostile_layer_name_is_text_and_the_page_needs_no_cookie(
    tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    # A store is untrusted: a layer named as HTML, with a damaged summary so that its
    # error (which names it) is shown; and layers of 2 neurons, fewer than the 3 that
    # the traces show by default.
    path = tmp_path / "hostile.spikes"
    g = torch.Generator().manual_seed(1)
    with spikestore.StoreWriter(path) as w:
        for _ in range(10):
            w.append("evil", HOSTILE, (torch.rand(4, 10, generator=g) < 0.2).float())
            w.append("output", "small", (torch.rand(2, generator=g) < 0.5).float())
            w.append("v", "small", torch.randn(2, generator=g))
    chunks = [f for f in (path / "evil").rglob("*") if f.is_file() and "summary" in f.parts]
    for f in chunks:
        if "c" in f.parts:
            f.write_bytes(os.urandom(40))
    # Record alert() instead of letting it block the page.
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"},
    )
    with Viewer(path) as viewer:
        browser.get(viewer.url)
        rows = _wait(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#layers .layer") or None,
            20, "the layers",
        )  # fmt: skip
        assert [r.get_attribute("data-key") for r in rows] == [
            f"evil/{HOSTILE}", "output/small", "v/small",
        ]  # fmt: skip
        time.sleep(1)  # an image that fails to load fires onerror within this
        assert browser.execute_script("return window.__alerts") == []
        assert browser.find_elements(By.CSS_SELECTOR, "#layers img") == []
        _wait(
            lambda: "steps 0" in browser.find_element(By.ID, "trace-note").text,
            20, "the traces of a layer of 2 neurons",
        )  # fmt: skip
        _wait(lambda: "spikes" in browser.find_element(By.ID, "raster-title").text, 10,
              "the raster")  # fmt: skip

        def first_row() -> tuple[str, str] | None:
            rows = browser.find_elements(By.CSS_SELECTOR, "#layers .layer")
            if not rows:
                return None
            row = rows[0]
            return (
                row.find_element(By.CLASS_NAME, "lname").text,
                row.find_element(By.CLASS_NAME, "meta").text,
            )

        name, meta = _wait(first_row, 10, "the hostile layer's row")
        assert name == HOSTILE
        assert HOSTILE in meta  # the error names the layer, as text
        # The default neurons are those the layer has: no "out of range".
        assert browser.find_element(By.ID, "trace-neurons").get_attribute("value") == "0,1"
        assert browser.find_element(By.ID, "error").text == ""
        # No cookie: it would go to every other service on 127.0.0.1, whatever its port.
        assert browser.get_cookies() == []
        _shot(browser, tmp_path, "view-hostile")


def test_the_page_follows_a_ranked_store_replaced_by_a_plain_one(
    tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    fixture = Path(__file__).parents[1] / "fixtures" / "store_v1.4_ranked"
    path = tmp_path / "swap.spikes"
    shutil.copytree(fixture, path)
    with Viewer(path) as viewer:
        browser.get(viewer.url)
        _wait(lambda: browser.find_element(By.ID, "rank-box").is_displayed(), 20, "the ranks")
        shutil.rmtree(path)
        with spikestore.StoreWriter(path) as w:
            for _ in range(7):
                w.append("output", "lif", torch.ones(8))

        def keys() -> list[str]:
            rows = browser.find_elements(By.CSS_SELECTOR, "#layers .layer")
            return [r.get_attribute("data-key") for r in rows]

        _wait(lambda: keys() == ["output/lif"], 20, "the plain store's layers")
        assert not browser.find_element(By.ID, "rank-box").is_displayed()
        _wait(lambda: browser.find_element(By.ID, "error").text == "", 10, "no error")
