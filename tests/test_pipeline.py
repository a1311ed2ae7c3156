"""The real DVC pipeline (dvc.yaml + params.yaml of this repository) on a tiny suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from obsbench.results import read_table
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _sh(*command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("dvc", path=str(BIN)) is None or shutil.which("git") is None:
        pytest.skip("dvc (in this virtual environment) and git are needed")
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(REPO / "specs", work / "specs")
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "baselines", work / "baselines")  # frozen stages' outputs
    shutil.copy(REPO / ".dvcignore", work)
    # the pipeline depends on the package source; a copy keeps the repository untouched
    shutil.copytree(REPO / "obsbench", work / "obsbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "specs" / "suites" / "smoke.yaml").write_text(
        "kind: benchmark\nproblems: [quadratic_deep, two_d_beale]\noptimizers: [adam, sgd]\n"
        "num_epochs: 2\nseeds: [42]\n")
    (work / "params.yaml").write_text("suite: smoke\nbaseline: cv_quadratic_oneshot\n"
                                      "workers: 1\n")
    _sh("git", "init", "-q", cwd=work)
    _sh("dvc", "init", "-q", cwd=work)
    return work


def test_dvc_repro_runs_the_suite_into_tables_and_caches(project: Path) -> None:
    out = _sh("dvc", "repro", cwd=project)
    assert "Running stage 'run'" in out
    runs = read_table(project / "results" / "tables" / "runs.parquet")
    curves = read_table(project / "results" / "tables" / "curves.parquet")
    assert len(runs) == 4 and set(runs["suite"]) == {"smoke"}
    assert set(curves["epoch"]) == {0, 1, 2}
    report = project / "reports" / "smoke"
    assert (report / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Verdicts against cv_quadratic_oneshot" in (report / "report.html").read_text()
    assert "up to date" in _sh("dvc", "repro", cwd=project)

    # a changed spec reruns the pipeline
    (project / "specs" / "optimizers" / "adam.yaml").write_text("kind: adam\nlr: 0.002\n")
    out = _sh("dvc", "repro", cwd=project)
    assert "Running stage 'run'" in out
    assert "up to date" in _sh("dvc", "repro", cwd=project)
