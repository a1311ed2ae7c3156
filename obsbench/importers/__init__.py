"""Importers: published result formats -> obsbench's ``runs`` and ``curves`` tables.

An importer reads one published run file into an :class:`ImportedRun`; the functions here
turn imported runs into the same tables that :mod:`obsbench.results` builds from obsbench's
own run records, so published and new results are compared by the same code. Formats:

* :mod:`obsbench.importers.deepobs`: DeepOBS 1.1 (the published baselines) and DeepOBS 1.2,
  including the "Descending through a Crowded Valley" results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from obsbench.results import CURVE_COLUMNS, curves_frame, final_value, minibatch_frame, runs_frame


class RunFileError(Exception):
    """A file is not a readable run file of the format; the message says why, in one line."""


def imported_run_id(source: str, relative_path: str) -> str:
    """16 hex digits of a SHA-256 of the source format and the file's relative POSIX path.

    Re-importing the same folder gives the same ids, so an import is idempotent.
    """
    return hashlib.sha256(f"{source}\n{relative_path}".encode()).hexdigest()[:16]


@dataclass
class ImportedRun:
    """One published run, in obsbench's vocabulary, with what the importer found.

    Attributes:
        run_id: see :func:`imported_run_id`.
        source: the published format, e.g. ``deepobs-1.1``.
        source_path: the file, relative to the imported folder (POSIX separators).
        suite: the collection the run was imported from (the imported folder's name).
        problem: test problem name (DeepOBS's names are obsbench's).
        optimizer: obsbench's optimizer name, e.g. ``nag``.
        optimizer_raw: the published optimizer class, e.g. ``MomentumOptimizer``.
        seed: the run's random seed.
        status: ``ok`` or ``diverged`` (a non-finite value anywhere in the run).
        batch_size: training batch size.
        num_epochs: number of training epochs.
        hyperparameters: obsbench's names -> values.
        hyperparameters_raw: the published names -> values.
        l2_reg: L2 factor; None means the problem's default.
        budget: Crowded Valley tuning budget folder, if any.
        schedule: ``constant``, a Crowded Valley schedule folder, or ``custom``.
        selected: whether the run belongs to the setting that tuning chose.
        checked: whether the epoch-0 test loss could be checked against the problem's
            deterministic start.
        consistent: the outcome of that check (True where unchecked).
        notes: what the importer noticed.
        curves: split -> metric -> value per epoch (epoch 0 = before training).
        minibatch_losses: logged minibatch training losses, each once (empty unless kept).
    """

    run_id: str
    source: str
    source_path: str
    suite: str
    problem: str
    optimizer: str
    optimizer_raw: str
    seed: int
    status: str
    batch_size: int
    num_epochs: int
    hyperparameters: dict[str, Any]
    hyperparameters_raw: dict[str, Any]
    l2_reg: float | None = None
    budget: str | None = None
    schedule: str = "constant"
    selected: bool = False
    checked: bool = False
    consistent: bool = True
    notes: list[str] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    minibatch_losses: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """This run's row of the ``runs`` table."""
        row: dict[str, Any] = {
            "run_id": self.run_id, "source": self.source, "suite": self.suite,
            "problem": self.problem, "optimizer": self.optimizer,
            "optimizer_kind": self.optimizer, "seed": self.seed, "selected": self.selected,
            "status": self.status, "batch_size": self.batch_size,
            "num_epochs": self.num_epochs,
            "hyperparameters": json.dumps(self.hyperparameters, sort_keys=True),
            "source_path": self.source_path, "budget": self.budget, "schedule": self.schedule,
            "l2_reg": self.l2_reg, "optimizer_raw": self.optimizer_raw,
            "hyperparameters_raw": json.dumps(self.hyperparameters_raw, sort_keys=True),
            "consistent": self.consistent, "checked": self.checked,
            "note": "; ".join(self.notes) or None,
        }
        for split in ("train", "valid", "test"):
            for metric in ("loss", "accuracy"):
                values = self.curves.get(split, {}).get(metric)
                row[f"final_{split}_{metric}"] = final_value(self.status, values)
        return row


def runs_table(runs: Iterable[ImportedRun]) -> pd.DataFrame:
    """The ``runs`` table (:data:`obsbench.results.RUN_COLUMNS`) of imported runs."""
    return runs_frame(r.row() for r in runs)


def curves_table(runs: Iterable[ImportedRun]) -> pd.DataFrame:
    """The ``curves`` table (``run_id, epoch, split, metric, value``) of imported runs."""
    columns: dict[str, list[Any]] = {name: [] for name in CURVE_COLUMNS}
    for r in runs:
        for split, metrics in r.curves.items():
            for metric, values in metrics.items():
                n = len(values)
                columns["run_id"] += [r.run_id] * n
                columns["epoch"] += range(n)
                columns["split"] += [split] * n
                columns["metric"] += [metric] * n
                columns["value"] += values
    return curves_frame(columns)


def minibatch_table(runs: Iterable[ImportedRun]) -> pd.DataFrame:
    """The ``minibatch`` table (``run_id, index, value``) of imported runs."""
    return minibatch_frame((r.run_id, i, value) for r in runs
                           for i, value in enumerate(r.minibatch_losses))
