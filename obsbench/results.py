"""Run records and tidy tables: the only module that knows file formats.

A run record is one JSON file per run, ``<run_id>.json``, written atomically (temporary file
in the same directory, fsync, rename), so a killed sweep never leaves a partial record.
Tables are tidy: ``runs`` (one row per run), ``curves`` (``run_id, epoch, split, metric,
value``) and ``instruments`` (``run_id, step, quantity, layer, value``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from obsbench.suite import RunSpec

Status = Literal["ok", "diverged", "failed"]
SPLIT_NAMES = {"train_eval": "train", "valid": "valid", "test": "test"}
"""Evaluation split -> ``split`` column value (DeepOBS calls train-eval metrics "train")."""


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    train_s: float = Field(0.0, description="Seconds spent in training steps.")
    eval_s: float = Field(0.0, description="Seconds spent evaluating (untimed for training).")
    setup_s: float = Field(0.0, description="Seconds spent building problem and optimizer.")
    steps: int = 0
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


class InstrumentValue(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    step: int
    quantity: str
    layer: str
    value: float


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


def record_paths(directory: Path) -> list[Path]:
    """Record files in ``directory`` (temporary files of interrupted writes excluded)."""
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def read_records(directory: Path) -> Iterator[RunRecord]:
    for path in record_paths(directory):
        yield read_record(path)


def has_record(directory: Path, run_id: str) -> bool:
    return record_path(directory, run_id).is_file()


# ----------------------------------------------------------------------- tables

RUN_COLUMNS = [
    "run_id", "source", "suite", "problem", "optimizer", "optimizer_kind", "seed", "tiny",
    "status", "diverged_step", "error", "batch_size", "num_epochs", "hyperparameters",
    "final_train_loss", "final_valid_loss", "final_test_loss", "final_train_accuracy",
    "final_valid_accuracy", "final_test_accuracy", "train_s", "eval_s", "steps", "device",
    "obsbench_version", "torch_version", "git_commit",
]
CURVE_COLUMNS = ["run_id", "epoch", "split", "metric", "value"]
INSTRUMENT_COLUMNS = ["run_id", "step", "quantity", "layer", "value"]


def _final(record: RunRecord, split: str, metric: str) -> float | None:
    """The value after the last epoch; None unless the run finished (status ``ok``)."""
    values = record.curves.get(split, {}).get(metric) if record.status == "ok" else None
    return values[-1] if values else None


def runs_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run."""
    rows: list[dict[str, Any]] = []
    for r in records:
        spec = r.spec
        row: dict[str, Any] = {
            "run_id": r.run_id, "source": r.source, "suite": spec.suite,
            "problem": spec.problem_id, "optimizer": spec.optimizer_id,
            "optimizer_kind": spec.optimizer.kind, "seed": spec.seed, "tiny": spec.tiny,
            "status": r.status, "diverged_step": r.diverged_step, "error": r.error,
            "batch_size": spec.problem.sizes(spec.tiny)[0],
            "num_epochs": spec.problem.sizes(spec.tiny)[1],
            "hyperparameters": json.dumps(spec.optimizer.hyperparameters(), sort_keys=True),
            "train_s": r.timings.train_s, "eval_s": r.timings.eval_s,
            "steps": r.timings.steps, "device": r.environment.device,
            "obsbench_version": r.environment.obsbench,
            "torch_version": r.environment.torch, "git_commit": r.environment.git_commit,
        }
        for split in ("train", "valid", "test"):
            for metric in ("loss", "accuracy"):
                row[f"final_{split}_{metric}"] = _final(r, split, metric)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for column in ("diverged_step",):
        frame[column] = frame[column].astype("Int64")
    return frame.sort_values(["suite", "problem", "optimizer", "seed", "run_id"], ignore_index=True)


def curves_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Tidy per-epoch metrics: ``run_id, epoch, split, metric, value``."""
    rows = [
        (r.run_id, epoch, split, metric, value)
        for r in records
        for split, metrics in r.curves.items()
        for metric, values in metrics.items()
        for epoch, value in enumerate(values)
    ]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values(["run_id", "split", "metric", "epoch"], ignore_index=True)


def instruments_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Tidy instrument values: ``run_id, step, quantity, layer, value``."""
    rows = [(r.run_id, v.step, v.quantity, v.layer, v.value) for r in records
            for v in r.instruments]
    frame = pd.DataFrame(rows, columns=INSTRUMENT_COLUMNS)
    return frame.sort_values(["run_id", "quantity", "layer", "step"], ignore_index=True)


TABLES = {"runs": runs_table, "curves": curves_table, "instruments": instruments_table}


def build_table(name: str, records: list[RunRecord]) -> pd.DataFrame:
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
