"""Importers of published results: DeepOBS 1.1 and DeepOBS 1.2 / Crowded Valley run files.

Small files written here exercise each quirk of the formats; the published data in
``shared/published`` (when present) checks the importer against the real files.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from obsbench.cli import main
from obsbench.importers import ImportedRun, curves_table, minibatch_table, runs_table
from obsbench.importers.deepobs import (
    OPTIMIZERS,
    QUADRATIC_DEEP_INITIAL_TEST_LOSS,
    V11,
    V12,
    ImportResult,
    import_deepobs,
    read_run_file,
)
from obsbench.results import RUN_COLUMNS, read_table, runs_frame, write_table
from tests.conftest import PUBLISHED

BASELINES = PUBLISHED / "deepobs-baselines-1.1"
CROWDED_VALLEY = PUBLISHED / "crowded-valley-sample"
Q0 = 353.44676426478793  # quadratic_deep's epoch-0 test loss as DeepOBS writes it
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------- file writers

def v11_run(**changes: Any) -> dict[str, Any]:
    """A DeepOBS 1.1 run file of quadratic_deep, 3 epochs, momentum; ``changes`` override."""
    data: dict[str, Any] = {
        "train_losses": [353.9, 120.0, 100.0, 90.0],
        "test_losses": [Q0, 121.0, 101.0, 91.0],
        "minibatch_train_losses": [369.7, 150.0, 150.0, 110.0, 110.0, 95.0],
        "optimizer": "MomentumOptimizer", "testproblem": "quadratic_deep",
        "weight_decay": None, "batch_size": 128, "num_epochs": 3, "learning_rate": 0.01,
        "lr_sched_epochs": None, "lr_sched_factors": None, "random_seed": 42,
        "train_log_interval": 1, "hyperparams": {"momentum": 0.99, "use_nesterov": False},
    }
    return {**data, **changes}


def v12_run(**changes: Any) -> dict[str, Any]:
    """A DeepOBS 1.2 TensorFlow run file (Crowded Valley style) of cifar10_3c3d, 2 epochs."""
    data: dict[str, Any] = {
        "testproblem": "cifar10_3c3d", "batch_size": 128, "num_epochs": 2, "random_seed": 43,
        "l2_reg": None, "optimizer_name": "AdamOptimizer",
        "optimizer_hyperparams": {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999,
                                  "epsilon": 1e-08, "use_locking": False},
        "training_params": {"lr_sched_epochs": [], "lr_sched_factors": []},
        "train_losses": [2.3, 1.5, 1.2], "valid_losses": [2.31, 1.6, 1.3],
        "test_losses": [2.32, 1.61, 1.31],
        "train_accuracies": [0.1, 0.5, 0.6], "valid_accuracies": [0.11, 0.49, 0.58],
        "test_accuracies": [0.09, 0.48, 0.57],
        # the TensorFlow runner's doubling: every logged loss twice
        "minibatch_train_losses": [2.4, 2.4, 2.0, 2.0, 1.6, 1.6, 1.4, 1.4],
    }
    return {**data, **changes}


def write(root: Path, relative: str, data: dict[str, Any] | str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    # Python's json writes NaN and infinities as the bare tokens NaN, Infinity, -Infinity
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=4))
    return path


V11_SETTING = "quadratic_deep/MomentumOptimizer/num_epochs__3__batch_size__128__lr__1.e-02"
CV_SETTING = "cifar10_3c3d/AdamOptimizer/num_epochs__2__batch_size__128__learning_rate__1.e-03"


def read_one(root: Path, relative: str, data: dict[str, Any], **kw: Any) -> ImportedRun:
    return read_run_file(write(root, relative, data), root, **kw)


# ------------------------------------------------------------------- small files

def test_v11_file_maps_keys_splits_and_hyperparameters(tmp_path: Path) -> None:
    run = read_one(tmp_path, f"{V11_SETTING}/random_seed__42__2019-02-13-14-36-17.json",
                   v11_run(), keep_minibatch=True)
    assert (run.source, run.problem, run.optimizer, run.optimizer_raw) == (
        V11, "quadratic_deep", "momentum", "MomentumOptimizer")
    assert run.hyperparameters == {"lr": 0.01, "momentum": 0.99}
    assert run.hyperparameters_raw == {"learning_rate": 0.01, "momentum": 0.99,
                                       "use_nesterov": False}
    assert (run.seed, run.batch_size, run.num_epochs, run.status) == (42, 128, 3, "ok")
    assert run.l2_reg is None and run.schedule == "constant" and run.budget is None
    assert run.curves == {"train": {"loss": [353.9, 120.0, 100.0, 90.0]},
                          "test": {"loss": [Q0, 121.0, 101.0, 91.0]}}  # 1.1: no valid split
    # 1.1 logs every step once (train_log_interval 1): pairs that happen to be equal stay
    assert run.minibatch_losses == [369.7, 150.0, 150.0, 110.0, 110.0, 95.0]
    assert run.checked and run.consistent and run.notes == []


def test_v11_nan_and_infinity_literals_make_a_diverged_run(tmp_path: Path) -> None:
    data = v11_run(train_losses=[353.9, INF, NAN, NAN], test_losses=[Q0, -INF, NAN, NAN],
                   minibatch_train_losses=[369.7, 5e9, INF, NAN, NAN, NAN])
    path = write(tmp_path, f"{V11_SETTING}/random_seed__42__t.json", data)
    text = path.read_text()
    assert "NaN" in text and "Infinity" in text and "-Infinity" in text
    run = read_run_file(path, tmp_path, keep_minibatch=True)
    assert run.status == "diverged"
    assert math.isinf(run.curves["test"]["loss"][1]) and math.isnan(run.curves["test"]["loss"][3])
    assert len(run.minibatch_losses) == 6  # kept as written: 1.1 is not doubled
    row = run.row()
    assert row["final_test_loss"] is None and row["final_train_loss"] is None  # as obsbench's


def test_v12_tensorflow_file_undoubles_minibatch_losses_and_maps_names(tmp_path: Path) -> None:
    relative = f"large_budget/none/{CV_SETTING}/random_seed__43__2020-05-11-16-08-51.json"
    run = read_one(tmp_path, relative, v12_run(), keep_minibatch=True)
    assert (run.source, run.optimizer, run.status) == (V12, "adam", "ok")
    assert run.minibatch_losses == [2.4, 2.0, 1.6, 1.4]
    assert run.hyperparameters == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08}
    assert run.hyperparameters_raw["use_locking"] is False
    assert run.l2_reg is None  # l2_reg: null = the problem's default
    assert (run.budget, run.schedule, run.source_path) == ("large_budget", "constant", relative)
    assert set(run.curves) == {"train", "valid", "test"}
    assert run.curves["valid"] == {"loss": [2.31, 1.6, 1.3], "accuracy": [0.11, 0.49, 0.58]}
    assert not run.checked and run.consistent  # cifar10_3c3d has no deterministic start
    row = run.row()
    assert row["final_test_accuracy"] == 0.57 and row["final_valid_loss"] == 1.3


def test_v12_minibatch_losses_kept_when_not_doubled(tmp_path: Path) -> None:
    # the PyTorch runner logs each loss once
    run = read_one(tmp_path, f"{CV_SETTING}/random_seed__42__t.json",
                   v12_run(minibatch_train_losses=[2.4, 2.0, 1.6]), keep_minibatch=True)
    assert run.minibatch_losses == [2.4, 2.0, 1.6]
    assert read_one(tmp_path, f"{CV_SETTING}/random_seed__43__t.json", v12_run()
                    ).minibatch_losses == []  # only kept on request


def test_v12_aborted_run_keeps_every_value_and_notes_the_filler(tmp_path: Path) -> None:
    # DeepOBS 1.2 aborted after epoch 1's training hit NaN: epoch 2 repeats epoch 0's values,
    # and the doubled minibatch list ends with one copy of the first loss per skipped epoch
    data = v12_run(train_losses=[2.3, 1e20, 2.3], valid_losses=[2.31, 1e20, 2.31],
                   test_losses=[2.32, 1e20, 2.32], train_accuracies=[0.1, 0.1, 0.1],
                   valid_accuracies=[0.11, 0.1, 0.11], test_accuracies=[0.09, 0.1, 0.09],
                   minibatch_train_losses=[2.4, 2.4, 1e20, 1e20, NAN, NAN, 2.4])
    run = read_one(tmp_path, f"{CV_SETTING}/random_seed__42__t.json", data,
                   keep_minibatch=True)
    assert run.status == "diverged"
    assert run.curves["test"]["loss"] == [2.32, 1e20, 2.32]  # nothing dropped
    assert run.minibatch_losses[:2] == [2.4, 1e20] and math.isnan(run.minibatch_losses[2])
    assert len(run.minibatch_losses) == 3
    assert any("epochs 2-2 repeat the epoch-0 values" in n for n in run.notes)


@pytest.mark.parametrize(("raw_class", "flags", "expected"), [
    ("MomentumOptimizer", {"use_nesterov": True}, "nag"),
    ("MomentumOptimizer", {"use_nesterov": False}, "momentum"),
    ("AdaBoundOptimizer", {"amsbound": True}, "amsbound"),
    ("AdaBoundOptimizer", {"amsbound": False}, "adabound"),
    ("SGD", {"momentum": 0.9, "nesterov": True}, "nag"),
    ("SGD", {"momentum": 0.9}, "momentum"),
    ("SGD", {"momentum": 0}, "sgd"),
    ("Adam", {"amsgrad": True}, "amsgrad"),
    *[(raw_class, {}, name) for raw_class, name in OPTIMIZERS.items()],
])
def test_optimizer_classes_and_variant_flags(tmp_path: Path, raw_class: str,
                                             flags: dict[str, Any], expected: str) -> None:
    hyper = {"learning_rate": 0.01, **flags}
    run = read_one(tmp_path, f"p/{raw_class}/s/random_seed__42__t.json",
                   v12_run(optimizer_name=raw_class, optimizer_hyperparams=hyper))
    assert run.optimizer == expected and run.optimizer_raw == raw_class
    assert not set(run.hyperparameters) & {"use_nesterov", "nesterov", "amsbound", "amsgrad"}


def test_optimizer_folder_label_agrees_with_the_file(tmp_path: Path) -> None:
    # Crowded Valley's NAGOptimizer folder holds MomentumOptimizer files with use_nesterov
    hyper = {"learning_rate": 0.01, "momentum": 0.9, "use_locking": False, "use_nesterov": True}
    run = read_one(tmp_path, "q/NAGOptimizer/s/random_seed__42__t.json",
                   v12_run(optimizer_name="MomentumOptimizer", optimizer_hyperparams=hyper))
    assert run.optimizer == "nag" and run.notes == []
    hyper["use_nesterov"] = False
    run = read_one(tmp_path, "q/NAGOptimizer/s/random_seed__43__t.json",
                   v12_run(optimizer_name="MomentumOptimizer", optimizer_hyperparams=hyper))
    assert run.optimizer == "momentum" and "folder 'NAGOptimizer'" in run.notes[0]


def test_unknown_optimizer_class_is_named_and_noted(tmp_path: Path) -> None:
    run = read_one(tmp_path, "p/AdaBeliefOptimizer/s/random_seed__42__t.json",
                   v12_run(optimizer_name="AdaBeliefOptimizer"))
    assert run.optimizer == "ada_belief" and "unknown optimizer class" in run.notes[0]


def test_pytorch_hyperparameter_names(tmp_path: Path) -> None:
    run = read_one(tmp_path, "p/RMSprop/s/random_seed__42__t.json", v12_run(
        optimizer_name="RMSprop", weight_decay=0.002, l2_reg=None,
        optimizer_hyperparams={"lr": 0.001, "alpha": 0.9, "eps": 1e-10, "betas": [0.8, 0.9]}))
    assert run.hyperparameters == {"lr": 0.001, "decay": 0.9, "eps": 1e-10, "beta1": 0.8,
                                   "beta2": 0.9}
    data = v12_run(weight_decay=0.002)
    del data["l2_reg"]  # the PyTorch runner (and early Crowded Valley runs) write weight_decay
    assert read_one(tmp_path, "p/SGD/s/random_seed__43__t.json", data).l2_reg == 0.002
    assert read_one(tmp_path, "p/SGD/s/random_seed__44__t.json", v12_run(l2_reg=5e-4)
                    ).l2_reg == 5e-4


def test_crowded_valley_folders_give_budget_and_schedule(tmp_path: Path) -> None:
    cosine = {"lr_sched_epochs": [1, 2], "lr_sched_factors": [0.5, 0.0]}
    run = read_one(tmp_path, f"results/oneshot/cosine/{CV_SETTING}/random_seed__42__t.json",
                   v12_run(training_params=cosine))
    assert (run.budget, run.schedule, run.notes) == ("oneshot", "cosine", [])
    run = read_one(tmp_path, f"medium_budget/none/{CV_SETTING}/random_seed__42__t.json",
                   v12_run(training_params=cosine))
    assert (run.budget, run.schedule) == ("medium_budget", "constant")
    assert "schedule folder 'none'" in run.notes[0]
    # outside Crowded Valley's grammar: the schedule comes from the file
    run = read_one(tmp_path, f"elsewhere/{CV_SETTING}/random_seed__42__t.json",
                   v12_run(training_params=cosine))
    assert (run.budget, run.schedule) == (None, "custom")
    # the budget is found from the absolute path, when PATH is a folder inside results/
    root = tmp_path / "cv" / "large_budget" / "cosine_wr"
    run = read_one(root, f"{CV_SETTING}/random_seed__42__t.json", v12_run(training_params=cosine))
    assert (run.budget, run.schedule) == ("large_budget", "cosine_wr")


@pytest.mark.parametrize(("problem", "test_loss", "checked", "consistent"), [
    ("quadratic_deep", Q0, True, True),
    ("quadratic_deep", 353.44684, True, True),  # 4 decimals
    ("quadratic_deep", 347.3582327706473, True, False),
    ("two_d_rosenbrock", 158.5, True, True),  # (1 + 0.5)^2 + 100 (1.5 - 0.25)^2
    ("two_d_rosenbrock", 150.0, True, False),
    ("two_d_beale", 169680.83, True, True),  # float32, as DeepOBS
    ("two_d_branin", 95.8447, True, True),
    ("mnist_vae", 181.5, False, True),
])
def test_consistency_check_of_deterministic_starts(tmp_path: Path, problem: str,
                                                   test_loss: float, checked: bool,
                                                   consistent: bool) -> None:
    run = read_one(tmp_path, f"{problem}/MomentumOptimizer/s/random_seed__42__t.json",
                   v11_run(testproblem=problem, test_losses=[test_loss, 1.0, 1.0, 1.0]))
    assert (run.checked, run.consistent) == (checked, consistent)
    assert bool(run.notes) == (not consistent)
    if not consistent:
        assert "deterministic" in run.notes[0]


def test_canonical_quadratic_deep_start_is_obsbench_evaluation() -> None:
    # tests/test_problems.py checks obsbench's own evaluation against the same number
    assert round(Q0, 4) == QUADRATIC_DEEP_INITIAL_TEST_LOSS


@pytest.mark.parametrize(("text", "reason"), [
    ('{"testproblem": "quadratic_deep", "train_losses": [1.0, ', "not JSON"),
    ("[1, 2, 3]", "not an object"),
    ('{"results": []}', "not a DeepOBS run file"),
    (json.dumps({k: v for k, v in v11_run().items() if k != "test_losses"}),
     "'test_losses': missing"),
    (json.dumps(v11_run(test_losses=[Q0, 1.0])), "2 values, expected num_epochs + 1 = 4"),
    (json.dumps(v11_run(train_losses=[1.0, None, 1.0, 1.0])), "value 1 is not a number"),
    (json.dumps(v11_run(num_epochs="3")), "'num_epochs': expected a non-negative integer"),
    (json.dumps(v12_run(optimizer_hyperparams=[0.1])), "'optimizer_hyperparams': expected"),
    ("\udcff", "not JSON"),
])
def test_unreadable_files_are_skipped_with_a_reason(tmp_path: Path, text: str,
                                                    reason: str) -> None:
    write(tmp_path, f"{V11_SETTING}/random_seed__42__good.json", v11_run())
    bad = tmp_path / V11_SETTING / "random_seed__43__bad.json"
    bad.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = import_deepobs(tmp_path)
    assert len(result.runs) == 1 and len(result.skipped) == 1
    message = str(result.skipped[0])
    assert message.startswith(f"{V11_SETTING}/random_seed__43__bad.json: ")
    assert reason in message and "\n" not in message


def test_run_ids_are_deterministic_and_depend_on_the_relative_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write(root, f"{V11_SETTING}/random_seed__42__t.json", v11_run())
        write(root, f"{V11_SETTING}/random_seed__43__t.json", v11_run(random_seed=43))
        write(root, f"none/{CV_SETTING}/random_seed__42__t.json", v12_run())
    first, again, moved = import_deepobs(a), import_deepobs(a), import_deepobs(b)
    ids = [r.run_id for r in first.runs]
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)
    assert ids == [r.run_id for r in again.runs] == [r.run_id for r in moved.runs]
    pd.testing.assert_frame_equal(runs_table(first.runs).drop(columns="suite"),
                                  runs_table(moved.runs).drop(columns="suite"))


def test_selected_marks_the_settings_that_were_re_run(tmp_path: Path) -> None:
    write(tmp_path, f"{V11_SETTING}/random_seed__42__t.json", v11_run())
    write(tmp_path, f"{V11_SETTING}/random_seed__43__t.json", v11_run(random_seed=43))
    other = V11_SETTING.replace("1.e-02", "1.e-01")
    write(tmp_path, f"{other}/random_seed__42__t.json", v11_run(learning_rate=0.1))
    write(tmp_path, f"oneshot/none/{CV_SETTING}/random_seed__42__t.json",
          v12_run(random_seed=42))  # one-shot: chosen without re-runs
    selected = {r.source_path.split("/")[0] + str(r.seed) + str(r.hyperparameters["lr"]):
                r.selected for r in import_deepobs(tmp_path).runs}
    assert selected == {"quadratic_deep420.01": True, "quadratic_deep430.01": True,
                        "quadratic_deep420.1": False, "oneshot420.001": True}


def test_rounded_hyperparameters_of_re_runs_join_their_setting(tmp_path: Path) -> None:
    # DeepOBS 1.1: the tuning run has the grid value, its re-runs the rounded folder value
    write(tmp_path, f"{V11_SETTING}/random_seed__42__t.json",
          v11_run(learning_rate=0.003981071705534973))
    write(tmp_path, f"{V11_SETTING}/random_seed__43__t.json",
          v11_run(random_seed=43, learning_rate=0.0039810717055))
    write(tmp_path, f"{V11_SETTING}/random_seed__44__t.json",
          v11_run(random_seed=44, learning_rate=0.0039))  # not a rounding: left alone
    runs = {r.seed: r for r in import_deepobs(tmp_path).runs}
    assert runs[43].hyperparameters == runs[42].hyperparameters
    assert runs[43].hyperparameters["lr"] == 0.003981071705534973
    assert runs[43].hyperparameters_raw["learning_rate"] == 0.0039810717055
    assert "rounded" in runs[43].notes[0] and runs[42].notes == []
    assert runs[44].hyperparameters["lr"] == 0.0039 and runs[44].notes == []


def test_tables_share_obsbench_schema_and_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source, f"{V11_SETTING}/random_seed__42__t.json", v11_run())
    write(source, f"large_budget/none/{CV_SETTING}/random_seed__43__t.json", v12_run())
    runs = import_deepobs(source, keep_minibatch=True).runs
    table = runs_table(runs)
    assert list(table.columns) == RUN_COLUMNS
    assert set(table["source"]) == {V11, V12} and set(table["suite"]) == {"in"}
    curves = curves_table(runs)
    assert list(curves.columns) == ["run_id", "epoch", "split", "metric", "value"]
    assert len(curves) == 2 * 4 + 6 * 3
    assert set(zip(curves["split"], curves["metric"], strict=True)) == {
        (s, m) for s in ("train", "valid", "test") for m in ("loss", "accuracy")}
    assert len(minibatch_table(runs)) == 6 + 4
    write_table(table, tmp_path / "runs.parquet")
    back = read_table(tmp_path / "runs.parquet")
    assert back["consistent"].dtype == bool and back["l2_reg"].isna().all()
    assert json.loads(back.loc[back["source"] == V12, "hyperparameters"].item())["eps"] == 1e-8


def test_own_runs_default_to_consistent_unchecked() -> None:
    frame = runs_frame([{"run_id": "0" * 16, "source": "obsbench", "suite": "s",
                         "problem": "p", "optimizer": "o", "seed": 0, "status": "ok"}])
    row = frame.iloc[0]
    assert row["consistent"] and not row["checked"] and row["note"] is None
    with pytest.raises(ValueError, match="not columns"):
        runs_frame([{"run_id": "x", "nonsense": 1}])


# ------------------------------------------------------------------------- the CLI

def test_cli_imports_writes_tables_and_reports_skipped_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "my-runs"
    write(source, f"{V11_SETTING}/random_seed__42__t.json", v11_run())
    write(source, f"{V11_SETTING}/random_seed__43__t.json",
          v11_run(random_seed=43, test_losses=[Q0, NAN, NAN, NAN]))
    write(source, f"none/{CV_SETTING}/random_seed__42__t.json",
          v12_run(test_losses=[347.0, 1.0, 1.0], testproblem="quadratic_deep"))
    for i in range(7):
        write(source, f"broken/random_seed__{i}__t.json", "{")
    write(source, "convergence_performance.json", {"quadratic_deep": 87.7})  # not a run
    out = tmp_path / "tables"
    assert main(["import", "deepobs", str(source), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [
        f"my-runs: imported 3 runs (2 ok, 1 diverged), 1 inconsistent, 7 file(s) skipped as "
        f"unreadable; tables in {out}/"]
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 6 and "broken/random_seed__0__t.json: not JSON" in skipped[0]
    assert skipped[-1] == "obsbench import: skipped 2 more file(s)"
    assert len(read_table(out / "runs.parquet")) == 3
    assert not (out / "minibatch.parquet").exists()
    assert main(["import", "deepobs", str(source), "--out", str(out), "--minibatch"]) == 0
    assert len(read_table(out / "minibatch.parquet")) == 6 + 6 + 4


def test_cli_default_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "runs-x", f"{V11_SETTING}/random_seed__42__t.json", v11_run())
    monkeypatch.chdir(tmp_path)
    assert main(["import", "deepobs", "runs-x"]) == 0
    assert (tmp_path / "results" / "imported" / "runs-x" / "curves.parquet").is_file()
    capsys.readouterr()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: write(p, "file.json", {}), "not a directory"),
    (lambda p: p, "no DeepOBS run files (random_seed__*.json) found"),
    (lambda p: write(p, "random_seed__1__t.json", "{").parent, "none of the 1 run files"),
])
def test_cli_bad_path_is_one_line_and_exit_2(tmp_path: Path, make: Any, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path)
    assert main(["import", "deepobs", str(path), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("obsbench import: skipped")]
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_cli_import_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "deepobs" in text and "Crowded Valley" in text and "runs.parquet" in text


# ------------------------------------------------------------------ published data

def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def baselines() -> tuple[ImportResult, pd.DataFrame, pd.DataFrame]:
    if not BASELINES.is_dir():
        pytest.skip(f"the DeepOBS 1.1 baselines are not at {BASELINES}")
    result = import_deepobs(BASELINES, keep_minibatch=True)
    return result, runs_table(result.runs), curves_table(result.runs)


def test_baselines_import_all_1080_runs(
        baselines: tuple[ImportResult, pd.DataFrame, pd.DataFrame]) -> None:
    result, runs, _ = baselines
    assert len(result.runs) == 1080 and result.skipped == []
    assert len(set(runs["run_id"])) == 1080 and set(runs["source"]) == {V11}
    assert runs.groupby(["problem", "optimizer"]).size().eq(45).all()
    assert set(runs["optimizer"]) == {"sgd", "momentum", "adam"}
    assert runs["l2_reg"].isna().all() and set(runs["schedule"]) == {"constant"}
    # NaN/Infinity literals: diverged, and every diverged run has a non-finite value
    diverged = [r for r in result.runs if r.status == "diverged"]
    assert len(diverged) == 222
    assert all(any(not math.isfinite(x) for m in r.curves.values() for v in m.values()
                   for x in v) for r in diverged)


def test_baselines_final_values_match_the_raw_files(
        baselines: tuple[ImportResult, pd.DataFrame, pd.DataFrame]) -> None:
    _, runs, curves = baselines
    by_path = runs.set_index("source_path")
    last = curves.loc[curves.groupby(["run_id", "split", "metric"])["epoch"].idxmax()]
    last = last.set_index(["run_id", "split", "metric"])["value"]
    files = sorted(BASELINES.rglob("random_seed__*.json"))
    checked = 0
    for path in files[::97]:  # a dozen files across problems and optimizers
        data = raw(path)
        row = by_path.loc[path.relative_to(BASELINES).as_posix()]
        assert (row["problem"], row["seed"]) == (data["testproblem"], data["random_seed"])
        for key, split, metric in [("test_losses", "test", "loss"),
                                   ("train_losses", "train", "loss"),
                                   ("test_accuracies", "test", "accuracy"),
                                   ("train_accuracies", "train", "accuracy")]:
            if key not in data:
                continue
            expected = data[key][-1]
            assert _same(last[row["run_id"], split, metric], expected), (path, key)
            final = row[f"final_{split}_{metric}"]
            if row["status"] == "ok":
                assert final == expected, (path, key)
                checked += 1
            else:
                assert pd.isna(final)
    assert checked >= 20


def test_baselines_best_settings_have_ten_seeds(
        baselines: tuple[ImportResult, pd.DataFrame, pd.DataFrame]) -> None:
    _, runs, _ = baselines
    seeds = runs.groupby(["problem", "optimizer", "hyperparameters"])["seed"].agg(sorted)
    ten = seeds[seeds.map(len) > 1]
    assert len(ten) == 8 * 3  # one best setting per problem and optimizer
    assert all(s == list(range(42, 52)) for s in ten)
    assert (seeds[seeds.map(len) == 1].map(lambda s: s == [42])).all()
    assert ten.reset_index().groupby(["problem", "optimizer"]).size().eq(1).all()
    assert runs["selected"].sum() == 240
    assert set(runs.loc[runs["selected"], "seed"]) == set(range(42, 52))


def test_baselines_quadratic_deep_is_consistent(
        baselines: tuple[ImportResult, pd.DataFrame, pd.DataFrame]) -> None:
    result, runs, _ = baselines
    quadratic = runs[runs["problem"] == "quadratic_deep"]
    assert len(quadratic) == 135
    assert quadratic["checked"].all() and quadratic["consistent"].all()
    assert runs.loc[runs["problem"] != "quadratic_deep", "checked"].sum() == 0
    # 1.1 logs every step once: 7 steps per epoch (1000 // 128) for 100 epochs, not doubled
    lengths = {len(r.minibatch_losses) for r in result.runs if r.problem == "quadratic_deep"}
    assert lengths == {700}


@pytest.fixture(scope="module")
def crowded_valley() -> ImportResult:
    if not CROWDED_VALLEY.is_dir():
        pytest.skip(f"the Crowded Valley sample is not at {CROWDED_VALLEY}")
    return import_deepobs(CROWDED_VALLEY, keep_minibatch=True)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_crowded_valley_sample_imports_every_per_epoch_value(
        crowded_valley: ImportResult) -> None:
    assert crowded_valley.skipped == []
    curves = curves_table(crowded_valley.runs)
    ids = {r.source_path: r.run_id for r in crowded_valley.runs}
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for run_id, epoch, split, metric, value in curves.itertuples(index=False):
        values[run_id, split, metric][epoch] = value
    files = sorted(CROWDED_VALLEY.rglob("*.json"))
    assert len(files) == len(crowded_valley.runs) == 8
    compared = 0
    for path in files:
        data = raw(path)
        run_id = ids[path.relative_to(CROWDED_VALLEY).as_posix()]
        lists = [k for k in data if k.endswith(("_losses", "_accuracies"))
                 and k != "minibatch_train_losses"]
        assert len(lists) in {3, 6}
        for key in lists:
            split, kind = key.split("_")
            got = values[run_id, split, {"losses": "loss", "accuracies": "accuracy"}[kind]]
            assert len(got) == len(data[key]) == data["num_epochs"] + 1
            for epoch, expected in enumerate(data[key]):
                assert _same(got[epoch], expected), (path, key, epoch)
                compared += 1
    assert compared == len(curves)


def test_crowded_valley_sample_metadata(crowded_valley: ImportResult) -> None:
    runs = {(r.source_path.split("/")[1], r.source_path.split("/")[3], r.seed): r
            for r in crowded_valley.runs}
    assert {r.source for r in runs.values()} == {V12}
    nag = runs["none", "NAGOptimizer", 42]
    assert (nag.optimizer, nag.optimizer_raw, nag.budget) == ("nag", "MomentumOptimizer",
                                                              "large_budget")
    ams = runs["none", "AMSBoundOptimizer", 42]
    assert (ams.optimizer, ams.optimizer_raw, ams.budget) == ("amsbound", "AdaBoundOptimizer",
                                                              "oneshot")
    assert runs["none", "GradientDescentOptimizer", 42].l2_reg is None  # weight_decay key
    assert runs["cosine", "AdamOptimizer", 44].schedule == "cosine"
    assert runs["cosine_wr", "MomentumOptimizer", 43].schedule == "cosine_wr"
    assert all(r.l2_reg is None for r in runs.values())
    # diverged runs: a 3.8e23 / Infinity quadratic run and a cifar10 run with NaN minibatch
    # losses only (its per-epoch lists are all DeepOBS's abort filler)
    diverged = {k for k, r in runs.items() if r.status == "diverged"}
    assert diverged == {("cosine_wr", "MomentumOptimizer", 42), ("none", "MomentumOptimizer", 42)}
    assert len(runs["cosine_wr", "MomentumOptimizer", 42].minibatch_losses) == 3
    assert len(runs["none", "MomentumOptimizer", 42].minibatch_losses) == 32
    assert {len(r.minibatch_losses) for k, r in runs.items() if k not in diverged} == {100}
    # the DeepOBS 1.2 runs that regenerated quadratic_deep start elsewhere
    inconsistent = {round(r.curves["test"]["loss"][0], 4) for r in runs.values()
                    if not r.consistent}
    assert inconsistent == {347.3582, 314.8037}
    assert sum(not r.consistent for r in runs.values()) == 4
    assert runs["none", "AdamOptimizer", 43].consistent
    # final test losses from the sample's README
    final = runs_table(crowded_valley.runs).set_index("seed")
    assert runs["none", "AdamOptimizer", 43].row()["final_test_loss"] == 87.22511291503906
    assert final["final_test_loss"].notna().sum() == 6


def test_crowded_valley_reimport_elsewhere_is_idempotent(tmp_path: Path,
                                                         crowded_valley: ImportResult) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(CROWDED_VALLEY, copy)
    again = import_deepobs(copy)
    assert sorted(r.run_id for r in again.runs) == sorted(r.run_id for r in crowded_valley.runs)
