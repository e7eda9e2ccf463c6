"""The command line: ``info``'s table, and every failure as one line on stderr
(status 1; 2 for bad arguments)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import spikestore
from spikestore.cli import main


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "s"
    x = torch.zeros(10, 10)
    x[0, :5] = 1  # 5 spikes of 100
    with spikestore.StoreWriter(path) as w:
        for _ in range(4):
            w.append("output", "sn", x)
            w.append("v", "sn", torch.randn(3))
    return path


def _copy(healthy: Path, tmp_path: Path) -> Path:
    path = tmp_path / "s"
    shutil.copytree(healthy, path)
    return path


def _summary_files(path: Path) -> list[Path]:
    found = [f for f in (path / "output" / "sn" / "f0" / "summary" / "c").rglob("*") if f.is_file()]
    assert found
    return found


@pytest.mark.parametrize("how", ["chunk", "metadata"])
def test_info_with_a_damaged_summary_prints_the_table_without_the_rate(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    path = _copy(healthy, tmp_path)
    if how == "chunk":
        for f in _summary_files(path):
            f.write_bytes(os.urandom(f.stat().st_size))
    else:
        (path / "output" / "sn" / "f0" / "summary" / "zarr.json").write_bytes(b"\xff{garbage")
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    row = next(line for line in out.splitlines() if line.startswith("output"))
    assert row.split()[2] == "4" and row.split()[-1] == "-"
    assert err.count("\n") == 1
    assert err.startswith("spikestore: warning: no spike rate: monitor 'output', layer 'sn'")
    assert "Traceback" not in err
    assert main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["spike_rate"] for r in doc["layers"]] == [None, None]
    assert len(doc["warnings"]) == 1


def test_info_shows_the_rate_and_no_warnings_on_a_healthy_store(
    healthy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", "--json", str(healthy)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["layers"][0]["spike_rate"] == pytest.approx(0.05) and doc["warnings"] == []
    assert err == ""


def test_info_on_a_layer_missing_its_field_fails_in_one_line(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(healthy, tmp_path)
    meta = path / "output" / "sn" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["spikestore"]["time_axis"] = None
    meta.write_text(json.dumps(doc))
    shutil.rmtree(path / "output" / "sn" / "f0")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("spikestore: error: monitor 'output', layer 'sn'")
    assert "field group is missing" in err and err.endswith(": f0\n")


def test_info_on_garbage_root_metadata_fails_in_one_line(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _copy(healthy, tmp_path)
    (path / "zarr.json").write_bytes(b"\x00\xffnot json")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikestore: error: ")


@pytest.mark.parametrize(
    ("target", "damaged"),
    [("output/zarr.json", "monitor 'output' is"), ("output/sn/zarr.json", "layer 'sn' is")],
)
def test_info_on_garbage_metadata_lists_the_rest_and_names_the_damaged_node(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, damaged: str
) -> None:
    path = _copy(healthy, tmp_path)
    (path / target).write_bytes(b"\x00\xffnot json")
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("spikestore: warning: "), err
    assert f"{damaged} damaged and left out" in err
    assert any(line.startswith("v ") for line in out.splitlines()), out
    assert main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["monitor"] for r in doc["layers"]] == ["v"] and len(doc["warnings"]) == 1


def test_info_on_a_file_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["info", str(tmp_path / "f" / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikestore: error: ")


def test_demo_into_a_locked_store_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.append("o", "x", torch.ones(2))
        assert main(["demo", str(path), "--steps", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikestore: error: ")


def test_info_while_a_writer_appends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The writer renames temporary files into place and drops tails all the time;
    # measuring the layer's bytes used to stat files that had just vanished.
    path = tmp_path / "s"
    stop = threading.Event()
    failed: list[BaseException] = []
    g = torch.Generator().manual_seed(0)
    with spikestore.StoreWriter(path, flush_interval=0.01, shard_steps=32) as w:
        for name in ("a", "b", "c"):
            w.append("o", name, torch.randn(8192, generator=g))  # 32 KiB: 32-step shards
        w.append("o", "sn", (torch.rand(4, 2048, generator=g) < 0.1).float(), time_axis=0)
        w.flush()

        def append() -> None:
            try:
                while not stop.is_set():
                    for name in ("a", "b", "c"):
                        w.append("o", name, torch.randn(8192, generator=g))
                    w.append("o", "sn", (torch.rand(4, 2048, generator=g) < 0.1).float())
            except BaseException as exc:  # pragma: no cover - reported below
                failed.append(exc)

        t = threading.Thread(target=append)
        t.start()
        try:
            codes = []
            for _ in range(30):
                codes.append(main(["info", str(path)]))
                err = capsys.readouterr().err
                assert err == "", err
        finally:
            stop.set()
            t.join()
    assert not failed
    assert codes == [0] * 30
    assert len(spikestore.open(path)["o"]["a"]) > 32


@pytest.mark.parametrize("target", ["output/zarr.json", "output/sn/zarr.json"])
def test_info_as_a_command_prints_one_line_for_garbage_metadata(
    healthy: Path, tmp_path: Path, target: str
) -> None:
    # Zarr's concurrent listing left the other members' exceptions unretrieved,
    # and asyncio printed them, with tracebacks, after the error line.
    path = _copy(healthy, tmp_path)
    with spikestore.StoreWriter(path, mode="a") as w:  # more members to list
        for i in range(8):
            w.append(f"m{i}", f"l{i}", torch.ones(2))
    (path / target).write_bytes(b"\xff garbage")
    res = subprocess.run(
        [sys.executable, "-m", "spikestore", "info", str(path)], capture_output=True, text=True
    )
    # The damaged node is left out with one warning; the other monitors are listed.
    assert res.returncode == 0
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("spikestore: warning: ")
    assert "malformed metadata" in res.stderr and "m7" in res.stdout


FIXTURES = Path(__file__).parent / "fixtures"


def test_cli_info_and_errors(tmp_path, capsys):
    assert main(["info", str(FIXTURES / "store_v1.0")]) == 0
    out = capsys.readouterr().out
    assert "features.0.sn" in out and "bitpack" in out and "x f32" in out
    assert main(["info", "--json", str(FIXTURES / "store_v1.0")]) == 0
    info = json.loads(capsys.readouterr().out)
    sn = next(
        x for x in info["layers"] if (x["monitor"], x["layer"]) == ("output", "features.0.sn")
    )
    assert sn["steps"] == 41 and sn["encoding"] == ["bitpack"]
    # 19 KiB as float32: too small for its ratio to say anything.
    assert sn["ratio_vs_float32"] is None and "bookkeeping" in sn["ratio_note"]
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a spikestore store" in err


def test_cli_as_module_exits_nonzero_without_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "spikestore", "info", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr


def test_cli_info_shows_the_spike_rate_from_summaries(healthy, capsys):
    assert main(["info", "--json", str(healthy)]) == 0
    layers = {(r["monitor"], r["layer"]): r for r in json.loads(capsys.readouterr().out)["layers"]}
    assert layers[("output", "sn")]["spike_rate"] == pytest.approx(0.05)
    assert layers[("v", "sn")]["spike_rate"] is None
    # A 1.0 store has no summaries: info says nothing rather than decoding.
    assert main(["info", "--json", str(FIXTURES / "store_v1.0")]) == 0
    old = json.loads(capsys.readouterr().out)["layers"]
    assert all(r["spike_rate"] is None for r in old)


def test_info_on_a_ranked_store_has_a_row_per_rank_and_layer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fixture = Path(__file__).parent / "fixtures" / "store_v1.4_ranked"
    assert main(["info", str(fixture), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ranks"] == {"world_size": 2, "recorded": [0, 1], "present": [0, 1]}
    rows = {(r["rank"], r["monitor"], r["layer"]): r for r in summary["layers"]}
    one = spikestore.open(fixture).rank(1)
    assert {(m, lay.name) for m in one for lay in one[m].values()} == {
        (m, lay) for r, m, lay in rows if r == 1
    }
    assert rows[(1, "output", "features.0.sn")]["steps"] == 41
    assert main(["info", str(fixture)]) == 0
    out = capsys.readouterr().out
    assert "ranks [0, 1] of world size 2" in out.splitlines()[0]
    assert out.splitlines()[1].split()[:2] == ["rank", "monitor"]


# ------------------------------------------------------------------ demo's arguments
def _demo(path: Path, *extra: str) -> int:
    return main(["demo", str(path), "--steps", "1", "--no-progress", *extra])


def test_demo_refuses_an_existing_store_unless_told_to_append_or_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "d"
    assert _demo(path) == 0
    capsys.readouterr()
    assert _demo(path) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikestore: error: ")
    assert "--append" in err and "--overwrite" in err and str(path) in err
    assert len(spikestore.open(path)["output"]["sn1"]) == 1  # untouched
    assert _demo(path, "--append") == 0
    assert len(spikestore.open(path)["output"]["sn1"]) == 2
    assert _demo(path, "--overwrite") == 0
    assert len(spikestore.open(path)["output"]["sn1"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        _demo(path, "--append", "--overwrite")
    assert exit_info.value.code == 2


@pytest.mark.parametrize("steps", ["-3", "0", "x"])
def test_demo_with_a_bad_step_count_fails_with_a_message(tmp_path: Path, steps: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "spikestore", "demo", str(tmp_path / "d"), "--steps", steps],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "--steps" in res.stderr and "positive integer" in res.stderr
    assert "Traceback" not in res.stderr and "recorded" not in res.stdout
    assert not (tmp_path / "d").exists()


def test_demo_into_a_folder_of_other_files_or_onto_a_file_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (tmp_path / "f").write_text("x")
    for path, what in ((folder, "not a spikestore store"), (tmp_path / "f", "not a directory")):
        for extra in ((), ("--overwrite",), ("--append",)):
            assert _demo(path, *extra) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("spikestore: error: ")
            assert what in err and "Traceback" not in err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (tmp_path / "f").read_text() == "x"


def test_export_writes_an_nwb_file_and_refuses_to_replace_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pynwb = pytest.importorskip("pynwb")
    path, out = tmp_path / "s", tmp_path / "run.nwb"
    spikes = [(torch.rand(4, 8) < 0.3).float() for _ in range(5)]
    with spikestore.StoreWriter(path) as w:
        for s in spikes:
            w.append("output", "sn", s)
            w.append("v", "sn", s * 0.5)
    assert main(["export", str(path), str(out), "--dt", "0.002"]) == 0
    assert str(out) in capsys.readouterr().out
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert len(nwb.units) == 32
        got = sorted(float(t) for i in range(32) for t in nwb.units["spike_times"][i])
    want = sorted(
        step * 0.002 for step, s in enumerate(spikes) for _ in range(int(s.sum()))
    )
    assert got == pytest.approx(want)
    # An existing file is refused in one line unless --overwrite.
    assert main(["export", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err
    assert main(["export", str(path), str(out), "--overwrite"]) == 0


# ---------------------------------------------------- every failure in one line
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikestore", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _assert_one_error_line(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("spikestore: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_demo_failures_run_as_a_command_print_one_line_and_exit_1(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (tmp_path / "f").write_text("x")
    cases = [
        (folder, "choose a new PATH or an empty folder"),
        (tmp_path / "f", "choose another PATH"),
        (tmp_path / "f" / "sub", "not a folder"),  # the parent is a file
    ]
    for path, fix in cases:
        res = _cli("demo", str(path), "--steps", "1", "--no-progress")
        assert res.returncode == 1, res.stderr
        _assert_one_error_line(res.stderr, str(path), fix)
        assert "recorded" not in res.stdout


def test_demo_into_a_folder_that_cannot_be_written_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, whom a read-only folder does not stop: make creating
    # the store's folder fail the way it does for anyone else.
    locked = tmp_path / "ro"
    locked.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if locked in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    path = locked / "d"
    assert _demo(path) == 1
    out, err = capsys.readouterr()
    _assert_one_error_line(err, f"{path}: permission denied", "a folder you can write to")
    assert out == ""


def test_info_and_export_of_a_missing_store_fail_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for args in (("info", str(missing)), ("export", str(missing), str(tmp_path / "o.nwb"))):
        res = _cli(*args)
        assert res.returncode == 1, res.stderr
        _assert_one_error_line(res.stderr, str(missing))
        assert res.stdout == ""
    res = _cli("info", str(tmp_path))
    assert res.returncode == 1
    _assert_one_error_line(res.stderr, str(tmp_path), "not a spikestore store")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    runs = (
        _cli("info", missing, "--debug"),
        _cli("--debug", "info", missing),
        _cli("info", missing, env={"SPIKESTORE_DEBUG": "1"}),
    )
    for res in runs:
        assert res.returncode == 1
        assert "Traceback" in res.stderr and "FileNotFoundError" in res.stderr
    res = _cli("info", missing, env={"SPIKESTORE_DEBUG": "0"})
    assert res.returncode == 1 and "Traceback" not in res.stderr


def test_an_unexpected_error_is_one_line_that_points_to_debug(
    healthy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import spikestore.cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(spikestore.cli, "info", broken)
    assert main(["info", str(healthy)]) == 1
    _assert_one_error_line(capsys.readouterr().err, "RuntimeError: something unforeseen", "--debug")
    with pytest.raises(RuntimeError):
        main(["info", str(healthy), "--debug"])


@pytest.mark.parametrize(
    ("args", "option", "words"),
    [
        (["demo", "{p}", "--seed", "-1"], "--seed", "0 to 2**63 - 1"),
        (["demo", "{p}", "--seed", "x"], "--seed", "0 to 2**63 - 1"),
        (["demo", "{p}", "--seed", str(2**63)], "--seed", "0 to 2**63 - 1"),
        (["demo", "{p}", "--steps", "1.5"], "--steps", "positive integer"),
        (["export", "{p}", "{p}.nwb", "--dt", "0"], "--dt", "positive"),
        (["export", "{p}", "{p}.nwb", "--dt=-1e-3"], "--dt", "positive"),
        (["export", "{p}", "{p}.nwb", "--dt", "nan"], "--dt", "positive finite"),
        (["export", "{p}", "{p}.nwb", "--dt", "inf"], "--dt", "positive finite"),
        (["export", "{p}", "{p}.nwb", "--dt", "fast"], "--dt", "positive number"),
        (["info", "{p}", "--storage-options", "{nope"], "--storage-options", "not valid JSON"),
        (["info", "{p}", "--storage-options", "[1, 2]"], "--storage-options", "JSON object"),
        (["info"], "path", "required"),
        (["frobnicate"], "command", "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_usage_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str, words: str
) -> None:
    path = tmp_path / "d"
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{p}", str(path)) for a in args])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: spikestore")
    last = err.strip().splitlines()[-1]
    assert last.startswith("spikestore") and ": error: " in last
    assert option in last and words in last
    assert not path.exists()


def test_an_interrupted_command_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikestore import demo

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    assert _demo(tmp_path / "d") == 130
    assert capsys.readouterr().err == "spikestore: interrupted\n"


def test_demo_run_checks_its_seed(tmp_path: Path) -> None:
    from spikestore import demo

    for seed in (-1, 2**63, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            demo.run(tmp_path / "d", steps=1, seed=seed, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()


def test_demo_seed_changes_the_run(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    assert _demo(a, "--seed", "1") == 0 and _demo(b, "--seed", "1") == 0
    assert _demo(c, "--seed", "2") == 0
    ra, rb, rc = (spikestore.open(p)["output"]["sn1"][0] for p in (a, b, c))
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)


# ------------------------------------------------------------ info's columns
def _row_of(out: str, monitor: str, layer: str) -> list[str]:
    return next(
        line.split() for line in out.splitlines() if line.split()[:2] == [monitor, layer]
    )


def test_info_shows_the_ratio_on_chunk_bytes_and_not_for_small_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s"
    g = torch.Generator().manual_seed(0)
    with spikestore.StoreWriter(path) as w:
        for _ in range(4):
            w.append("v", "small", torch.randn(384, generator=g))  # 6 KiB as float32
        for _ in range(20):
            w.append("v", "big", torch.randn(4096, generator=g))  # 320 KiB
        for _ in range(40):
            w.append("output", "sn", (torch.rand(8192, generator=g) < 0.02).float())
    assert main(["info", "--json", str(path)]) == 0
    rows = {r["layer"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    for name, r in rows.items():
        meta = sum(f.stat().st_size for f in (path / r["monitor"] / name).rglob("zarr.json"))
        assert r["metadata_bytes"] == meta > 0
    small, big, sn = rows["small"], rows["big"], rows["sn"]
    # The fixed few KiB of metadata made this 0.4; no ratio is better than a wrong one.
    assert small["ratio_vs_float32"] is None and "64 KiB" in small["ratio_note"]
    assert big["ratio_vs_float32"] == round(
        big["float32_bytes"] / (big["bytes"] - big["metadata_bytes"]), 2
    )
    assert 0.9 < big["ratio_vs_float32"] < 1.1  # random floats do not compress
    assert sn["ratio_vs_float32"] > 20 and "ratio_note" not in sn
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert _row_of(out, "v", "small")[-2] == "small"
    assert _row_of(out, "v", "big")[-2] == f"{big['ratio_vs_float32']:.1f}"
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "zarr.json metadata documents" in helptext and "under 64 KiB" in helptext


def test_info_shows_each_field_of_tuple_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # snnTorch's neurons return (spk, mem).
    path = tmp_path / "s"
    g = torch.Generator().manual_seed(1)
    spk = [(torch.rand(4, 32, generator=g) < 0.25).float() for _ in range(6)]
    mem = [torch.randn(4, 32, generator=g) + 0.5 for _ in range(6)]
    with spikestore.StoreWriter(path) as w:
        for s, m in zip(spk, mem, strict=True):
            w.append("snntorch", "lif1", (s, m))
            w.append("v", "plain", m)
    assert main(["info", "--json", str(path)]) == 0
    rows = {r["layer"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    fields = rows["lif1"]["fields"]
    names = [f["name"] for f in fields]
    assert len(fields) == 2 and names == _field_names_of(path, "snntorch", "lif1")
    assert fields[0]["encoding"] == ["bitpack"] and fields[1]["encoding"] == ["raw"]
    assert fields[0]["spike_rate"] == pytest.approx(float(torch.stack(spk).mean()))
    assert fields[1]["mean"] == pytest.approx(float(torch.stack(mem).mean()), rel=1e-5)
    assert "spike_rate" not in fields[1] and "mean" not in fields[0]
    assert rows["plain"]["fields"][0]["mean"] == pytest.approx(fields[1]["mean"])
    assert main(["info", str(path)]) == 0
    row = _row_of(capsys.readouterr().out, "snntorch", "lif1")
    assert row[-2:] == [
        f"{names[0]}:{fields[0]['spike_rate']:.4f}",
        f"{names[1]}:mean={fields[1]['mean']:.4g}",
    ]


def _field_names_of(path: Path, monitor: str, layer: str) -> list[str]:
    lay = spikestore.open(path)[monitor][layer]
    return [str(n) for n in getattr(lay, "field_names", range(len(lay.fields)))]


# ------------------------------------------------------------ format 1.5 runs
def test_info_shows_the_run_its_marks_and_each_layers_dims_and_units_in_call_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s"
    g = torch.Generator().manual_seed(2)
    attrs = {"model": "vgg", "lr": 0.1, "tags": ["a", "b"]}
    with spikestore.StoreWriter(path, attrs=attrs, dt=1.0, time_unit="ms") as w:
        for step in range(6):
            if step % 2 == 0:
                w.mark(epoch=step // 2)
            if step == 3:
                w.mark(phase="eval")
            # Recorded in call order "z" then "a": not alphabetical.
            w.append(
                "output",
                "z",
                (torch.rand(4, 2, 3, 5, 5, generator=g) < 0.1).float(),
                time_axis=0,
                dims=("time", "batch", "channel", "y", "x"),
            )
            w.append("output", "a", torch.randn(2, 7, generator=g), units="mV")
    assert main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    runs = doc["run"].pop("runs")
    assert [(r["index"], r["attrs"], r["steps"]) for r in runs] == [(0, attrs, 6)]
    assert doc["run"] == {
        "attrs": attrs,
        "dt": 1.0,
        "time_unit": "ms",
        "marks": {"count": 4, "keys": {"epoch": 3, "phase": 1}},
    }
    layers = [(r["layer"], r["dims"], r["units"]) for r in doc["layers"]]
    assert layers == [("z", ["time", "batch", "channel", "y", "x"], None), ("a", None, "mV")]
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == 'attrs: {"model": "vgg", "lr": 0.1, "tags": ["a", "b"]}'
    assert lines[2] == "dt: 1 ms per time step"
    assert lines[3] == "marks: 4 marks setting epoch (3), phase (1)"
    head = lines[4].split()
    assert head[:7] == ["monitor", "layer", "steps", "shape", "dims", "dtype", "encoding"]
    assert head[7] == "units"
    z, a = _row_of("\n".join(lines), "output", "z"), _row_of("\n".join(lines), "output", "a")
    assert [line.split()[1] for line in lines[6:]] == ["z", "a"]
    assert z[3:8] == ["4x2x3x5x5", "time,batch,channel,y,x", "float32", "bitpack", "-"]
    assert a[3:8] == ["2x7", "-", "float32", "raw", "mV"]


def test_info_on_an_older_store_prints_no_run_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(FIXTURES / "store_v1.0")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["monitor", "layer", "steps"]
    assert "dims" not in lines[1] and "units" not in lines[1]


def test_demo_describes_its_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spikestore import demo

    path = tmp_path / "d"
    assert _demo(path, "--seed", "3") == 0
    out = capsys.readouterr().out
    store = spikestore.open(path)
    assert store.attrs["demo"]["seed"] == 3 and store.attrs["demo"]["time_steps"] == demo.T
    assert (store.dt, store.time_unit) == (demo.DT_MS, "ms")
    assert list(store["output"]["sn1"].marks()["epoch"]) == [0]
    five = ("time", "batch", "channel", "y", "x")
    assert store["grad_input"]["block1"].dims == five  # a multi-step conv block
    assert store["v_seq"]["sn1"].dims == five and store["output"]["sn3"].dims == (
        "time",
        "batch",
        "neuron",
    )
    assert "dt: 1 ms per time step" in out and "marks: 1 mark setting epoch (1)" in out


def test_help_shows_no_rst_markup() -> None:
    res = _cli("--help")
    assert res.returncode == 0 and "spikestore info PATH" in res.stdout
    assert "``" not in res.stdout, res.stdout
    for cmd in ("info", "demo", "export"):
        sub = _cli(cmd, "--help")
        assert sub.returncode == 0 and "``" not in sub.stdout, sub.stdout


def test_info_into_a_closed_pipe_stops_quietly() -> None:
    # `spikestore info X | head -1`: the reader leaves before the table is written.
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikestore", "info", str(FIXTURES / "store_v1.6")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nothing reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert err == "", err


def test_info_never_prints_a_stores_escape_sequences_and_json_is_strict(tmp_path, capsys):
    """A store's names and units went to the terminal raw (a layer name could set the
    window title or clear the screen), and ``--json`` printed bare NaN and Infinity (a
    diverging membrane's mean), which strict JSON parsers refuse."""
    path = tmp_path / "s"
    evil = "lif\x1b]0;pwned\x07\x1b[2J\u202e"
    with spikestore.StoreWriter(path, attrs={"loss": 1.0}) as w:
        w.append("output", evil, torch.full((2, 3), float("inf")), units="mV\x1b[8m")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err and "\u202e" not in out.out
    assert "lif\\x1b]0;pwned\\x07" in out.out  # shown, escaped

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    assert main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert doc["layers"][0]["layer"] == evil and doc["layers"][0]["fields"][0]["mean"] is None
