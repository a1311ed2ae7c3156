"""Baselines: freezing a finished protocol suite into tables with its provenance, and listing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from obsbench.cli import main
from tests.conftest import SpecWriter

SPECS = {
    "problems/quad": "kind: quadratic_deep\nnum_epochs: 2\n",
    "optimizers/sgd": "kind: sgd\n",
    "optimizers/adam": "kind: adam\n",
    "tuning/two": "kind: grid\nspace: {lr: [1.0e-3, 1.0e-2]}\nrerun_seeds: 2\n",
    "suites/tiny_protocol": ("kind: benchmark\nproblems: [quad]\noptimizers: [sgd, adam]\n"
                             "tuning: two\n"),
}


def test_freeze_and_list(spec_root: SpecWriter, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    root = spec_root(SPECS)
    results, out = tmp_path / "results", tmp_path / "baselines"
    freeze = ["baselines", "--dir", str(out), "freeze", "tiny_protocol", "--specs", str(root),
              "--results", str(results)]
    assert main(freeze) == 2  # nothing has run yet
    assert "no run records" in capsys.readouterr().err

    assert main(["run", "tiny_protocol", "--specs", str(root), "--results", str(results),
                 "--tiny"]) == 0
    assert main(freeze) == 0
    folder = out / "tiny_protocol"
    assert sorted(p.name for p in folder.iterdir()) == [
        "curves.parquet", "meta.json", "runs.parquet", "selection.json"]
    runs = pd.read_parquet(folder / "runs.parquet")
    assert len(runs) == 2 * 2 + 2  # 2 trials per optimizer, + 1 more seed for each choice
    assert runs["selected"].sum() == 4
    curves = pd.read_parquet(folder / "curves.parquet")
    assert set(curves["run_id"]) == set(runs.loc[runs["selected"], "run_id"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["runs"] == 6 and meta["optimizers"] == ["adam", "sgd"]
    assert meta["specs"]["tuning"]["two"]["kind"] == "grid"
    assert meta["regenerate"].startswith("obsbench run tiny_protocol")
    assert meta["hardware"]["cores"] >= 1

    capsys.readouterr()
    assert main(["baselines", "--dir", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:3] == ["tiny_protocol", "6", "quad"]


def test_freeze_refuses_an_unfinished_suite(spec_root: SpecWriter, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = spec_root(SPECS)
    results = tmp_path / "results"
    results.mkdir()
    assert main(["baselines", "--dir", str(tmp_path / "b"), "freeze", "tiny_protocol",
                 "--specs", str(root), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "4 of the suite's 4 trial runs have no record" in err
    assert len(err.strip().splitlines()) == 1
