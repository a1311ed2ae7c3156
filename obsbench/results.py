"""Run records and tidy tables: the only module that knows file formats.

A run record is one JSON file per run, ``<run_id>.json``, written atomically (temporary file
in the same directory, fsync, rename), so a killed sweep never leaves a partial record.
Tables are tidy: ``runs`` (one row per run), ``curves`` (``run_id, epoch, split, metric,
value``) and ``instruments`` (``run_id, step, quantity, layer, value, hist``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from obsbench.suite import Choice, RunSpec

Status = Literal["ok", "diverged", "failed"]
SPLIT_NAMES = {"train_eval": "train", "valid": "valid", "test": "test"}
"""Evaluation split -> ``split`` column value (DeepOBS calls train-eval metrics "train")."""


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    train_s: float = Field(0.0, description="Seconds spent in training steps.")
    eval_s: float = Field(0.0, description="Seconds spent evaluating (untimed for training).")
    setup_s: float = Field(0.0, description="Seconds spent building problem and optimizer.")
    steps: int = 0
    instruments_s: float = Field(0.0, description="Seconds of train_s spent by instruments.")
    epoch_train_s: list[float] = Field(default_factory=list)


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    obsbench: str
    python: str
    torch: str
    numpy: str
    platform: str
    device: str
    threads: int
    git_commit: str | None = None


class Histogram(BaseModel):
    """A 1-D or 2-D histogram: equal-width ``bins`` per axis over ``limits`` (values outside
    are counted in the edge bins); ``counts`` row-major (first axis slowest)."""

    model_config = ConfigDict(extra="forbid")

    limits: list[tuple[float, float]]
    bins: list[int]
    counts: list[int]


class InstrumentValue(BaseModel):
    """One value of one quantity at one step; ``layer`` is a parameter name or ``total``.
    Histogram quantities carry ``hist`` (and their total count as ``value``)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    step: int
    quantity: str
    layer: str
    value: float
    hist: Histogram | None = None


