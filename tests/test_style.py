"""ruff and mypy are part of the test suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["mypy"]])
def test_clean(command: list[str]) -> None:
    tool = shutil.which(command[0], path=str(BIN))
    if tool is None:
        pytest.skip(f"{command[0]} is not installed (pip install -e '.[test]')")
    done = subprocess.run([tool, *command[1:]], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
