"""Every fenced code block of README.md runs, with the names the README shows
(issue 24: the README's own lines failed: undefined names, a set as
``storage_options``, layers no block recorded, synopses no shell runs).

``PLAN`` lists the README's blocks in order, each with how it is tested; a block
missing from it (a new one, or one whose first line changed) fails
``test_every_readme_block_is_planned``:

``install``
    The two "fresh machine" commands install packages, so they are not run here:
    their install lines must be ``.ci/run``'s (the same torch pin, venv, extras,
    SpikingJelly line, test command) and the torch range ``pyproject.toml``'s.
    The ``spikestore demo`` that ends the first one is the command-line block's first
    line with the default 300 steps (20 s here), where the README itself says
    ``--steps 20``.
``session``
    Python blocks run one after another in one interpreter (a subprocess, in a
    fresh directory as cwd), as a reader of the README runs them: Monitors records
    ``run.spikes``, which Reading, Writing, Analysis and Exports use. One line is
    the exception: Analysis's snnTorch line reads ``store["output"]["lif"]`` of an
    snnTorch net, which no README block records; the session records one first and
    binds ``store`` to it for that line only.
``s3``
    The S3 block runs against the moto server of the ``s3`` fixture: its endpoint,
    bucket and credentials replace the README's placeholders.
``cli``
    Each ``spikestore`` line runs through ``spikestore.cli.main`` in a fresh
    directory (its ``info s3://`` line reads what the S3 block wrote, on the fixture's
    server).
``torchrun``
    ``ddp_demo.py`` runs under torchrun in ``tests/test_scaling_docs.py``.
``dev``
    The development commands: the test command is ``.ci/run``'s and the ``slow``
    marker is registered (running the suite from inside the suite is left to CI).

The API that the prose names inline (``layer.lengths``, ``StoreWriter(ranks=None)``)
is checked to exist by ``test_names_in_the_readme_prose_exist``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from spikestore.cli import main
from spikestore.testing import S3Server

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"

#: README's blocks in order: (language, start of the first line, how it is tested).
PLAN = [
    ("bash", "python3 -m venv .venv &&", "install"),
    ("bash", "bash .ci/run", "install"),
    ("python", "import torch, spikestore", "session"),  # Monitors
    ("python", "import spikestore", "session"),  # Reading
    ("python", "spikes_t = ", "session"),  # Writing: append
    ("python", 'with spikestore.StoreWriter("train.spikes"', "session"),  # Writing: attrs
    ("python", "from spikestore import analysis, plot", "session"),  # Analysis and plots
    ("bash", "spikestore demo", "cli"),
    ("python", "# ddp_demo.py", "torchrun"),
    ("python", "options = ", "s3"),
    ("python", "from spikestore import analysis, export", "session"),  # Exports
    ("bash", "python -m pytest -q", "dev"),
]


@dataclass
class Block:
    lang: str
    text: str
    line: int  # README line of the block's first line of code

    def exec_line(self) -> str:
        """A line of Python that runs the block: tracebacks give README.md's lines."""
        return _exec_line(self.text, self.line)


def _exec_line(code: str, line: int) -> str:
    return f"exec(compile('\\n' * {line - 1} + {code!r}, 'README.md', 'exec'))"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        line = text.count("\n", 0, m.start(2)) + 1
        blocks.append(Block(m.group(1), m.group(2), line))
    return blocks


def _matches(block: Block, lang: str, start: str) -> bool:
    return block.lang == lang and block.text.startswith(start)


def planned(kind: str) -> list[Block]:
    """The README blocks PLAN tests as ``kind``, in order (a block PLAN lacks is
    passed over here and fails ``test_every_readme_block_is_planned``)."""
    blocks, out = iter(readme_blocks()), list[Block]()
    for lang, start, how in PLAN:
        block = next((b for b in blocks if _matches(b, lang, start)), None)
        assert block is not None, f"README.md has no {lang} block starting {start!r}"
        if how == kind:
            out.append(block)
    return out


def test_every_readme_block_is_planned() -> None:
    blocks = readme_blocks()
    got = [(b.lang, b.text.splitlines()[0], b.line) for b in blocks]
    for (lang, first, line), (want_lang, start, how) in zip(got, PLAN, strict=False):
        assert lang == want_lang and first.startswith(start), (
            f"README.md:{line}: a {lang} block starting {first!r} is not the planned "
            f"{want_lang} block starting {start!r} ({how}): add it to PLAN and test it"
        )
    assert len(blocks) == len(PLAN), f"README has {len(blocks)} blocks, PLAN {len(PLAN)}: {got}"


# ------------------------------------------------------------------ install lines
def _ci_commands() -> list[str]:
    """.ci/run's commands, with ``python -m pip install -q`` spelled ``pip install``."""
    out = []
    for raw in CI.read_text().splitlines():
        cmd = raw.strip()
        if cmd and not cmd.startswith("#"):
            out.append(re.sub(r"^python -m pip install -q ", "pip install ", cmd))
    return out


