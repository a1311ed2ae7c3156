"""Scoring: every number checked against a hand computation or a brute-force oracle."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from obsbench import scoring
from obsbench.results import curves_frame, runs_frame
from obsbench.scoring import GROUP, Metric
from tests.conftest import REPO

INF = math.inf
DEFAULTS: dict[str, Any] = {
    "source": "obsbench", "suite": "s", "seed": 0, "trial": 0, "selected": True,
    "status": "ok", "batch_size": 8, "num_epochs": 4, "steps": 400, "train_s": 8.0,
    "hyperparameters": "{}", "schedule": "constant",
}


def runs_of(*rows: dict[str, Any]) -> pd.DataFrame:
    """A runs table; every row gets :data:`DEFAULTS` and a run id ``r<i>`` unless given."""
    return runs_frame({**DEFAULTS, "run_id": f"r{i}", **row} for i, row in enumerate(rows))


def curves_of(values: dict[str, dict[str, dict[str, list[float]]]]) -> pd.DataFrame:
    """A curves table from ``{run_id: {split: {metric: [value per epoch]}}}``."""
    return curves_frame([(run, epoch, split, metric, v)
                         for run, splits in values.items()
                         for split, metrics in splits.items()
                         for metric, series in metrics.items()
                         for epoch, v in enumerate(series)])


def row_of(table: pd.DataFrame, **where: Any) -> pd.Series:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}"
    return table[mask].iloc[0]


# ----------------------------------------------------------------------- metrics


def test_metric_names_its_column_direction_and_label() -> None:
    accuracy, loss = Metric("valid", "accuracy"), Metric("test", "loss")
    assert (accuracy.column, accuracy.higher_is_better, accuracy.label) == (
        "final_valid_accuracy", True, "valid accuracy")
    assert (loss.column, loss.higher_is_better, loss.label) == ("final_test_loss", False,
                                                                "test loss")


def test_metrics_picks_accuracy_where_any_run_has_one_else_loss() -> None:
    runs = runs_of(
        # a classifier whose only accuracy is a train accuracy of one run still counts
        {"problem": "clf", "optimizer": "a", "final_test_loss": 1.0,
         "final_train_accuracy": 0.5},
        {"problem": "clf", "optimizer": "b", "final_test_loss": 2.0},
        {"problem": "quad", "optimizer": "a", "final_test_loss": 3.0})
    assert scoring.metrics(runs) == {"clf": Metric("test", "accuracy"),
                                     "quad": Metric("test", "loss")}
    assert scoring.metrics(runs, "valid")["quad"] == Metric("valid", "loss")


# ----------------------------------------------------------------------- targets


def test_targets_median_worst_best_over_the_pool_of_selected_means() -> None:
    runs = runs_of(
        # loss problem: solver means a (1+3)/2 = 2, b 4, c 8 (its diverged run has no value)
        {"problem": "q", "optimizer": "a", "final_valid_loss": 1.0},
        {"problem": "q", "optimizer": "a", "final_valid_loss": 3.0, "seed": 1},
        {"problem": "q", "optimizer": "b", "final_valid_loss": 4.0},
        {"problem": "q", "optimizer": "c", "final_valid_loss": 8.0},
        {"problem": "q", "optimizer": "c", "status": "diverged", "seed": 1},
        {"problem": "q", "optimizer": "d", "final_valid_loss": 0.0, "selected": False},
        # accuracy problem: means 0.5 and 0.7
        {"problem": "c", "optimizer": "a", "final_valid_accuracy": 0.5},
        {"problem": "c", "optimizer": "b", "final_valid_accuracy": 0.7},
        # every selected run diverged: no target
        {"problem": "z", "optimizer": "a", "status": "diverged"})
    assert scoring.targets(runs) == pytest.approx({"q": 4.0, "c": 0.6})
    assert scoring.targets(runs, rule="best") == pytest.approx({"q": 2.0, "c": 0.7})
    assert scoring.targets(runs, rule="worst") == pytest.approx({"q": 8.0, "c": 0.5})
    assert scoring.targets(runs, split="test") == {}
    with pytest.raises(ValueError, match="unknown rule"):
        scoring.targets(runs, rule="mean")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- performance


def test_performance_statistics_equal_numpy_over_finite_final_values() -> None:
    values = [0.5, 0.7, 0.6, 0.9]
    runs = runs_of(
        *({"problem": "p", "optimizer": "a", "seed": s, "final_test_accuracy": v}
          for s, v in enumerate(values)),
        {"problem": "p", "optimizer": "a", "seed": 4, "status": "diverged"},
        {"problem": "p", "optimizer": "a", "seed": 5, "status": "failed"},
        {"problem": "p", "optimizer": "a", "seed": 6, "selected": False,
         "final_test_accuracy": 0.0},
        {"problem": "p", "optimizer": "b", "final_test_accuracy": 0.3})
    perf = scoring.performance(runs)
    assert list(perf.columns) == scoring.PERFORMANCE_COLUMNS
    a, b = row_of(perf, optimizer="a"), row_of(perf, optimizer="b")
    assert (a["metric"], a["higher_is_better"]) == ("test accuracy", True)
    assert (a["n"], a["n_ok"], a["n_diverged"]) == (6, 4, 1)
    assert a["final_mean"] == pytest.approx(np.mean(values))
    assert a["final_std"] == pytest.approx(np.std(values, ddof=1))
    assert a["final_median"] == pytest.approx(np.median(values))
    assert a["final_q25"] == pytest.approx(np.quantile(values, 0.25))
    assert a["final_q75"] == pytest.approx(np.quantile(values, 0.75))
    assert np.isnan(a["best_mean"]) and np.isnan(a["speed"])  # no curves
    assert b["final_mean"] == pytest.approx(0.3) and np.isnan(b["final_std"])  # one value
    everything = row_of(scoring.performance(runs, selected_only=False), optimizer="a")
    assert everything["n"] == 7
    assert everything["final_mean"] == pytest.approx(np.mean([*values, 0.0]))


def test_performance_best_and_deepobs_speed_on_hand_made_curves() -> None:
    runs = runs_of(
        {"run_id": "l1", "problem": "quad", "optimizer": "a", "num_epochs": 3},
        {"run_id": "l2", "problem": "quad", "optimizer": "a", "num_epochs": 3, "seed": 1},
        {"run_id": "c1", "problem": "clf", "optimizer": "a", "num_epochs": 3,
         "final_test_accuracy": 0.8},
        {"run_id": "c2", "problem": "clf", "optimizer": "a", "num_epochs": 3, "seed": 1,
         "final_test_accuracy": 0.9},
        {"run_id": "n1", "problem": "none", "optimizer": "a", "num_epochs": 3})
    curves = curves_of({
        "l1": {"test": {"loss": [10.0, 4.0, 2.0, 3.0]}, "valid": {"loss": [0, 0, 0, 0]}},
        "l2": {"test": {"loss": [10.0, 6.0, 5.0, 5.0]}},
        "c1": {"test": {"accuracy": [0.1, 0.5, 0.9, 0.8], "loss": [9.0, 0, 0, 0]}},
        "c2": {"test": {"accuracy": [0.1, 0.95, 0.9, 0.9]}},
        "n1": {"test": {"loss": [1.0, 1.0, 1.0, 1.0]}}})
    perf = scoring.performance(runs, curves, targets={"quad": 4.0, "clf": 0.9})
    quad, clf = row_of(perf, problem="quad"), row_of(perf, problem="clf")
    # loss: bests min(10,4,2,3) = 2 and 5 -> mean 3.5, std sqrt(((2-3.5)^2+(5-3.5)^2)/1)
    assert quad["best_mean"] == pytest.approx(3.5)
    assert quad["best_std"] == pytest.approx(math.sqrt(4.5))
    # l1 reaches <= 4 at epoch 1; l2 never: num_epochs + 1 = 4 -> speed (1 + 4) / 2
    assert quad["speed"] == pytest.approx(2.5)
    # accuracy (not the loss curve): bests 0.9 and 0.95; >= 0.9 at epochs 2 and 1
    assert clf["best_mean"] == pytest.approx(0.925)
    assert clf["speed"] == pytest.approx(1.5)
    assert np.isnan(row_of(perf, problem="none")["speed"])  # no target
    # a target the start already meets: speed 0 (epoch 0 counts, as in DeepOBS)
    start = scoring.performance(runs, curves, targets={"quad": 10.0})
    assert row_of(start, problem="quad")["speed"] == 0.0


def test_ranking_averages_ties_puts_missing_last_and_sorts_by_mean_rank() -> None:
    perf = pd.DataFrame({
        "problem": ["P", "P", "P", "Q", "Q", "Q"],
        "optimizer": ["A", "B", "C", "A", "B", "C"],
        "higher_is_better": [True, True, True, False, False, False],
        # P (accuracy): A and B tie for ranks 1 and 2 -> 1.5 each, C 3
        # Q (loss): B 1.0 best, A 2.0, C every run diverged -> last
        "final_mean": [0.9, 0.9, 0.8, 2.0, 1.0, np.nan]})
    ranks = scoring.ranking(perf)
    # mean ranks: A (1.5+2)/2 = 1.75, B (1.5+1)/2 = 1.25, C 3
    assert list(ranks.index) == ["B", "A", "C"]
    assert ranks.loc["A", "P"] == ranks.loc["B", "P"] == 1.5
    assert list(ranks["Q"]) == [1.0, 2.0, 3.0]
    assert list(ranks["mean rank"]) == pytest.approx([1.25, 1.75, 3.0])


# ----------------------------------------------------------------------- time to target


def test_time_to_target_epoch_steps_seconds_per_run() -> None:
    common = {"problem": "quad", "optimizer": "a", "num_epochs": 4}
    runs = runs_of(
        {"run_id": "hit", **common, "steps": 400, "train_s": 8.0},
        {"run_id": "miss", **common, "seed": 1},
        # stopped in its 2nd epoch after 150 steps and 3 s; it hit the target at epoch 1
        {"run_id": "div", **common, "seed": 2, "status": "diverged", "steps": 150,
         "train_s": 3.0},
        {"run_id": "late", **common, "seed": 3, "status": "diverged", "steps": 150},
        {"run_id": "nocurve", **common, "seed": 4},
        {"run_id": "other", "problem": "free", "optimizer": "a"},
        # imported runs: no step count or training time
        {"run_id": "import0", **common, "seed": 5, "steps": None, "train_s": None},
        {"run_id": "import2", **common, "seed": 6, "steps": None, "train_s": None})
    curves = curves_of({
        "hit": {"valid": {"loss": [9.0, 5.0, 3.0, 2.0, 1.0]}, "test": {"loss": [0.0] * 5}},
        "miss": {"valid": {"loss": [9.0, 8.0, 7.0, 6.0, 5.0]}},
        "div": {"valid": {"loss": [9.0, 2.5]}},
        "late": {"valid": {"loss": [9.0, 5.0]}},
        "other": {"valid": {"loss": [9.0, 0.0]}},
        "import0": {"valid": {"loss": [3.0, 1.0]}},
        "import2": {"valid": {"loss": [9.0, 5.0, 3.0]}}})
    ttt = scoring.time_to_target(runs, curves, {"quad": 3.0}).set_index("run_id")
    assert list(ttt.reset_index().columns) == scoring.TTT_COLUMNS
    # first valid loss <= 3 at epoch 2: steps 2 * 400 / 4 = 200, seconds 2 * 8 / 4 = 4
    assert ttt.loc["hit", ["epoch", "steps", "seconds"]].tolist() == [2.0, 200.0, 4.0]
    for never in ("miss", "late", "nocurve"):
        assert ttt.loc[never, ["epoch", "steps", "seconds"]].tolist() == [INF] * 3
    # steps per epoch of the finished runs (400 / 4 = 100), its own 3 s / 150 steps
    assert ttt.loc["div", ["epoch", "steps", "seconds"]].tolist() == [1.0, 100.0, 2.0]
    assert ttt.loc["other", ["epoch", "steps", "seconds"]].isna().all()  # no target
    # without step counts only the epoch is known, except that epoch 0 is 0 steps and 0 s
    assert ttt.loc["import0", ["epoch", "steps", "seconds"]].tolist() == [0.0, 0.0, 0.0]
    assert ttt.loc["import2", "epoch"] == 2.0
    assert ttt.loc["import2", ["steps", "seconds"]].isna().all()


def test_study_times_fastest_trial_per_seed_then_median_with_inf() -> None:
    rows = [
        # a: seed 0 trials 100, 50 -> 50; seed 1 inf, 80 -> 80; seed 2 inf, inf -> inf
        # median(50, 80, inf) = 80
        ("a", 0, 0, 100.0), ("a", 0, 1, 50.0), ("a", 1, 0, INF), ("a", 1, 1, 80.0),
        ("a", 2, 0, INF), ("a", 2, 1, INF),
        # b: seeds inf, inf, 30 -> median inf (misses take part in the median)
        ("b", 0, 0, INF), ("b", 1, 0, INF), ("b", 2, 0, 30.0),
        # c: two seeds, 10 and inf -> the mean of the middle two: inf
        ("c", 0, 0, 10.0), ("c", 1, 0, INF),
        # d: two seeds 10 and 20 -> 15
        ("d", 0, 0, 10.0), ("d", 1, 0, 20.0),
    ]
    ttt = pd.DataFrame(rows, columns=["optimizer", "seed", "trial", "steps"]).assign(
        problem="p", budget=None, schedule="constant")
    times = scoring.study_times(ttt, unit="steps")
    assert list(times.index) == ["p"] and list(times.columns) == ["a", "b", "c", "d"]
    assert times.loc["p"].tolist() == [80.0, INF, INF, 15.0]
    # a problem without a target (NaN) is left out
    blank = ttt.assign(problem="q", steps=np.nan)
    assert list(scoring.study_times(pd.concat([ttt, blank]), unit="steps").index) == ["p"]
    with pytest.raises(ValueError, match="unknown unit"):
        scoring.study_times(ttt, unit="hours")  # type: ignore[arg-type]


def test_solver_labels_name_budget_and_schedule_only_where_needed() -> None:
    frame = pd.DataFrame({
        "problem": ["p"] * 4, "optimizer": ["adam", "adam", "sgd", "sgd"],
        "budget": ["oneshot", "large_budget", None, None],
        "schedule": ["constant", "cosine", "constant", "constant"]})
    assert scoring.solver_labels(frame).tolist() == [
        "adam (oneshot, constant)", "adam (large_budget, cosine)", "sgd", "sgd"]


# ----------------------------------------------------------------------- profiles, scores


# ratios by hand (max_ratio 4):
#   p1: A 10 -> 1, B 20 -> 2, C inf, D inf
#   p2: A 30 -> 2, B 15 -> 1, C 15 -> 1 (a tie: both fastest), D inf
#   p3: A 10 -> 1, B 50 -> 5 > 4 -> inf, C 35 -> 3.5, D inf
#   p4: every solver misses -> dropped
TIMES = pd.DataFrame({"A": [10, 30, 10, INF], "B": [20, 15, 50, INF], "C": [INF, 15, 35, INF],
                      "D": [INF, INF, INF, INF]}, index=["p1", "p2", "p3", "p4"], dtype=float)


def test_performance_ratios_by_hand() -> None:
    ratios = scoring.performance_ratios(TIMES)
    expected = pd.DataFrame({"A": [1, 2, 1.0], "B": [2, 1, INF], "C": [INF, 1, 3.5],
                             "D": [INF, INF, INF]}, index=["p1", "p2", "p3"])
    pd.testing.assert_frame_equal(ratios, expected)
    with pytest.raises(ValueError, match="max_ratio"):
        scoring.performance_ratios(TIMES, max_ratio=1.0)
    # a target met before training: time 0 for the fastest two (ratio 1, not 0/0), and
    # any later time is infinitely slower
    at_start = pd.DataFrame({"A": [0.0], "B": [0.0], "C": [10.0]}, index=["p"])
    assert scoring.performance_ratios(at_start).loc["p"].tolist() == [1.0, 1.0, INF]


def test_performance_profile_is_the_exact_step_function() -> None:
    profile = scoring.performance_profile(TIMES)
    # breakpoints: 1, the ratios 2 and 3.5, and max_ratio 4; rho = fraction of p1..p3 <= tau
    rho = {solver: dict(zip(group["tau"], group["rho"], strict=True))
           for solver, group in profile.groupby("solver")}
    third = 1 / 3
    assert rho["A"] == pytest.approx({1.0: 2 * third, 2.0: 1.0, 3.5: 1.0, 4.0: 1.0})
    assert rho["B"] == pytest.approx({1.0: third, 2.0: 2 * third, 3.5: 2 * third,
                                      4.0: 2 * third})
    assert rho["C"] == pytest.approx({1.0: third, 2.0: third, 3.5: 2 * third, 4.0: 2 * third})
    # D never reaches a target: rho is 0 everywhere, never 1
    assert rho["D"] == {1.0: 0.0, 2.0: 0.0, 3.5: 0.0, 4.0: 0.0}


def test_benchmark_score_is_the_normalised_area_under_the_profile() -> None:
    score = scoring.benchmark_score(TIMES)
    # areas of the steps above, over [1, 4], divided by 4 - 1 = 3:
    #   A: 2/3 on [1, 2) + 1 on [2, 4]               = 2/3 + 2       = 8/3  -> 8/9
    #   B: 1/3 on [1, 2) + 2/3 on [2, 4]             = 1/3 + 4/3     = 5/3  -> 5/9
    #   C: 1/3 on [1, 3.5) + 2/3 on [3.5, 4]         = 5/6 + 1/3     = 7/6  -> 7/18
    #   D: 0
    assert score.to_dict() == pytest.approx({"A": 8 / 9, "B": 5 / 9, "C": 7 / 18, "D": 0.0})
    # a solver fastest everywhere scores 1
    assert scoring.benchmark_score(TIMES.assign(E=1.0))["E"] == 1.0
    # a larger max_ratio: A (4.5 + 3.5 + 4.5) / 3 / 4.5 (max_ratio 5.5)
    assert scoring.benchmark_score(TIMES, max_ratio=5.5)["A"] == pytest.approx(12.5 / 13.5)


def test_speedup_is_the_geometric_mean_with_misses_at_the_budget() -> None:
    budget = pd.Series(100.0, index=TIMES.index)
    fast = scoring.speedup(TIMES, "A", budget=budget)
    # t(A) / t(s), misses -> 100; p4: 100/100 = 1 for everyone
    #   B: 10/20, 30/15, 10/50, 1   -> (0.5 * 2 * 0.2)^(1/4)
    #   C: 10/100, 30/15, 10/35, 1  -> (0.1 * 2 * 2/7)^(1/4)
    #   D: 10/100, 30/100, 10/100, 1 -> (0.003)^(1/4)
    assert fast.to_dict() == pytest.approx({"A": 1.0, "B": 0.2 ** 0.25,
                                            "C": (0.1 * 2 * 2 / 7) ** 0.25,
                                            "D": 0.003 ** 0.25})
    pd.testing.assert_series_equal(scoring.speedup(TIMES, "A", budget=100.0), fast)
    with pytest.raises(ValueError, match="no budget for problems with misses: p4"):
        scoring.speedup(TIMES, "A", budget=budget.drop("p4"))
    with pytest.raises(ValueError, match="not a solver"):
        scoring.speedup(TIMES, "Z", budget=budget)


def test_run_length_per_problem_and_unit() -> None:
    runs = runs_of(
        {"problem": "p", "optimizer": "a", "steps": 400, "train_s": 8.0, "num_epochs": 4},
        {"problem": "p", "optimizer": "b", "steps": 400, "train_s": 12.0, "num_epochs": 4},
        {"problem": "p", "optimizer": "c", "steps": 900, "train_s": 99.0,
         "status": "diverged"})
    assert scoring.run_length(runs, unit="steps").to_dict() == {"p": 400.0}
    assert scoring.run_length(runs, unit="seconds").to_dict() == {"p": 12.0}
    assert scoring.run_length(runs, unit="epoch").to_dict() == {"p": 4.0}


# ----------------------------------------------------------------------- budgets


def brute_force_expected_best(valid: list[float], reported: list[float], k: int,
                              higher_is_better: bool) -> Fraction:
    """Mean over all n^k equally likely k-tuples of trials of the reported value of the
    drawn trial with the best valid value (ties: each tied trial drawn equally likely)."""
    n, total = len(valid), Fraction(0)
    sign = 1 if higher_is_better else -1
    for draw in itertools.product(range(n), repeat=k):
        top = max(sign * valid[i] for i in draw)
        tied = sorted({i for i in draw if sign * valid[i] == top})
        total += sum(Fraction(reported[i]) for i in tied) / len(tied)
    return total / n ** k


@pytest.mark.parametrize("name", ["accuracy", "loss"])
def test_budget_curve_expectation_equals_brute_force_over_all_tuples(name: str) -> None:
    # four trials, two of them tied on the valid value
    valid = [0.5, 0.7, 0.7, 0.2] if name == "accuracy" else [0.5, 0.3, 0.3, 0.8]
    test = [0.375, 0.875, 0.625, 0.125]
    runs = runs_of(*({"problem": "p", "optimizer": "a", "trial": t, "selected": t == 1,
                      f"final_valid_{name}": v, f"final_test_{name}": y}
                     for t, (v, y) in enumerate(zip(valid, test, strict=True))))
    curve = scoring.budget_curve(runs, n_boot=2000)
    assert list(curve.columns) == scoring.BUDGET_COLUMNS
    assert curve["k"].tolist() == [1, 2, 3, 4] and set(curve["n_trials"]) == {4}
    for k, expected in zip(curve["k"], curve["expected"], strict=True):
        exact = brute_force_expected_best(valid, test, k, name == "accuracy")
        assert expected == pytest.approx(float(exact), abs=1e-12)
    # by hand, accuracy: levels 0.2 (test 0.125), 0.5 (0.375), 0.7 (mean of 0.875, 0.625
    # = 0.75), c = 1, 2, 4 of n = 4. k = 1: the mean 2 / 4 = 0.5. k = 2: P = 1/16, 3/16,
    # 12/16 -> (0.125 + 3 * 0.375 + 12 * 0.75) / 16 = 10.25 / 16
    assert curve["expected"].iloc[:2].tolist() == pytest.approx([0.5, 10.25 / 16])
    # the band holds reported values that a best trial can have
    assert ((curve["low"] >= 0.125) & (curve["low"] <= curve["high"])
            & (curve["high"] <= 0.875)).all()
    # k = 1: the best is one uniform trial, so the 2.5% and 97.5% points are the extremes
    assert curve.iloc[0][["low", "high"]].tolist() == [0.125, 0.875]
    # k = 4: the best lies at level 0.2 with (1/4)^4 = 0.4%, at level 0.5 with (2/4)^4 -
    # (1/4)^4 = 5.9%, at the top level with 15/16: the 2.5% point is level 0.5's 0.375,
    # the 97.5% point the top level's larger value 0.875
    assert curve.iloc[3][["low", "high"]].tolist() == [0.375, 0.875]


def test_budget_curve_band_shares_a_tie_evenly() -> None:
    # two trials tied on the valid value: whatever k, each is reported half of the time,
    # so the band spans both test values (were the tie always won by the same trial, that
    # trial would win 1 - (1/2)^k > 97.5% of the draws from k = 6 on)
    runs = runs_of(*({"problem": "p", "optimizer": "a", "trial": t,
                      "final_valid_accuracy": 0.5, "final_test_accuracy": y}
                     for t, y in enumerate([0.2, 0.8])))
    curve = scoring.budget_curve(runs, max_budget=8)
    assert curve["expected"].tolist() == pytest.approx([0.5] * 8)
    assert set(curve["low"]) == {0.2} and set(curve["high"]) == {0.8}
    with pytest.raises(ValueError, match="n_boot"):
        scoring.budget_curve(runs, n_boot=0)


def test_budget_curve_seed_means_dropped_trials_no_valid_split_and_determinism() -> None:
    runs = runs_of(
        # trial 0: two seeds, valid mean 0.6, test mean 0.5
        {"problem": "p", "optimizer": "a", "trial": 0, "seed": 0,
         "final_valid_accuracy": 0.5, "final_test_accuracy": 0.4},
        {"problem": "p", "optimizer": "a", "trial": 0, "seed": 1,
         "final_valid_accuracy": 0.7, "final_test_accuracy": 0.6},
        {"problem": "p", "optimizer": "a", "trial": 1, "final_valid_accuracy": 0.9,
         "final_test_accuracy": 0.8},
        {"problem": "p", "optimizer": "a", "trial": 2, "status": "diverged"},
        # imported DeepOBS 1.1: no valid split, no trial index: select on test
        {"problem": "old", "optimizer": "a", "trial": None, "hyperparameters": '{"lr": 1}',
         "final_test_accuracy": 0.3},
        {"problem": "old", "optimizer": "a", "trial": None, "hyperparameters": '{"lr": 2}',
         "final_test_accuracy": 0.7},
        {"problem": "old", "optimizer": "a", "trial": None, "hyperparameters": '{"lr": 2}',
         "seed": 1, "final_test_accuracy": 0.9})
    curve = scoring.budget_curve(runs, max_budget=3)
    p = curve[curve["problem"] == "p"]
    # two trials kept: k = 1 -> (0.5 + 0.8) / 2; k = 2 -> 0.8 with 1 - (1/2)^2 = 3/4
    assert p["expected"].tolist() == pytest.approx([0.65, 0.5 / 4 + 0.8 * 3 / 4,
                                                    0.5 / 8 + 0.8 * 7 / 8])
    assert set(p["n_trials"]) == {2}
    old = curve[curve["problem"] == "old"]
    # settings lr 1 (test 0.3) and lr 2 (test mean 0.8, also its selection value)
    assert old["expected"].iloc[0] == pytest.approx((0.3 + 0.8) / 2)
    assert old["expected"].iloc[1] == pytest.approx(0.3 / 4 + 0.8 * 3 / 4)
    pd.testing.assert_frame_equal(curve, scoring.budget_curve(runs, max_budget=3))


def test_sensitivity_relative_to_the_best_trial() -> None:
    runs = runs_of(
        {"problem": "c", "optimizer": "a", "trial": 0, "hyperparameters": '{"lr": 0.1}',
         "final_test_accuracy": 0.8},
        {"problem": "c", "optimizer": "a", "trial": 0, "hyperparameters": '{"lr": 0.1}',
         "seed": 1, "final_test_accuracy": 0.6},
        {"problem": "c", "optimizer": "a", "trial": 1, "hyperparameters": '{"lr": 0.01}',
         "final_test_accuracy": 0.9, "selected": False},
        {"problem": "c", "optimizer": "a", "trial": 2, "hyperparameters": '{"beta": 0.5}',
         "final_test_accuracy": 0.99},
        {"problem": "q", "optimizer": "a", "trial": 0, "hyperparameters": '{"lr": 1.0}',
         "final_test_loss": 2.0},
        {"problem": "q", "optimizer": "a", "trial": 1, "hyperparameters": '{"lr": 2.0}',
         "final_test_loss": 4.0})
    table = scoring.sensitivity(runs)
    assert len(table) == 4  # the trial without an lr is dropped
    c1 = row_of(table, problem="c", trial=0)
    # accuracy: mean 0.7 over its two seeds, best trial 0.9 -> 0.7 / 0.9
    assert (c1["value"], c1["n"], c1["selected"]) == (0.1, 2, True)
    assert c1["mean"] == pytest.approx(0.7) and c1["std"] == pytest.approx(np.std([.8, .6],
                                                                                  ddof=1))
    assert c1["relative"] == pytest.approx(0.7 / 0.9)
    assert row_of(table, problem="c", trial=1)["relative"] == 1.0
    # loss: best 2.0 -> best / value = 2 / 4
    assert row_of(table, problem="q", trial=1)["relative"] == pytest.approx(0.5)
    assert table[table["problem"] == "c"]["value"].tolist() == [0.01, 0.1]  # sorted


# ----------------------------------------------------------------------- verdicts


BASE = [2.0, 2.1, 1.9, 2.05, 1.95, 2.02, 1.98]


def verdict_runs(optimizer: str, shift: float, *, diverge: bool = False,
                 only: str | None = None) -> pd.DataFrame:
    """Selected runs on a loss problem ``q`` and an accuracy problem ``c`` (values BASE / 10)."""
    rows: list[dict[str, Any]] = []
    for seed, v in enumerate(BASE):
        rows.append({"problem": "q", "optimizer": optimizer, "seed": seed,
                     "final_test_loss": v + shift})
        rows.append({"problem": "c", "optimizer": optimizer, "seed": seed,
                     "final_test_accuracy": v / 10 + shift / 10})
        rows.append({"problem": "d", "optimizer": optimizer, "seed": seed,
                     "status": "diverged" if diverge else "ok",
                     "final_test_loss": None if diverge else v})
    if only is not None:
        rows.append({"problem": only, "optimizer": optimizer, "final_test_loss": 1.0})
    return runs_of(*({**r, "run_id": f"{optimizer}{i}"} for i, r in enumerate(rows)))


def test_compare_finds_a_known_shift_and_covers_the_true_difference() -> None:
    baseline = verdict_runs("base", 0.0, only="b_only")
    candidate = verdict_runs("cand", 1.0, diverge=True)
    table = scoring.compare(candidate, baseline).set_index("problem")
    assert list(table.reset_index().columns) == scoring.COMPARE_COLUMNS
    # loss + 1: improvement = baseline - candidate = -1 exactly; the CI of the
    # difference of means is around -1 (it covers it) and excludes 0: worse
    q = table.loc["q"]
    assert q["improvement"] == pytest.approx(-1.0)
    assert q["low"] < -1.0 < q["high"] < 0 and q["verdict"] == "worse"
    assert (q["n_candidate"], q["n_baseline"]) == (7, 7)
    # both sides resampled: the bootstrap sd of the difference of means is
    # sqrt(var/7 + var/7) (population variance), so the 95% interval is about 2 * 1.96 * that
    normal = 2 * 1.959964 * np.std(BASE) * math.sqrt(2 / len(BASE))
    assert q["high"] - q["low"] == pytest.approx(normal, rel=0.1)
    # accuracy + 0.1: improvement = candidate - baseline = +0.1: better
    c = table.loc["c"]
    assert c["improvement"] == pytest.approx(0.1) and c["metric"] == "test accuracy"
    assert 0 < c["low"] < 0.1 < c["high"] and c["verdict"] == "better"
    # every candidate run diverged on d: no finite value, missing (counted as such)
    d = table.loc["d"]
    assert d["verdict"] == "missing" and np.isnan(d["candidate"]) and np.isnan(d["low"])
    assert (d["n_candidate"], d["missing_candidate"], d["n_baseline"]) == (0, 7, 7)
    assert table.loc["b_only", "verdict"] == "missing"
    pd.testing.assert_frame_equal(scoring.compare(candidate, baseline).set_index("problem"),
                                  table)  # seeded


def test_compare_identical_sides_are_indistinguishable() -> None:
    runs = verdict_runs("base", 0.0)
    table = scoring.compare(runs, runs).set_index("problem")
    assert (table["verdict"] == "indistinguishable").all()
    assert (table["improvement"] == 0).all()
    assert ((table["low"] < 0) & (table["high"] > 0)).all()


def test_compare_chooses_one_optimizer_per_side() -> None:
    both = pd.concat([verdict_runs("base", 0.0), verdict_runs("cand", 1.0)],
                     ignore_index=True)
    with pytest.raises(ValueError, match="several solvers"):
        scoring.compare(both, both)
    table = scoring.compare(both, both, candidate_optimizer="cand", baseline_optimizer="base")
    assert table.set_index("problem").loc["q", "improvement"] == pytest.approx(-1.0)


# ----------------------------------------------------------------------- a real baseline


MNIST1D = REPO / "baselines" / "deepobs_mnist1d"


@pytest.mark.skipif(not (MNIST1D / "runs.parquet").is_file(), reason="baseline not shipped")
def test_the_scoring_chain_on_a_shipped_baseline() -> None:
    runs = pd.read_parquet(MNIST1D / "runs.parquet")
    curves = pd.read_parquet(MNIST1D / "curves.parquet")
    selected = runs[runs["selected"]]
    n_problems, n_solvers = runs["problem"].nunique(), runs["optimizer"].nunique()

    perf = scoring.performance(runs, curves, targets=scoring.targets(runs, split="test"))
    assert len(perf) == n_problems * n_solvers and (perf["metric"] == "test accuracy").all()
    assert (perf["n"] == selected.groupby(GROUP, dropna=False).size().to_numpy()).all()
    assert (perf["n_ok"] + perf["n_diverged"] <= perf["n"]).all()
    assert ((perf["final_q25"] <= perf["final_median"])
            & (perf["final_median"] <= perf["final_q75"])).all()
    clean = perf[perf["n_diverged"] == 0]  # then every run has a final and a best value
    assert (clean["best_mean"] >= clean["final_mean"] - 1e-12).all()
    assert perf["speed"].between(0, runs["num_epochs"].max() + 1).all()

    goal = scoring.targets(runs)
    ttt = scoring.time_to_target(selected, curves, goal)
    assert sorted(ttt["run_id"]) == sorted(selected["run_id"])
    finite = ttt[np.isfinite(ttt["epoch"])]
    assert finite["epoch"].between(0, 50).all() and len(finite) > len(ttt) / 2
    # 1350 steps in 50 epochs
    assert np.allclose(finite["steps"], finite["epoch"] * 27)

    for unit in ("steps", "seconds", "epoch"):
        times = scoring.study_times(ttt, unit=unit)  # type: ignore[arg-type]
        assert times.shape == (n_problems, n_solvers)
        score = scoring.benchmark_score(times)
        assert score.between(0, 1).all() and score.max() > 0
        profile = scoring.performance_profile(times)
        assert profile["rho"].between(0, 1).all()
        for _, one in profile.groupby("solver"):
            assert (np.diff(one["rho"]) >= 0).all() and one["tau"].iloc[0] == 1.0
        # every problem that someone solves has a fastest solver
        at_one = profile[profile["tau"] == 1.0]["rho"].sum()
        assert at_one >= len(scoring.performance_ratios(times)) / len(times) - 1e-12
        fast = scoring.speedup(times, "adam", budget=scoring.run_length(runs, unit=unit))
        assert fast["adam"] == 1.0 and (fast > 0).all()

    ranks = scoring.ranking(perf)
    for problem in sorted(runs["problem"].unique()):
        assert sorted(ranks[problem]) == [1.0, 2.0, 3.0]
    assert ranks["mean rank"].is_monotonic_increasing

    curve = scoring.budget_curve(runs, n_boot=200)
    trials = runs.groupby(GROUP, dropna=False)["trial"].nunique()
    assert (curve.groupby(GROUP, dropna=False)["k"].max() <= trials).all()
    assert (curve["low"] <= curve["high"]).all()
    assert curve["expected"].between(0, 1).all()

    table = scoring.sensitivity(runs)
    assert (table["relative"].dropna() <= 1 + 1e-12).all()
    assert (table.groupby(GROUP, dropna=False)["selected"].sum() == 1).all()
    best_lr = json.loads(selected["hyperparameters"].iloc[0])["lr"]
    assert best_lr in set(table["value"])

    verdict = scoring.compare(runs, runs, candidate_optimizer="adam",
                              baseline_optimizer="sgd", n_boot=2000)
    assert sorted(verdict["problem"]) == sorted(runs["problem"].unique())
    assert set(verdict["verdict"]) <= {"better", "worse", "indistinguishable", "missing"}
    assert (verdict["low"] <= verdict["high"]).all()


def test_every_function_copes_with_empty_tables() -> None:
    runs, curves = runs_of(), curves_of({})
    assert scoring.metrics(runs) == {} and scoring.targets(runs) == {}
    perf = scoring.performance(runs, curves, targets={})
    assert perf.empty and list(perf.columns) == scoring.PERFORMANCE_COLUMNS
    assert scoring.ranking(perf).empty
    times = scoring.study_times(scoring.time_to_target(runs, curves, {}))
    assert times.empty and scoring.performance_profile(times).empty
    assert scoring.benchmark_score(times).empty
    for table in (scoring.budget_curve(runs), scoring.sensitivity(runs),
                  scoring.compare(runs, runs)):
        assert table.empty


def test_module_is_pure() -> None:
    """No I/O and no printing in the scoring module (DESIGN: only cli.py prints)."""
    source = Path(scoring.__file__).read_text()
    for word in ("print(", "open(", "read_parquet", "to_parquet", "sys.exit"):
        assert word not in source