class RunRecord(BaseModel):
    """Everything about one run: what was run, where, what happened, how long it took."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    run_id: str
    spec: RunSpec
    environment: Environment
    status: Status
    diverged_step: int | None = None
    error: str | None = None
    curves: dict[str, dict[str, list[float]]] = Field(
        default_factory=dict, description="split -> metric -> value per epoch (epoch 0 first)")
    minibatch_losses: list[float] = Field(default_factory=list)
    instruments: list[InstrumentValue] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    source: str = "obsbench"


def record_path(directory: Path, run_id: str) -> Path:
    return directory / f"{run_id}.json"


def write_record(directory: Path, record: RunRecord) -> Path:
    """Write ``record`` atomically; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = record_path(directory, record.run_id)
    fd, tmp = tempfile.mkstemp(prefix=f".{record.run_id}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record.model_dump_json(indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class RecordError(Exception):
    """A file in a results directory is not a valid run record."""


def read_record(path: Path) -> RunRecord:
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise RecordError(f"{path}: not a valid run record: {first}") from None


RECORD_NAME = re.compile(r"^[0-9a-f]{16}\.json$")
SELECTION = "selection.json"


def record_paths(directory: Path) -> list[Path]:
    """Record files in ``directory``: ``<run_id>.json`` (temporary files are hidden)."""
    return sorted(p for p in directory.glob("*.json") if RECORD_NAME.match(p.name))


def write_selection(directory: Path, choices: Sequence[Choice]) -> Path:
    """Write the tuning choices of a suite next to its records, atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SELECTION
    tmp = directory / f".{SELECTION}.tmp"
    payload = [c.model_dump(mode="json") for c in choices]
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, target)
    return target


def read_selection(directory: Path) -> list[Choice]:
    path = directory / SELECTION
    if not path.is_file():
        return []
    return [Choice.model_validate(c) for c in json.loads(path.read_text())]


def read_records(directory: Path) -> Iterator[RunRecord]:
    for path in record_paths(directory):
        yield read_record(path)


# ----------------------------------------------------------------------- tables

RUN_COLUMNS = [
    "run_id", "source", "suite", "problem", "optimizer", "optimizer_kind", "seed", "trial",
    "selected", "tiny",
    "status", "diverged_step", "error", "batch_size", "num_epochs", "hyperparameters",
    "final_train_loss", "final_valid_loss", "final_test_loss", "final_train_accuracy",
    "final_valid_accuracy", "final_test_accuracy", "train_s", "eval_s", "steps", "device",
    "obsbench_version", "torch_version", "git_commit",
    # provenance and checks of imported runs (obsbench.importers); defaults for our own runs
    "source_path", "budget", "schedule", "l2_reg", "optimizer_raw", "hyperparameters_raw",
    "consistent", "checked", "note",
]
"""Columns of the ``runs`` table, shared by obsbench's own runs and imported ones.

``source`` is ``obsbench`` or the published format (``deepobs-1.1``, ``deepobs-1.2``);
``source_path`` the imported file, relative to the imported folder; ``budget`` the Crowded
Valley tuning budget folder (``oneshot``, ``large_budget``, ...); ``schedule`` the
learning-rate schedule: obsbench's schedule kind, ``constant`` for published runs without
one (Crowded Valley's folder ``none``), else Crowded Valley's schedule folder (``cosine``,
``cosine_wr``) or ``custom`` (a published per-epoch schedule outside Crowded Valley);
``l2_reg`` the L2 factor (None: the problem's default); ``optimizer_raw`` and
``hyperparameters_raw`` (JSON) the published optimizer class and hyperparameters before
mapping to obsbench's names; ``checked`` whether the run's epoch-0 test loss could be
compared with the deterministic start of its problem, ``consistent`` the outcome (True
where unchecked); ``note`` what an importer noticed about the run.
"""
RUN_DEFAULTS: dict[str, Any] = {"tiny": False, "selected": False, "consistent": True,
                                "checked": False}
"""Values of the columns a row leaves out (None for the others)."""
CURVE_COLUMNS = ["run_id", "epoch", "split", "metric", "value"]
INSTRUMENT_COLUMNS = ["run_id", "step", "quantity", "layer", "value", "hist"]
MINIBATCH_COLUMNS = ["run_id", "index", "value"]
"""Logged minibatch training losses of imported runs, in the order they were logged."""


def final_value(status: str, values: Sequence[float] | None) -> float | None:
    """The value after the last epoch; None unless the run finished (status ``ok``)."""
    return values[-1] if status == "ok" and values else None


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The ``runs`` table from row dicts; absent columns take :data:`RUN_DEFAULTS` or None.

    Raises:
        ValueError: a row has a key that is not a column.
    """
    complete = []
    for row in rows:
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"not columns of the runs table: {sorted(unknown)}")
        complete.append({c: row.get(c, RUN_DEFAULTS.get(c)) for c in RUN_COLUMNS})
    frame = pd.DataFrame(complete, columns=RUN_COLUMNS)
    frame["diverged_step"] = frame["diverged_step"].astype("Int64")
    finals = [c for c in RUN_COLUMNS if c.startswith("final_")]
    for column in ("l2_reg", "train_s", "eval_s", *finals):
        frame[column] = frame[column].astype("float64")  # all-None columns stay numeric
    for column in ("consistent", "checked"):
        frame[column] = frame[column].astype(bool)
    return frame.sort_values(["suite", "problem", "optimizer", "seed", "run_id"], ignore_index=True)


def curves_frame(rows: Iterable[tuple[str, int, str, str, float]] | dict[str, Any]
                 ) -> pd.DataFrame:
    """The ``curves`` table from ``(run_id, epoch, split, metric, value)`` tuples, or from a
    dict of those columns (faster for many rows)."""
    frame = pd.DataFrame(rows if isinstance(rows, dict) else list(rows), columns=CURVE_COLUMNS)
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    return frame.sort_values(["run_id", "split", "metric", "epoch"], ignore_index=True)


def minibatch_frame(rows: Iterable[tuple[str, int, float]]) -> pd.DataFrame:
    """The ``minibatch`` table from ``(run_id, index, value)`` tuples."""
    frame = pd.DataFrame(list(rows), columns=MINIBATCH_COLUMNS)
    frame["index"] = frame["index"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    return frame.sort_values(["run_id", "index"], ignore_index=True)


def runs_table(records: Iterable[RunRecord], choices: Sequence[Choice] = ()) -> pd.DataFrame:
    """One row per run; ``selected`` marks runs of the settings that tuning chose."""
    chosen = {(c.problem, c.optimizer, json.dumps(c.hyperparameters, sort_keys=True))
              for c in choices}
    rows: list[dict[str, Any]] = []
    for r in records:
        spec = r.spec
        hyperparameters = json.dumps(spec.optimizer.hyperparameters(), sort_keys=True)
        batch_size, num_epochs = spec.problem.sizes(spec.tiny)
        row: dict[str, Any] = {
            "run_id": r.run_id, "source": r.source, "suite": spec.suite,
            "problem": spec.problem_id, "optimizer": spec.optimizer_id,
            "optimizer_kind": spec.optimizer.kind, "seed": spec.seed, "trial": spec.trial,
            "tiny": spec.tiny,
            "status": r.status, "diverged_step": r.diverged_step, "error": r.error,
            "batch_size": batch_size, "num_epochs": num_epochs,
            "hyperparameters": hyperparameters,
            "selected": (spec.problem_id, spec.optimizer_id, hyperparameters) in chosen,
            "train_s": r.timings.train_s, "eval_s": r.timings.eval_s,
            "steps": r.timings.steps, "device": r.environment.device,
            "obsbench_version": r.environment.obsbench,
            "torch_version": r.environment.torch, "git_commit": r.environment.git_commit,
            "schedule": spec.optimizer.schedule.kind,
            "l2_reg": getattr(spec.problem, "l2_reg", None),
        }
        for split in ("train", "valid", "test"):
            for metric in ("loss", "accuracy"):
                row[f"final_{split}_{metric}"] = final_value(
                    r.status, r.curves.get(split, {}).get(metric))
        rows.append(row)
    return runs_frame(rows)


def curves_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Tidy per-epoch metrics: ``run_id, epoch, split, metric, value``."""
    rows = [
        (r.run_id, epoch, split, metric, value)
        for r in records
        for split, metrics in r.curves.items()
        for metric, values in metrics.items()
        for epoch, value in enumerate(values)
    ]
    return curves_frame(rows)


def instruments_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Tidy instrument values: ``run_id, step, quantity, layer, value, hist`` (``hist``: the
    histogram as compact JSON ``{"limits", "bins", "counts"}``, empty for scalar values)."""
    rows = [(r.run_id, v.step, v.quantity, v.layer, v.value,
             v.hist.model_dump_json() if v.hist is not None else "")
            for r in records for v in r.instruments]
    frame = pd.DataFrame(rows, columns=INSTRUMENT_COLUMNS)
    return frame.sort_values(["run_id", "quantity", "layer", "step"], ignore_index=True)


TABLES = {"runs": runs_table, "curves": curves_table, "instruments": instruments_table}


def build_table(name: str, records: list[RunRecord], directory: Path | None = None
                ) -> pd.DataFrame:
    """Table ``name`` of ``records``; the runs table also reads the tuning choices in
    ``directory`` (written by ``obsbench run``)."""
    if name == "runs" and directory is not None:
        return runs_table(records, read_selection(directory))
    return TABLES[name](records)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as parquet or csv, chosen by the suffix, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        raise ValueError(f"{path}: unknown table format '{path.suffix}'; use .parquet or .csv")
    os.replace(tmp, path)


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