def _extras(cmd: str) -> set[str]:
    m = re.search(r'-e "\.\[([^]]*)\]"', cmd)
    assert m, f"no editable install of the package with extras in {cmd!r}"
    return set(m.group(1).split(","))


def test_install_lines_are_ci_lines() -> None:
    ci = _ci_commands()
    fresh, run_ci = planned("install")
    steps = [s.strip() for s in fresh.text.strip().split("&&")]
    assert steps[:3] == [
        "python3 -m venv .venv", ". .venv/bin/activate", "pip install torch==2.13.0"
    ]  # fmt: skip
    assert all(s in ci for s in steps[:3]), (steps[:3], ci)
    ci_editable = [c for c in ci if c.startswith("pip install -e ")]
    assert len(ci_editable) == 1
    assert steps[3].startswith("pip install -e ") and _extras(steps[3]) <= _extras(ci_editable[0])
    assert steps[4:] == ["spikestore demo"]
    demo_lines = [ln for b in planned("cli") for ln in b.text.splitlines()]
    assert any(ln.startswith("spikestore demo") for ln in demo_lines)
    # The second block runs .ci/run, whose last command is the README's test command.
    assert run_ci.text.strip() == "bash .ci/run" and CI.is_file()
    text = README.read_text()
    assert ci[-1] == "python -m pytest -q" and f"`{ci[-1]}`" in text
    # The SpikingJelly line and the torch range in the prose are .ci/run's and pyproject's.
    sj = [c for c in ci if "spikingjelly" in c]
    assert len(sj) == 1 and f"`{sj[0]}`" in text
    pin = re.search(r'"(torch>=[^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin and f"`{pin.group(1)}`" in text


def test_development_commands() -> None:
    (dev,) = planned("dev")
    lines = [ln.split("#")[0].strip() for ln in dev.text.splitlines()]
    assert lines[0] == _ci_commands()[-1]
    assert lines[1] == "python -m pytest -q -m slow"
    assert '"slow:' in (REPO / "pyproject.toml").read_text()
    assert any("pytest.mark.slow" in p.read_text() for p in (REPO / "tests").rglob("test_*.py"))


# ------------------------------------------------------------------ python blocks
#: A README line that warns is a line that fails (an ExportWarning: a layer left out).
WARNINGS = "import warnings\nwarnings.simplefilter('error', UserWarning)\n"

#: Records what Analysis's snnTorch line reads: an snnTorch net, ``(spk, mem)`` per step.
SNNTORCH = """
import snntorch, torch, spikestore
from spikestore.monitor import OutputMonitor
class _SnnTorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.lif = torch.nn.Linear(4, 8), snntorch.Leaky(beta=0.9)
    def forward(self, x):
        return self.lif(self.fc(x))
_net = _SnnTorchNet()
with spikestore.StoreWriter("snntorch/run.spikes") as _w, torch.no_grad():
    OutputMonitor(_net, snntorch.Leaky, store=_w)
    for _ in range(5):
        _net(torch.rand(2, 4) * 3)
del _net, _w
"""


def _session_script(blocks: list[Block]) -> str:
    parts = [WARNINGS, SNNTORCH]
    for b in blocks:
        lines = b.text.splitlines()
        snn = [i for i, ln in enumerate(lines) if "snnTorch" in ln]
        if not snn:
            parts.append(b.exec_line())
            continue
        # Only this line reads the snnTorch store: run it with `store` bound to it.
        (i,) = snn
        parts += [
            _exec_line("\n".join(lines[:i]), b.line),
            "_readme_store, store = store, spikestore.open('snntorch/run.spikes')",
            _exec_line(lines[i], b.line + i),
            "store = _readme_store",
            _exec_line("\n".join(lines[i + 1 :]), b.line + i + 1),
        ]
    return "\n".join(parts) + "\n"


def _run_python(script: str, cwd: Path, timeout: float = 240) -> str:
    path = cwd / "readme_session.py"
    path.write_text(script)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    p = subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert p.returncode == 0, f"a README block failed:\n{p.stderr[-4000:]}"
    return p.stdout


def test_python_blocks_run_as_one_session(tmp_path: Path) -> None:
    pytest.importorskip("spikingjelly")
    pytest.importorskip("snntorch")
    pytest.importorskip("matplotlib")
    pytest.importorskip("pynwb")
    pytest.importorskip("neo")
    out = _run_python(_session_script(planned("session")), tmp_path)
    # What the README says its lines print and make.
    assert "80 ['1', '3']" in out.splitlines()
    assert (tmp_path / "run.nwb").is_file() and (tmp_path / "train.spikes").is_dir()


def _s3_block(s3: S3Server, url: str) -> Block:
    (b,) = planned("s3")
    text = b.text
    for placeholder, real in [
        ("http://127.0.0.1:9000", s3.endpoint_url),
        ("s3://bucket/run", url),
        ('"key": "...", "secret": "..."',
         f'"key": "{s3.storage_options["key"]}", "secret": "{s3.storage_options["secret"]}"'),
    ]:  # fmt: skip
        assert placeholder in text, f"README.md:{b.line}: the S3 block lost {placeholder!r}"
        text = text.replace(placeholder, real)
    return Block(b.lang, text, b.line)


# ------------------------------------------------------------------ command line
def test_s3_block_and_command_line_block(
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("pynwb")
    url = s3.url(f"readme-{uuid.uuid4().hex[:12]}")
    s3_dir = tmp_path / "s3"
    s3_dir.mkdir()
    script = "import spikestore, torch\n" + (
        f"{_s3_block(s3, url).exec_line()}\n"
        "w.append('output', 'sn1', torch.rand(4, 10) < 0.5)\n"  # something for info to show
        "w.close()\n"
    )
    _run_python(script, s3_dir)

    # The command-line block, line by line, in a fresh directory; the info s3:// line
    # (credentials from the environment, as a user's would be) reads the store above.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.storage_options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.storage_options["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    (block,) = planned("cli")
    outputs = []
    for k, line in enumerate(block.text.splitlines()):
        where = f"README.md:{block.line + k}: {line!r}"
        line = line.replace("http://127.0.0.1:9000", s3.endpoint_url)
        line = line.replace("s3://bucket/run", url)
        argv = shlex.split(line, comments=True)
        assert argv[0] == "spikestore", where
        capsys.readouterr()
        status: int | str | None
        try:
            status = main(argv[1:])
        except SystemExit as exc:  # argparse's exit on a bad argument
            status = exc.code
        out, err = capsys.readouterr()
        assert status == 0, f"{where} exited {status}: {err[-2000:]}"
        outputs.append(out)
    demo, info, info_json, info_s3, export = outputs
    assert "demo.spikes" in demo and "demo.spikes" in info
    assert json.loads(info_json)
    assert "sn1" in info_s3
    assert export.strip() == "wrote demo.nwb" and (tmp_path / "demo.nwb").is_file()


def test_ddp_block_is_the_one_torchrun_runs() -> None:
    (b,) = planned("torchrun")
    text = (REPO / "tests" / "test_scaling_docs.py").read_text()
    assert "# ddp_demo.py" in b.text and r'```python\n(# ddp_demo.py\n.*?)```' in text


# ------------------------------------------------------------------ names in the prose
def _prose_spans() -> list[tuple[int, str]]:
    """``code`` spans outside the fenced blocks, with their README lines."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group().count("\n"), README.read_text(),
                  flags=re.M | re.S)  # fmt: skip
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"`([^`\n]+)`", text)]  # fmt: skip


def test_names_in_the_readme_prose_exist() -> None:
    """The API the prose names inline (``layer.lengths``, ``StoreWriter(..., precision=N)``,
    ``every=k``) exists: those spans are not run, so a rename would go unnoticed."""
    import inspect

    import spikestore
    from spikestore import analysis, export
    from spikestore.monitor import BaseMonitor, OutputMonitor
    from spikestore.reader import LayerReader, RankedLayerReader, RankedStoreReader, StoreReader

    plot = pytest.importorskip("spikestore.plot")
    owners: dict[str, tuple[object, ...]] = {
        "spikestore": (spikestore,), "analysis": (analysis,), "export": (export,),
        "plot": (plot,), "store": (StoreReader, RankedStoreReader),
        "layer": (LayerReader, RankedLayerReader), "monitor": (BaseMonitor,),
        "w": (spikestore.StoreWriter,), "writer": (spikestore.StoreWriter,),
    }  # fmt: skip
    writer_args = set(inspect.signature(spikestore.StoreWriter).parameters)
    monitor_args = set(inspect.signature(OutputMonitor).parameters)
    monitor_args |= set(inspect.signature(BaseMonitor).parameters)
    checked, missing = 0, []
    headings = {n + 1: ln for n, ln in enumerate(README.read_text().splitlines())
                if ln.startswith("## ")}  # fmt: skip
    for line, span in _prose_spans():
        section = max(((n, h) for n, h in headings.items() if n <= line), default=(0, ""))[1]
        for obj, name in re.findall(r"\b(\w+)\.([a-z_]\w*)\b", span):
            if obj in owners and not span.endswith((".md", ".py", ".ipynb")):
                checked += 1
                if not any(hasattr(o, name) for o in owners[obj]):
                    missing.append(f"README.md:{line}: `{span}`: no {obj}.{name}")
        call = re.fullmatch(r"StoreWriter\((.*)\)", span)
        for name in re.findall(r"\b(\w+)=", call.group(1)) if call else []:
            checked += 1
            if name not in writer_args:
                missing.append(f"README.md:{line}: `{span}`: StoreWriter takes no {name}=")
        bare = re.fullmatch(r"(\w+)=\S*", span)
        if bare and section.startswith("## Monitors"):
            checked += 1
            if bare.group(1) not in monitor_args:
                missing.append(f"README.md:{line}: `{span}`: monitors take no {bare.group(1)}=")
    assert not missing, "\n".join(missing)
    assert checked > 20
