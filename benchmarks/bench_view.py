"""The viewer at scale: the overview of a 1,000,000-step store and raster windows.

    python benchmarks/bench_view.py                 # 1,000,000 steps (about 1 minute to build)
    python benchmarks/bench_view.py --steps 100000  # smaller
    python benchmarks/bench_view.py --browser       # also the page in headless Chromium

Builds (once, kept in ``--dir``) a store of ``--steps`` steps of one layer of 64 neurons
(Bernoulli spikes, p = 0.05, an ``epoch`` mark every 100,000 steps) and a ``v`` layer of
the same shape every 100th step, then times, medians of ``--repeats``:

- ``overview, cold``: a new viewer (``ViewData``) answers ``/api/layers`` and the
  whole-run ``/api/overview`` at 1,000 bins: what the page's first load asks for, every
  summary read from disk, nothing decoded;
- ``overview, warm``: the same two answers from a viewer that has read the store
  before (what each refresh and zoom asks), and a zoomed window of 10,000 steps;
- ``raster``: windows of 2,000 steps (drawn spike by spike) and 20,000 steps (a
  density image) for a 1,000 x 300 pixel chart, at random places in the run;
- ``http``: the same through the real server (uvicorn, JSON over a socket);
- ``--browser``: the page loaded in headless Chromium until the overview, raster and
  traces are drawn (seconds from navigation).

Targets (issue 25): the overview of 1,000,000 steps renders in about a second; a raster
window in under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spikestore
from spikestore.view import ViewData, Viewer, raster

N = 64


def build(path: Path, steps: int) -> None:
    if (path / "done").exists():
        s = spikestore.open(path)
        if len(s["output"]["lif1"]) == steps:
            return
    shutil.rmtree(path, ignore_errors=True)
    g = torch.Generator().manual_seed(0)
    pool = (torch.rand(4096, N, generator=g) < 0.05).float()
    vpool = torch.randn(64, N, generator=g)
    t = time.perf_counter()
    with spikestore.StoreWriter(path, dt=1.0, time_unit="ms") as w:
        for i in range(steps):
            if i % 100_000 == 0:
                w.mark(epoch=i // 100_000)
            w.append("output", "lif1", pool[i % 4096])
            if i % 100 == 0:
                w.append("v", "lif1", vpool[(i // 100) % 64])
    (path / "done").write_text("ok")
    print(f"built {steps:,} steps in {time.perf_counter() - t:.0f} s: {path}")


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def http_get(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url, timeout=60).read())


def browser_seconds(url: str, repeats: int) -> tuple[float, float] | None:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        print("browser: selenium is not installed")
        return None
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("browser: no chromium/chromedriver")
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(driver_path))
    first: list[float] = []
    whole: list[float] = []
    try:
        for _ in range(repeats):
            driver.get("about:blank")
            t = time.perf_counter()
            driver.get(url)
            seen = None
            while True:
                ov = driver.find_element(By.ID, "ov-title").get_attribute("data-steps")
                if ov and seen is None:
                    seen = time.perf_counter() - t
                title = driver.find_element(By.ID, "raster-title").text
                traced = driver.find_element(By.ID, "trace-note").text
                if ov and "spikes" in title and traced:
                    break
                if time.perf_counter() - t > 60:
                    raise RuntimeError("the page did not draw within 60 s")
                time.sleep(0.005)
            first.append(seen or 0.0)
            whole.append(time.perf_counter() - t)
    finally:
        driver.quit()
    return statistics.median(first), statistics.median(whole)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", default="/tmp/spikestore-bench-view")
    ap.add_argument("--browser", action="store_true")
    args = ap.parse_args()
    path = Path(args.dir) / f"view{args.steps}.spikes"
    build(path, args.steps)
    n = args.steps
    rng = np.random.default_rng(0)

    def cold() -> None:
        d = ViewData(path)
        d.layers()
        d.overview("output", "lif1", bins=1000)

    warm = ViewData(path)
    warm.layers()
    rows = [
        ("overview, cold (layers + whole run, 1,000 bins)", median_ms(cold, args.repeats)),
        (
            "overview, warm (layers + whole run)",
            median_ms(
                lambda: (warm.layers(), warm.overview("output", "lif1", bins=1000)), args.repeats
            ),
        ),
        (
            "overview, warm, a 10,000-step window",
            median_ms(
                lambda: warm.overview("output", "lif1", n // 2, n // 2 + 10_000, 1000), args.repeats
            ),
        ),
    ]
    for span in (2_000, 20_000):
        starts = iter(rng.integers(0, n - span, size=args.repeats))
        mode = raster(warm, "output", "lif1", 0, span, width=1000, height=300)["mode"]

        def one(span: int = span, starts: Any = starts) -> None:
            a = int(next(starts))
            raster(warm, "output", "lif1", a, a + span, width=1000, height=300)

        rows.append(
            (f"raster, {span:,} steps x {N} neurons ({mode})", median_ms(one, args.repeats))
        )
    with Viewer(path) as v:
        base = v.url.split("/?")[0]
        tok = f"token={v.token}"
        q = f"{tok}&monitor=output&layer=lif1"

        def http_cold() -> None:
            with Viewer(path) as fresh:
                b = fresh.url.split("/?")[0]
                http_get(f"{b}/api/layers?token={fresh.token}")
                http_get(
                    f"{b}/api/overview?token={fresh.token}&monitor=output&layer=lif1&bins=1000"
                )

        rows.append(
            ("http: layers + overview, cold (new server)", median_ms(http_cold, args.repeats))
        )
        rows.append((
            "http: overview, warm",
            median_ms(lambda: http_get(f"{base}/api/overview?{q}&bins=1000"), args.repeats),
        ))  # fmt: skip
        starts2 = iter(rng.integers(0, n - 2000, size=args.repeats))

        def http_raster() -> None:
            a = int(next(starts2))
            http_get(f"{base}/api/raster?{q}&start={a}&stop={a + 2000}&width=1000&height=300")

        rows.append(("http: raster, 2,000 steps", median_ms(http_raster, args.repeats)))
        if args.browser:
            secs = browser_seconds(v.url, max(3, args.repeats // 2))
            if secs is not None:
                rows.append(("browser: the overview drawn", secs[0] * 1e3))
                rows.append(("browser: overview, raster and traces drawn", secs[1] * 1e3))
    print(f"\n{n:,} steps, {N} neurons; medians of {args.repeats}")
    for name, ms in rows:
        print(f"  {name:<52} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
