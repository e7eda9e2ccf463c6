"""Every example notebook executes top to bottom, cleanly, and is committed executed.

The notebooks are committed with their outputs (figures, tables) so they read on GitHub
without running them. Re-execute them in place after changing one::

    python tests/test_notebooks.py                      # all of them
    python tests/test_notebooks.py notebooks/02_*.ipynb  # some

which runs each in a fresh kernel exactly as ``test_notebook_executes`` does and writes
it back with its outputs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
#: Modules a notebook imports beyond spikestore's own dependencies.
NEEDS = {
    "01_quickstart": ["spikingjelly.activation_based", "xarray", "dask.array", "matplotlib"],
    "02_long_simulation": ["matplotlib"],
    "03_gradients": ["spikingjelly.activation_based", "matplotlib"],
    "04_neuroscience": ["matplotlib", "pandas", "xarray", "neo", "elephant", "quantities", "pynwb"],
}


def noise(cells: list[Any]) -> list[str]:
    """What in the code cells' outputs is not a clean result: errors, stderr, warnings.

    Returns one line per offending output (cell number, kind, start of its text).
    """
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        for out in cell["outputs"]:
            kind = out["output_type"]
            if kind == "error":
                found.append(f"cell {i}: {out['ename']}: {out['evalue']}")
                continue
            if kind == "stream":
                text = "".join(out["text"])
                if out["name"] == "stderr":
                    found.append(f"cell {i}: stderr: {text[:200]!r}")
                    continue
            else:
                text = "".join(out.get("data", {}).get("text/plain", ""))
            if "warning" in text.lower():
                found.append(f"cell {i}: {kind} with a warning: {text[:200]!r}")
    return found


def execute(path: Path, workdir: Path) -> Any:
    """``path`` executed in a fresh kernel whose working directory is ``workdir``."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the committed cells
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return nb


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= set(NEEDS)


def test_noise_finds_stderr_warnings_and_errors() -> None:
    def cell(*outputs: dict[str, Any]) -> dict[str, Any]:
        return {"cell_type": "code", "outputs": list(outputs)}

    clean = cell(
        {"output_type": "stream", "name": "stdout", "text": "rates: [0.1 0.2]\n"},
        {"output_type": "display_data", "data": {"text/plain": "<Figure>", "image/png": "..."}},
    )
    assert noise([{"cell_type": "markdown", "source": "Warning: prose may say it"}, clean]) == []
    triton = "W1128 02:21:55.103000 18439 torch/_library/triton.py:53] Triton not available\n"
    found = noise(
        [
            clean,
            cell({"output_type": "stream", "name": "stderr", "text": triton}),
            cell({"output_type": "stream", "name": "stdout", "text": "UserWarning: x\n"}),
            cell({"output_type": "execute_result", "data": {"text/plain": ["DeprecationWarning"]}}),
            cell({"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}),
        ]
    )
    assert [line.split(":")[0] for line in found] == ["cell 1", "cell 2", "cell 3", "cell 4"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    counts = [cell["execution_count"] for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: commit it executed top to bottom in one kernel "
        f"(python tests/test_notebooks.py {path.relative_to(path.parent.parent)})"
    )
    assert any(cell["outputs"] for cell in code), f"{path.name}: committed without outputs"
    assert noise(nb["cells"]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for module in NEEDS.get(path.stem, []):
        pytest.importorskip(module)
    nb = execute(path, tmp_path)
    assert noise(nb.cells) == []


if __name__ == "__main__":
    import nbformat

    paths = [Path(p).resolve() for p in sys.argv[1:]] or NOTEBOOKS
    for p in paths:
        with tempfile.TemporaryDirectory() as tmp:
            executed = execute(p, Path(tmp))
        nbformat.write(executed, p)
        problems = noise(executed.cells)
        print(p.name, "executed", *(["with:", *problems] if problems else ["cleanly"]))
