"""The house rules of the package, checked on its source (see docs/architecture.md).

One room per job: no module over 800 lines, no class over 400; Zarr's non-public
names only in ``spikestore._zarr``; no private CPython names or frame walking; the
architecture document lists every module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spikestore"
DOCS = PACKAGE.parent / "docs"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_and_class_sizes(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 800, f"{_rel(path)} has {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 400, f"{_rel(path)}: class {node.name} is {length} lines"


#: Private names of CPython's standard library, and frame walking.
_PRIVATE_CPYTHON = re.compile(
    r"\bsys\._\w+|\bthreading\._\w+|concurrent\.futures\.\w+\._\w+|\bf_back\b"
    r"|_current_frames|\batexit\._\w+|\bsignal\._\w+"
)


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_private_cpython_names(path: Path) -> None:
    hits = [
        f"{_rel(path)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _PRIVATE_CPYTHON.search(line) and not line.lstrip().startswith("#")
    ]
    assert not hits, "\n".join(hits)


def _zarr_internal_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zarr.core"):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("zarr.core")]
        elif isinstance(node, ast.Attribute) and node.attr in ("_encode_sync", "_decode_sync"):
            if isinstance(node.ctx, ast.Load) and not (
                isinstance(node.value, ast.Name) and node.value.id == "self"
            ):
                found.append(f".{node.attr}")
    return found


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "_zarr.py"], ids=_rel)
def test_zarr_internals_only_through_the_adapter(path: Path) -> None:
    assert _zarr_internal_uses(path.read_text()) == [], _rel(path)


def test_the_adapter_check_catches_an_internal_import() -> None:
    assert _zarr_internal_uses("from zarr.core.sync import sync\nx = c._encode_sync(b, s)\n")
    assert not _zarr_internal_uses("from zarr.storage import LocalStore\n")


def test_architecture_lists_every_module() -> None:
    text = (DOCS / "architecture.md").read_text()
    missing = [_rel(p) for p in MODULES if f"`{_rel(p)}`" not in text]
    assert not missing, f"docs/architecture.md does not list {missing}"
