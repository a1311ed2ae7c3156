"""Baselines: obsbench's own results of its protocol suites, frozen into ``baselines/``.

A baseline is a folder ``baselines/<suite>/`` holding the suite's tables, not its raw run
records: ``runs.parquet`` (every run, final values), ``curves.parquet`` (per-epoch curves of
the runs of the chosen settings), ``selection.json`` (what tuning chose) and ``meta.json``
(the obsbench version and git commit, the resolved specs, the hardware and how to regenerate
it). Users compare their runs with a baseline without running it again.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from obsbench.catalog import Catalog
from obsbench.results import (
    SELECTION,
    curves_table,
    read_records,
    read_selection,
    runs_table,
    write_table,
)
from obsbench.suite import expand

META = "meta.json"


@dataclass(frozen=True)
class Baseline:
    """What ``meta.json`` says about one baseline folder."""

    name: str
    path: Path
    meta: dict[str, Any]

    @property
    def runs(self) -> int:
        return int(self.meta.get("runs", 0))


def freeze(suite_id: str, catalog: Catalog, results: Path, out: Path,
           command: str) -> Baseline:
    """Write the baseline of ``suite_id`` from the run records in ``results`` into
    ``out/<suite_id>/``.

    Raises:
        ValueError: the records do not cover the suite (run it to the end first).
    """
    records = list(read_records(results))
    choices = read_selection(results)
    tiny = any(r.spec.tiny for r in records)  # a smoke-test baseline of the tiny variants
    wanted = {r.run_id for r in expand(suite_id, catalog, tiny=tiny)}
    have = {r.run_id for r in records}
    missing = wanted - have
    if missing:
        raise ValueError(f"{results}: {len(missing)} of the suite's {len(wanted)} trial runs "
                         "have no record; run the suite to the end first")
    if not choices:
        raise ValueError(f"{results}: no {SELECTION}; run the suite with `obsbench run`")
    runs = runs_table(records, choices)
    runs = runs[runs["suite"] == suite_id].reset_index(drop=True)
    selected = set(runs.loc[runs["selected"], "run_id"])
    curves = curves_table(r for r in records if r.run_id in selected)
    folder = out / suite_id
    folder.mkdir(parents=True, exist_ok=True)
    write_table(runs, folder / "runs.parquet")
    write_table(curves, folder / "curves.parquet")
    (folder / SELECTION).write_text((results / SELECTION).read_text())
    first = records[0].environment
    meta = {
        "suite": suite_id,
        "runs": len(runs),
        "statuses": {k: int(v) for k, v in runs["status"].value_counts().items()},
        "problems": sorted(runs["problem"].unique()),
        "optimizers": sorted(runs["optimizer"].unique()),
        "obsbench": first.obsbench,
        "git_commit": first.git_commit,
        "torch": first.torch,
        "device": first.device,
        "hardware": {"platform": platform.platform(), "processor": platform.processor(),
                     "cores": os.cpu_count()},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "train_hours": round(float(runs["train_s"].sum()) / 3600, 3),
        "regenerate": command,
        "specs": _specs(suite_id, catalog),
    }
    (folder / META).write_text(json.dumps(meta, indent=1) + "\n")
    return Baseline(suite_id, folder, meta)


def _specs(suite_id: str, catalog: Catalog) -> dict[str, Any]:
    """The suite's resolved specs, as they were when the baseline was frozen."""
    suite = catalog.get("suites", suite_id)
    specs: dict[str, Any] = {"suite": suite.model_dump(mode="json")}
    for _, family, ref in suite.references():  # type: ignore[attr-defined]
        specs.setdefault(family, {})[ref] = catalog.get(family, ref).model_dump(mode="json")
    return specs


def available(root: Path) -> list[Baseline]:
    """The baselines under ``root`` (folders with a ``meta.json``), by name."""
    if not root.is_dir():
        return []
    found = []
    for meta in sorted(root.glob(f"*/{META}")):
        found.append(Baseline(meta.parent.name, meta.parent, json.loads(meta.read_text())))
    return found


def load(baseline: Baseline) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and curves tables of a baseline."""
    return (pd.read_parquet(baseline.path / "runs.parquet"),
            pd.read_parquet(baseline.path / "curves.parquet"))
