"""``spikestore view``: the command serves the page at the URL it prints, and says
which extra to install when the view extra is missing."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import spikestore
from spikestore import cli
from spikestore.view import _server


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "run.spikes"
    with spikestore.StoreWriter(path) as w:
        for _ in range(5):
            w.append("output", "lif", torch.zeros(8))
    return path


def test_view_prints_a_url_with_a_token_that_serves_the_store(store: Path) -> None:
    pytest.importorskip("uvicorn", reason="the view extra (uvicorn) is not installed")
    pytest.importorskip("starlette", reason="the view extra (starlette) is not installed")
    cmd = [sys.executable, "-m", "spikestore", "view", str(store), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # The URL must reach a pipe while the server runs, not when it exits (buffered).
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or ()], daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\w+)", line)
            url = m.group(1) if m else None
        assert url is not None, "no URL printed"
        api = url.replace("/?token=", "/api/layers?token=")
        body = json.loads(urllib.request.urlopen(api, timeout=10).read())
        assert [r["layer"] for r in body["layers"]] == ["lif"]
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(api.split("?")[0], timeout=10)
        assert info.value.code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_view_without_the_extra_says_what_to_install(
    store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"plotly not installed.*spikestore\[view\]"):
        _server.require()
    assert cli.main(["view", str(store)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikestore: error: spikestore view needs the view extra")


def test_view_of_a_missing_store_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("uvicorn", reason="the view extra (uvicorn) is not installed")
    assert cli.main(["view", str(tmp_path / "nope.spikes")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikestore: error: ") and "nope.spikes" in err
    assert "\n" not in err


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_view_refuses_a_port_out_of_range_as_an_argument_error(
    store: Path, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["view", str(store), "--port", port])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port: port must be 0..65535" in err and "Traceback" not in err
