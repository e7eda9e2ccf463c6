"""``lease_timeout`` is checked wherever a writer accepts it, whatever the store: a
value no lease could have was ignored for a local path and refused on S3."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from zarr.storage import MemoryStore

import spikestore

BAD = [float("nan"), float("inf"), -1, 0, 86401, True, "30", [30]]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_bad_lease_timeout_is_refused_for_a_local_path(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match="lease_timeout"):
        spikestore.StoreWriter(tmp_path / "s", lease_timeout=value)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1])
def test_a_bad_lease_timeout_is_refused_for_a_store(value: float) -> None:
    with pytest.raises(ValueError, match="lease_timeout"):
        spikestore.StoreWriter(store=MemoryStore(), lease_timeout=value)


@pytest.mark.parametrize("value", [None, 0.5, 30, 86400])
def test_a_good_lease_timeout_opens_a_local_path(tmp_path: Path, value: float | None) -> None:
    with spikestore.StoreWriter(tmp_path / "s", lease_timeout=value) as w:
        w.append("m", "l", torch.ones(2))
    assert len(spikestore.open(tmp_path / "s")["m"]["l"]) == 1


RANKED = """
import sys, torch.distributed as dist, spikestore
dist.init_process_group("gloo", init_method=f"file://{sys.argv[2]}", rank=0, world_size=1)
try:
    spikestore.StoreWriter(sys.argv[1], lease_timeout=float("nan"))
    print("accepted")
except ValueError as exc:
    print("refused:", exc)
dist.destroy_process_group()
"""


def test_a_bad_lease_timeout_is_refused_for_a_ranked_store(tmp_path: Path) -> None:
    """Under torch.distributed the writer opens its rank's folder itself: a bad
    lease_timeout was not passed on, and so not checked."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", RANKED, str(tmp_path / "s"), str(tmp_path / "pg")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "refused:" in r.stdout and "lease_timeout" in r.stdout, r.stdout + r.stderr
