"""The README's plot lines run as written, on stores recorded the way the README
records them (issue 24, item 5: its snnTorch line asked for fields by names that a
plain tuple does not have, and its SpikingJelly line named a monitor `v`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spikestore
from spikestore.monitor import AttributeMonitor, OutputMonitor

README = Path(__file__).resolve().parents[1] / "README.md"


def _lines(start: str) -> list[str]:
    lines = [ln for ln in README.read_text().splitlines() if ln.startswith(start)]
    assert lines, f"README has no line starting {start!r}"
    return lines


def test_readme_membrane_trace_lines_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    snn = pytest.importorskip("snntorch")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikestore import plot

    class SJNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 8)
            self.sn1 = neuron.IFNode(step_mode="m", store_v_seq=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.sn1(self.fc(x))

    class SnnTorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 8)
            self.lif = snn.Leaky(beta=0.9)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.lif(self.fc(x))

    torch.manual_seed(0)
    sj = tmp_path / "sj.spikes"
    net = SJNet()
    with spikestore.StoreWriter(sj) as w:
        OutputMonitor(net, neuron.IFNode, store=w)
        AttributeMonitor("v_seq", False, net, neuron.IFNode, store=w)
        for _ in range(5):
            with torch.no_grad():
                net(torch.rand(3, 2, 4) * 3)
            net.sn1.reset()
    st = tmp_path / "snntorch.spikes"
    net2 = SnnTorchNet()
    with spikestore.StoreWriter(st) as w:
        OutputMonitor(net2, snn.Leaky, store=w)
        with torch.no_grad():
            for _ in range(5):
                net2(torch.rand(2, 4) * 3)

    lines = _lines("plot.membrane_traces(")
    assert len(lines) == 2
    for text in lines:
        path = st if "snnTorch" in text else sj
        store = spikestore.open(path)
        ax = eval(text.split("#")[0], {"plot": plot, "store": store})
        assert ax is not None
        plt.close("all")
