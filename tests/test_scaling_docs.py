"""The README's "Scaling out" example runs as written, under torchrun."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_ddp_demo_runs_under_torchrun(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(# ddp_demo.py\n.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    script = tmp_path / "ddp_demo.py"
    script.write_text(blocks[0])
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc-per-node", "2", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert "[0, 1] {0: 20, 1: 20}" in lines
    assert "torch.Size([2, 8, 32]) torch.Size([16, 32])" in lines
    assert "torch.Size([8, 32])" in lines
