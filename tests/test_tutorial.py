"""The commands of docs/submit-an-optimizer.md run as written, in order, and give a report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "submit-an-optimizer.md"


def test_the_tutorial_commands_pass(tmp_path: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copytree(ROOT / "baselines", tmp_path / "baselines")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OBSBENCH_DEVICE", None)
    for index, block in enumerate(blocks):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (f"block {index} failed ({done.returncode}):\n{block}\n"
                                      f"{done.stdout}\n{done.stderr}")
        if "obsbench verify" in block:
            assert done.stdout.startswith("verified: ")
    report = tmp_path / "reports" / "my_heavy_ball"
    assert (report / "report.html").stat().st_size > 0
    assert (report / "report.pdf").stat().st_size > 0
    assert "my_heavy_ball" in (report / "report.html").read_text()
