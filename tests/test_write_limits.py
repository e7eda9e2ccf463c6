"""What the writer refuses at the call, so that nothing it accepts is lost or unreadable.

* Run attributes nest at most ``MAX_ATTRS_DEPTH`` deep (a ``RecursionError`` before);
  mark values are JSON scalars any reader takes.

Real files and real writers throughout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import spikestore
import spikestore.format as fmt
from spikestore import StoreWriter


def _x(step: int, shape: tuple[int, ...] = (3, 4)) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape) + step


# ------------------------------------------------------ 11. attrs and mark values
def _nested(depth: int) -> dict[str, Any]:
    """An attrs dict ``depth`` levels of objects and arrays deep (itself counting 1)."""
    value: Any = 1
    for i in range(depth - 1):
        value = {"k": value} if i % 2 else [value]
    return {"deep": value}


def test_attrs_nested_too_deep_are_refused_at_the_call(tmp_path: Path) -> None:
    """Regression: attrs nested 3,000 deep raised RecursionError (from json.dumps)."""
    path = tmp_path / "s"
    with pytest.raises(ValueError, match=r"attrs: nested deeper than 64 levels"):
        StoreWriter(path, attrs=_nested(3000))
    with StoreWriter(path, attrs=_nested(fmt.MAX_ATTRS_DEPTH)) as w:
        w.append("m", "a", _x(0))
        for depth in (fmt.MAX_ATTRS_DEPTH + 1, 3000):
            with pytest.raises(ValueError, match=r"attrs: nested deeper than 64 levels"):
                w.set_attrs(**_nested(depth))
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(ValueError, match=r"nested deeper than 64 .*holds itself"):
            w.set_attrs(loop=loop)
        w.set_attrs(lr=0.5)
        w.append("m", "a", _x(1))
    store = spikestore.open(path)
    assert store.attrs["deep"] == _nested(fmt.MAX_ATTRS_DEPTH)["deep"]
    assert store.attrs["lr"] == 0.5 and len(store["m"]["a"]) == 2


def test_the_reader_takes_attrs_as_deep_as_the_writer_writes_and_no_deeper(
    tmp_path: Path,
) -> None:
    """One bound for both: a root whose attrs nest one level more than a writer writes
    is a damaged run description (warned about and ignored); its records still read."""
    path = tmp_path / "s"
    with StoreWriter(path, attrs={"a": 1}) as w:
        w.append("m", "a", _x(0))
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][fmt.RUN_KEY]["attrs"] = _nested(fmt.MAX_ATTRS_DEPTH + 1)
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="nested deeper than 64"):
        store = spikestore.open(path)
        assert store.attrs == {}
    assert torch.equal(store["m"]["a"][0], _x(0))


def test_mark_values_any_reader_takes(tmp_path: Path) -> None:
    """Regression: mark(x=10**5000) was queued and killed the writer thread at the
    next commit (Python writes no int of more than 4,300 digits); ints are bounded to
    int64, as records' are."""
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        w.append("m", "a", _x(0))
        for v in (10**5000, 2**63, -(2**63) - 1):
            with pytest.raises(ValueError, match="a mark's int must fit in int64"):
                w.mark(epoch=v)
        w.mark(epoch=2**63 - 1, phase="train", lr=np.float32(0.5), on=torch.tensor(True))
        w.append("m", "a", _x(1))
        w.flush()
    marks = spikestore.open(path)["m"]["a"].marks()
    assert marks["epoch"][1] == 2**63 - 1 and marks["phase"][1] == "train"
