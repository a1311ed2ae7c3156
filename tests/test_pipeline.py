"""The real DVC pipeline (dvc.yaml, params.yaml and .dvc/ of this repository) on a tiny
suite, in a temporary git repository: no mocks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obsbench.cli import main
from obsbench.results import read_table
from tests.conftest import REPO

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIRST = {"validate", "run@adam", "run@sgd", "tables", "scores", "report"}


def _sh(*command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def _changed(project: Path) -> set[str]:
    """The stages `dvc status` says are out of date."""
    out = _sh("dvc", "status", "--json", cwd=project)
    status = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    return {name.split(":")[-1] for name in status}


def _out_of_date_runs(project: Path, expected: set[str]) -> set[str]:
    """The run stages `dvc status` lists, checking that it lists nothing outside
    ``expected`` (it lists a stage whose own dependencies changed, not those downstream)."""
    changed = _changed(project)
    assert changed <= expected, changed
    return {s for s in changed if s.startswith("run@")}


def _set_optimizers(project: Path, names: list[str]) -> None:
    (project / "specs" / "suites" / "smoke.yaml").write_text(
        "kind: benchmark\nproblems: [quadratic_deep, two_d_beale]\n"
        f"optimizers: [{', '.join(names)}]\nnum_epochs: 2\nseeds: [42]\n")
    (project / "params.yaml").write_text(
        f"suite: smoke\noptimizers: [{', '.join(names)}]\nbaseline: cv_quadratic_oneshot\n"
        "workers: 1\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The pipeline run once (`dvc repro` in a fresh repository); the output of that run."""
    if shutil.which("dvc", path=str(BIN)) is None or shutil.which("git") is None:
        pytest.skip("dvc (in this virtual environment) and git are needed")
    work = tmp_path_factory.mktemp("pipeline") / "project"
    work.mkdir()
    shutil.copytree(REPO / "specs", work / "specs")
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "baselines", work / "baselines")  # frozen stages' outputs
    shutil.copy(REPO / ".dvcignore", work)
    # the pipeline depends on the package source; a copy keeps the repository untouched
    shutil.copytree(REPO / "obsbench", work / "obsbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _set_optimizers(work, ["adam", "sgd"])
    _sh("git", "init", "-q", cwd=work)
    _sh("dvc", "init", "-q", cwd=work)
    # the repository's DVC config and plot templates (the offline HTML page)
    shutil.copy(REPO / ".dvc" / "config", work / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", work / ".dvc" / "plots")
    return work, _sh("dvc", "repro", cwd=work)


@pytest.fixture
def project(built: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the built project (DVC cache, lock file and outputs included) to change."""
    copy = tmp_path / "project"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy


def test_dvc_repro_runs_each_optimizer_into_tables_scores_and_report(
        built: tuple[Path, str]) -> None:
    project, out = built
    assert _ran(out) == FIRST
    assert sorted(p.name for p in (project / "results" / "smoke").glob("[!.]*")) == ["adam",
                                                                                 "sgd"]
    runs = read_table(project / "results" / "tables" / "smoke" / "runs.parquet")
    curves = read_table(project / "results" / "tables" / "smoke" / "curves.parquet")
    assert len(runs) == 4 and set(runs["suite"]) == {"smoke"} and runs["selected"].all()
    assert set(curves["epoch"]) == {0, 1, 2}
    scores = project / "results" / "scores" / "smoke"
    metrics = json.loads((scores / "metrics.json").read_text())
    assert set(metrics["problems"]) == {"quadratic_deep", "two_d_beale"}
    assert set(metrics["mean_rank"]) == {"adam", "sgd"}
    report = project / "reports" / "smoke"
    assert (report / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Verdicts against cv_quadratic_oneshot" in (report / "report.html").read_text()
    shown = _sh("dvc", "metrics", "show", cwd=project)
    assert "problems.quadratic_deep.best_final" in shown


def test_a_second_repro_changes_nothing(project: Path) -> None:
    assert _changed(project) == set()
    start = time.perf_counter()
    out = _sh("dvc", "repro", cwd=project)
    took = time.perf_counter() - start
    print(f"second dvc repro: {took:.2f} s")
    assert _ran(out) == set() and _changed(project) == set()


def test_a_new_optimizer_reruns_only_its_runs(project: Path) -> None:
    (project / "specs" / "optimizers" / "sgd_fast.yaml").write_text("kind: sgd\nlr: 0.05\n")
    _set_optimizers(project, ["adam", "sgd", "sgd_fast"])
    expected = {"validate", "run@sgd_fast", "tables", "scores", "report"}
    assert _out_of_date_runs(project, expected) == {"run@sgd_fast"}
    assert _ran(_sh("dvc", "repro", cwd=project)) == expected
    assert _changed(project) == set()
    runs = read_table(project / "results" / "tables" / "smoke" / "runs.parquet")
    assert sorted(set(runs["optimizer"])) == ["adam", "sgd", "sgd_fast"]


def test_an_edited_optimizer_reruns_only_its_runs(project: Path) -> None:
    (project / "specs" / "optimizers" / "adam.yaml").write_text("kind: adam\nlr: 0.002\n")
    expected = {"validate", "run@adam", "tables", "scores", "report"}
    assert _out_of_date_runs(project, expected) == {"run@adam"}
    assert _ran(_sh("dvc", "repro", cwd=project)) == expected
    # a README or an unused spec reruns no run
    (project / "README.md").write_text("changed\n")
    (project / "specs" / "problems" / "mnist1d_gru.yaml").write_text(
        (project / "specs" / "problems" / "mnist1d_gru.yaml").read_text() + "\n# note\n")
    assert not any(s.startswith("run@") for s in _changed(project))


def test_the_pipeline_lists_must_agree(project: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    (project / "params.yaml").write_text(
        "suite: smoke\noptimizers: [adam, lion]\nbaseline: x\nworkers: 1\n")
    assert main(["validate", "specs", "--pipeline", "params.yaml"]) == 2
    err = capsys.readouterr().err
    assert "params.yaml: optimizers: 'lion' is not in suite smoke's optimizers" in err
    assert "smoke.yaml: optimizers: 'sgd' is not in params.yaml's optimizers" in err
    assert main(["run", "smoke", "--optimizer", "lion", "--results", "x"]) == 2
    assert "'lion' is not in suite smoke's optimizers" in capsys.readouterr().err


def test_dvc_plots_show_renders_offline(project: Path) -> None:
    _sh("dvc", "plots", "show", cwd=project)
    page = project / "dvc_plots" / "index.html"
    html = page.read_text()
    assert "vegaEmbed(" in html and "solver" in html
    # nothing that a browser would fetch: no src/href to a URL, and the CSP forbids all
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "default-src 'none'" in html
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed")
        return
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        view = browser.new_page()
        view.on("request", lambda r: requests.append(r.url)
                if r.url != page.resolve().as_uri() else None)
        view.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        view.on("pageerror", lambda e: problems.append(str(e)))
        view.goto(page.resolve().as_uri(), wait_until="load")
        view.wait_for_function("document.querySelectorAll('svg').length >= 2")
        marks = view.eval_on_selector_all("svg path", "s => s.length")
        browser.close()
    assert requests == [] and problems == [] and marks > 0
