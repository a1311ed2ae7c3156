"""Scores of optimizer runs: performance, speed, time to target, profiles, budgets, verdicts.

Everything here is a pure function of the tidy tables of :mod:`obsbench.results` (``runs``:
one row a run; ``curves``: ``run_id, epoch, split, metric, value``) to pandas objects: no
I/O, no printing, vectorised over runs, and deterministic (every random draw comes from
``np.random.default_rng(seed)``). A *solver* is one row of :data:`GROUP` without the
problem: an optimizer, with its tuning budget and learning-rate schedule where the pool has
several (:func:`solver_labels`).

What is measured, and where the definitions come from:

* **Final and best performance, speed** (:func:`performance`), per DeepOBS (Schneider,
  Balles & Hennig, "DeepOBS: A Deep Learning Optimizer Benchmark Suite", ICLR 2019): the
  final (last-epoch) test accuracy, or test loss for problems without accuracy
  (:func:`metrics`), over the seeds of the tuned setting; speed = the first epoch at which a
  run reaches the problem's convergence performance (:data:`DEEPOBS_TARGETS`, or
  :func:`targets`).
* **Time to target and the benchmark score** (:func:`time_to_target`, :func:`study_times`,
  :func:`performance_profile`, :func:`benchmark_score`, :func:`speedup`), per AlgoPerf
  (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv 2306.07179, 2023;
  Kasimbeg et al., "Accelerating Neural Network Training: An Analysis of the AlgoPerf
  Training Algorithms Competition", ICLR 2025; MLCommons ``algorithmic-efficiency``,
  ``scoring/performance_profile.py`` and ``scoring/compute_speedups.py``) and performance
  profiles (Dolan & Moré, "Benchmarking Optimization Software with Performance Profiles",
  Mathematical Programming 91, 2002).
* **Expected performance under a tuning budget** (:func:`budget_curve`), per Crowded Valley
  (Schmidt, Schneider & Hennig, "Descending through a Crowded Valley: Benchmarking Deep
  Learning Optimizers", ICML 2021) and Dodge et al. ("Show Your Work: Improved Reporting of
  Experimental Results", EMNLP 2019).
* **Hyperparameter sensitivity** (:func:`sensitivity`), DeepOBS 1.1's tuneability plot.
* **A verdict against a baseline** (:func:`compare`): a percentile bootstrap over seeds
  (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993), and ranks per problem
  (:func:`ranking`, Crowded Valley's Figure 4).

A typical sequence::

    perf = performance(runs, curves, targets=targets(runs, split="test"))
    ranks = ranking(perf)
    goal = targets(runs)                                   # validation targets
    ttt = time_to_target(runs[runs["selected"]], curves, goal)
    times = study_times(ttt, unit="steps")
    profile, score = performance_profile(times), benchmark_score(times)
    fast = speedup(times, "adam", budget=run_length(runs, unit="steps"))
    band = budget_curve(runs)
    verdict = compare(mine, published, baseline_optimizer="adam")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

GROUP = ["problem", "optimizer", "budget", "schedule"]
"""Columns that identify one solver on one problem; grouped with ``dropna=False`` (a missing
budget or schedule is a value of its own)."""
SOLVER = ["optimizer", "budget", "schedule"]
SPLITS = ("train", "valid", "test")
Unit = Literal["steps", "seconds", "epoch"]
UNITS = ("steps", "seconds", "epoch")

DEEPOBS_TARGETS: dict[str, float] = {
    "quadratic_deep": 87.70315464772136,
    "quadratic_deep_tf": 87.70315464772136,
    "fmnist_2c2d": 0.9198093278634639,
    "cifar10_3c3d": 0.8283307079578206,
    "cifar100_allcnnc": 0.5256043511573971,
    "svhn_wrn164": 0.9501991843298437,
    "tolstoi_char_rnn": 0.6045863566200845,
}
"""DeepOBS's convergence performances: test loss (quadratic_deep) or test accuracy that
defines speed (DeepOBS_Baselines ``convergence_performance.json``). ``quadratic_deep_tf``
(quadratic_deep trained as DeepOBS 1.1's TensorFlow runner did) shares quadratic_deep's.
The file's VAE values (mnist_vae 73.5, fmnist_vae 93.0) are left out: they lie far above the
baselines' final losses (27.8, 23.1), so every run would "converge" in its first epoch."""


@dataclass(frozen=True)
class Metric:
    """A metric of the runs table: an evaluation split and ``loss`` or ``accuracy``."""

    split: str
    name: str

    @property
    def column(self) -> str:
        """The runs-table column of the final value, e.g. ``final_test_accuracy``."""
        return f"final_{self.split}_{self.name}"

    @property
    def higher_is_better(self) -> bool:
        return self.name == "accuracy"

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is: ``sign * value`` is a score."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``test accuracy``."""
        return f"{self.split} {self.name}"


# ----------------------------------------------------------------------- helpers


def _with_group(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with any missing :data:`GROUP` column added as None (hand-made tables)."""
    missing = [c for c in GROUP if c not in frame.columns]
    return frame.assign(**{c: None for c in missing}) if missing else frame


def _metric_arrays(runs: pd.DataFrame, metric: dict[str, Metric]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the final value of its problem's metric (NaN where not finite, or where the
    problem has no metric) and the metric's sign (NaN where none)."""
    problems = runs["problem"]
    values = np.full(len(runs), np.nan)
    column_of = problems.map({p: m.column for p, m in metric.items()})
    for column in column_of.dropna().unique():
        if column not in runs.columns:
            continue
        mask = (column_of == column).to_numpy()
        values[mask] = runs[column].to_numpy(dtype=float, na_value=np.nan)[mask]
    values[~np.isfinite(values)] = np.nan
    sign = problems.map({p: m.sign for p, m in metric.items()}).to_numpy(dtype=float)
    return values, sign


def _curve_rows(runs: pd.DataFrame, curves: pd.DataFrame, split: str,
                metric: dict[str, Metric]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The curve points of ``runs`` on ``split`` in their problem's metric, as arrays
    ``(position of the run in runs, epoch, value)``. Run ids must be unique in ``runs``."""
    on_split = curves[(curves["split"] == split).to_numpy()]
    position = pd.Index(runs["run_id"]).get_indexer(on_split["run_id"])
    names = runs["problem"].map({p: m.name for p, m in metric.items()}).to_numpy(dtype=object)
    known = position >= 0
    position = position[known]
    match = on_split["metric"].to_numpy(dtype=object)[known] == names[position]
    epoch = on_split["epoch"].to_numpy(dtype=float)[known][match]
    value = on_split["value"].to_numpy(dtype=float)[known][match]
    return position[match], epoch, value


def _first_reached(n_runs: int, position: np.ndarray, epoch: np.ndarray, value: np.ndarray,
                   goal: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the first epoch whose value reaches ``goal`` (``sign * value >= sign *
    goal``; inf where never, NaN where the goal is NaN) and whether the run has a curve."""
    with np.errstate(invalid="ignore"):
        reached = sign[position] * value >= sign[position] * goal[position]
    first = np.full(n_runs, np.inf)
    if reached.any():
        earliest = pd.Series(epoch[reached]).groupby(position[reached]).min()
        first[earliest.index.to_numpy()] = earliest.to_numpy()
    first[np.isnan(goal)] = np.nan
    has_curve = np.zeros(n_runs, dtype=bool)
    has_curve[position] = True
    return first, has_curve


def _trial_keys(runs: pd.DataFrame) -> pd.Series:
    """One key per tuning trial: the trial index, or the hyperparameters where the runs
    table has no trial index (imported DeepOBS runs: one setting folder, one trial)."""
    trial = runs["trial"]
    by_index = "t" + trial.astype(str)
    by_setting = "h" + runs["hyperparameters"].astype(str)
    return by_index.where(trial.notna(), by_setting)


def solver_labels(frame: pd.DataFrame) -> pd.Series:
    """A solver label per row of a table with :data:`GROUP` columns.

    The label is the optimizer, or ``"optimizer (budget, schedule)"`` (missing parts left
    out) where ``frame`` has more than one budget/schedule combination for that optimizer.

    Returns:
        Labels, aligned with ``frame``'s index.
    """
    frame = _with_group(frame)
    # a sentinel, not NaN, so that equal missing budgets match as keys
    parts = frame[SOLVER].astype(object).where(frame[SOLVER].notna(), "\x00")
    combos = parts.drop_duplicates()
    per_optimizer = combos["optimizer"].value_counts()
    labels = {}
    for optimizer, budget, schedule in combos.itertuples(index=False):
        label = str(optimizer)
        shown = [str(x) for x in (budget, schedule) if x != "\x00"]
        if per_optimizer[optimizer] > 1 and shown:
            label += f" ({', '.join(shown)})"
        labels[optimizer, budget, schedule] = label
    keys = list(parts.itertuples(index=False, name=None))
    return pd.Series([labels[k] for k in keys], index=frame.index, dtype=object)


# ----------------------------------------------------------------------- metrics, targets


def metrics(runs: pd.DataFrame, split: str = "test") -> dict[str, Metric]:
    """The metric per problem on ``split``: accuracy where any run of the problem has a final
    accuracy on any split, else loss.

    This is DeepOBS's choice: accuracy for classifiers; loss for quadratic_deep, the 2-D
    functions and the VAEs (DeepOBS 1.1 ``deepobs_plot_results``).
    """
    columns = [f"final_{s}_accuracy" for s in SPLITS if f"final_{s}_accuracy" in runs.columns]
    has = runs[columns].notna().any(axis=1) if columns else pd.Series(False, index=runs.index)
    per_problem = has.groupby(runs["problem"]).any()
    return {str(p): Metric(split, "accuracy" if a else "loss") for p, a in per_problem.items()}


def targets(runs: pd.DataFrame, *, split: str = "valid",
            rule: Literal["median", "worst", "best"] = "median") -> dict[str, float]:
    """A target per problem from the pool of solvers in ``runs``.

    Per solver (optimizer, budget, schedule) the mean final value of its selected runs on
    ``split`` (diverged runs have no final value and are left out of the mean; a solver whose
    selected runs all diverged has none and takes no part), then per problem the median of
    these means (``rule="median"``), the worst or the best.

    The targets depend on the pool: adding a solver can move them. AlgoPerf fixes its targets
    once, from tuned baselines (Dahl et al. 2023, section 4.4); do likewise for comparable
    numbers over time by keeping the dict this returns, or pass any explicit dict (e.g.
    :data:`DEEPOBS_TARGETS`) to the functions that take targets.

    Returns:
        Problem -> target value, for the problems with at least one selected final value.
    """
    if rule not in ("median", "worst", "best"):
        raise ValueError(f"unknown rule {rule!r}; use 'median', 'worst' or 'best'")
    runs = _with_group(runs)
    metric = metrics(runs, split)
    chosen = runs[runs["selected"].to_numpy(dtype=bool)]
    values, sign = _metric_arrays(chosen, metric)
    # scores (sign * value, higher is better) make "worst" and "best" direction-free
    score = chosen[GROUP].assign(score=sign * values)
    means = score.groupby(GROUP, dropna=False)["score"].mean().dropna()
    picked = means.groupby(level="problem").agg({"median": "median", "worst": "min",
                                                  "best": "max"}[rule])
    return {str(p): float(metric[str(p)].sign * s) for p, s in picked.items()}


# ----------------------------------------------------------------------- performance


PERFORMANCE_COLUMNS = [*GROUP, "metric", "higher_is_better", "n", "n_ok", "n_diverged",
                       "final_mean", "final_std", "final_median", "final_q25", "final_q75",
                       "best_mean", "best_std", "speed"]


def performance(runs: pd.DataFrame, curves: pd.DataFrame | None = None, *, split: str = "test",
                targets: dict[str, float] | None = None, selected_only: bool = True
                ) -> pd.DataFrame:
    """Final performance, best performance and speed per solver and problem (DeepOBS).

    The metric per problem is :func:`metrics` (``runs``, ``split``). Per :data:`GROUP`:

    * ``n`` runs, ``n_ok`` with status ok, ``n_diverged`` diverged;
    * ``final_*``: mean, std (ddof 1; NaN for one value), median and quartiles (linear
      interpolation) of the finite final values, so diverged runs are left out;
    * ``best_*``: mean and std over runs of each run's best value over epochs of its curve on
      ``split`` (max for accuracy, min for loss, finite values only; a diverged run counts
      with its best value before it diverged); NaN without ``curves``;
    * ``speed``: DeepOBS's speed, the mean over runs of the first epoch (0 = before
      training) at which the run's ``split`` metric reaches ``targets[problem]`` (>= for
      accuracy, <= for loss), ``num_epochs + 1`` where it never does (DeepOBS 1.1
      ``AggregateRun``; 1.2 ``SettingAnalyzer.calculate_speed``). NaN where the problem has
      no target or no curves; runs without a curve on ``split`` are left out. The targets
      must be on the same split as the curves (:data:`DEEPOBS_TARGETS` are test values).

    Args:
        runs: the runs table.
        curves: the curves table, for ``best_*`` and ``speed``.
        split: the evaluation split.
        targets: problem -> target, for ``speed``.
        selected_only: score only the runs of the settings tuning chose (the re-runs).

    Returns:
        One row per GROUP, columns :data:`PERFORMANCE_COLUMNS` (``metric`` is the metric's
        label, e.g. ``test accuracy``), sorted by GROUP.
    """
    runs = _with_group(runs)
    metric = metrics(runs, split)
    if selected_only:
        runs = runs[runs["selected"].to_numpy(dtype=bool)]
    runs = runs.reset_index(drop=True)
    values, sign = _metric_arrays(runs, metric)
    best = np.full(len(runs), np.nan)
    speed = np.full(len(runs), np.nan)
    if curves is not None and len(runs):
        position, epoch, value = _curve_rows(runs, curves, split, metric)
        score = sign[position] * value
        finite = np.isfinite(score)
        top = pd.Series(score[finite]).groupby(position[finite]).max()
        best[top.index.to_numpy()] = sign[top.index.to_numpy()] * top.to_numpy()
        if targets:
            goal = runs["problem"].map(targets).to_numpy(dtype=float)
            first, has_curve = _first_reached(len(runs), position, epoch, value, goal, sign)
            never = runs["num_epochs"].to_numpy(dtype=float) + 1
            speed = np.where(np.isinf(first), never, first)
            speed[~has_curve] = np.nan
    table = runs[GROUP].assign(
        value=values, best=best, speed=speed,
        ok=(runs["status"] == "ok").to_numpy(), diverged=(runs["status"] == "diverged").to_numpy())
    groups = table.groupby(GROUP, dropna=False, sort=True)
    out = groups.agg(n=("value", "size"), n_ok=("ok", "sum"), n_diverged=("diverged", "sum"),
                     final_mean=("value", "mean"), final_std=("value", "std"),
                     final_median=("value", "median"), best_mean=("best", "mean"),
                     best_std=("best", "std"), speed=("speed", "mean"))
    # positional: the group order is the same, and NaN keys would not align by label
    out["final_q25"] = groups["value"].quantile(0.25).to_numpy()
    out["final_q75"] = groups["value"].quantile(0.75).to_numpy()
    out = out.reset_index()
    out["metric"] = out["problem"].map({p: m.label for p, m in metric.items()})
    out["higher_is_better"] = out["problem"].map(
        {p: m.higher_is_better for p, m in metric.items()}).astype(bool)
    for column in ("n", "n_ok", "n_diverged"):
        out[column] = out[column].astype("int64")
    return out[PERFORMANCE_COLUMNS]


def ranking(perf: pd.DataFrame) -> pd.DataFrame:
    """Ranks of the solvers per problem by final performance (Crowded Valley, Figure 4).

    Per problem, the solvers are ranked by ``final_mean`` of :func:`performance`: 1 = best
    (highest accuracy, lowest loss), ties share the average of their ranks, a solver without
    a final value (every run diverged) ranks last.

    Returns:
        Index ``solver`` (:func:`solver_labels`), one column per problem (NaN where the solver
        did not run it) and ``mean rank`` (over the problems it ran), sorted by mean rank.
    """
    perf = _with_group(perf)
    sign = np.where(perf["higher_is_better"].to_numpy(dtype=bool), 1.0, -1.0)
    score = pd.Series(sign * perf["final_mean"].to_numpy(dtype=float), index=perf.index)
    rank = score.groupby(perf["problem"]).rank(ascending=False, method="average",
                                               na_option="bottom")
    long = pd.DataFrame({"solver": solver_labels(perf), "problem": perf["problem"],
                         "rank": rank})
    wide = long.pivot(index="solver", columns="problem", values="rank")
    wide = wide.sort_index(axis=1)
    wide.columns.name = None
    wide["mean rank"] = wide.mean(axis=1)
    order = np.lexsort((wide.index.to_numpy(dtype=str), wide["mean rank"].to_numpy()))
    return wide.iloc[order]


# ----------------------------------------------------------------------- time to target


TTT_COLUMNS = ["run_id", *GROUP, "seed", "trial", "epoch", "steps", "seconds"]


def time_to_target(runs: pd.DataFrame, curves: pd.DataFrame, targets: dict[str, float], *,
                   split: str = "valid") -> pd.DataFrame:
    """Per run, the time until its ``split`` metric first reaches the problem's target.

    The metric is :func:`metrics` (``runs``, ``split``); a value reaches the target when it
    is >= (accuracy) or <= (loss). ``epoch`` is the first evaluated epoch that does (0 =
    before training); ``steps = epoch * steps per epoch`` and ``seconds = steps * train_s /
    steps`` of the run, i.e. steps and training time per epoch are taken as uniform (for a
    finished run ``epoch * steps / num_epochs`` and ``epoch * train_s / num_epochs``). As in
    AlgoPerf, the target has to be hit at an evaluation, and a run that reaches it counts
    even if it diverges later (AlgoPerf would have stopped it there); a diverged run's steps
    per epoch are those of the finished runs of its problem, batch size and length.

    All three are inf where the run never reaches the target or has no curve on ``split``
    (e.g. a run that diverged in its first epoch); NaN where the problem has no target; and
    ``steps``/``seconds`` are NaN where the runs table has no step count or training time
    (imported DeepOBS runs: use ``epoch``).

    Pass only the runs to score, e.g. ``runs[runs["selected"]]`` for the tuned setting.

    Returns:
        One row per run, columns :data:`TTT_COLUMNS`, in the order of ``runs``.
    """
    runs = _with_group(runs).reset_index(drop=True)
    metric = metrics(runs, split)
    _, sign = _metric_arrays(runs, metric)
    goal = runs["problem"].map(targets).to_numpy(dtype=float)
    position, epoch, value = _curve_rows(runs, curves, split, metric)
    first, _ = _first_reached(len(runs), position, epoch, value, goal, sign)

    steps = pd.to_numeric(runs["steps"], errors="coerce").to_numpy(dtype=float)
    train_s = pd.to_numeric(runs["train_s"], errors="coerce").to_numpy(dtype=float)
    num_epochs = runs["num_epochs"].to_numpy(dtype=float)
    ok = (runs["status"] == "ok").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        own = steps / num_epochs
        per_step_s = np.where(steps > 0, train_s / steps, np.nan)
    # an unfinished run stopped early: its own steps / num_epochs undercounts an epoch
    finished = pd.Series(np.where(ok, own, np.nan))
    keys = [runs[c] for c in ("problem", "batch_size", "num_epochs")]
    nominal = finished.groupby(keys, dropna=False).transform("median").to_numpy(dtype=float)
    per_epoch = np.where(ok, own, nominal)
    to_steps = first * per_epoch
    to_seconds = to_steps * per_step_s
    for column in (to_steps, to_seconds):
        column[first == 0] = 0.0
        column[np.isinf(first)] = np.inf
    out = runs[["run_id", *GROUP, "seed", "trial"]].copy()
    out["epoch"], out["steps"], out["seconds"] = first, to_steps, to_seconds
    return out


def study_times(ttt: pd.DataFrame, *, unit: Unit = "steps") -> pd.DataFrame:
    """Per problem and solver, AlgoPerf's time to target: the median over studies of the
    fastest trial of each study.

    A study is one seed: per (GROUP, seed) the minimum over its trials, then the median over
    seeds, where a study that never reaches the target counts as inf and takes part in the
    median (AlgoPerf external tuning: 3 studies of 5 trials, Kasimbeg et al. 2025). With 10
    seeds the median is inf as soon as more than 5 studies miss, and the average of the two
    middle values otherwise. NaN studies (no target, no step count) are left out.

    Args:
        ttt: :func:`time_to_target`.
        unit: ``steps``, ``seconds`` or ``epoch``.

    Returns:
        Index ``problem``, one column per solver (:func:`solver_labels`), values the time in
        ``unit``; NaN where a solver did not run a problem. Problems without any time (no
        target) are left out.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    ttt = _with_group(ttt)
    per_study = ttt.groupby([*GROUP, "seed"], dropna=False)[unit].min()
    per_solver = per_study.groupby(level=GROUP, dropna=False).median().reset_index()
    per_solver["solver"] = solver_labels(per_solver)
    wide = per_solver.pivot(index="problem", columns="solver", values=unit)
    return wide.dropna(how="all").astype(float).sort_index(axis=0).sort_index(axis=1)


def run_length(runs: pd.DataFrame, *, unit: Unit = "steps") -> pd.Series:
    """Per problem, the length of a full run in ``unit``: the budget that :func:`speedup`
    puts in place of a miss (AlgoPerf's ``max_runtime``).

    ``epoch``: the largest ``num_epochs``; ``steps``: the largest step count of a finished
    run; ``seconds``: the largest training time of a finished run (the slowest solver's).
    """
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    ok = runs[(runs["status"] == "ok").to_numpy()]
    column = {"epoch": "num_epochs", "steps": "steps", "seconds": "train_s"}[unit]
    source = runs if unit == "epoch" else ok
    values = pd.to_numeric(source[column], errors="coerce").astype(float)
    return values.groupby(source["problem"]).max().rename(unit)


# ----------------------------------------------------------------------- profiles and scores


def performance_ratios(times: pd.DataFrame, *, max_ratio: float = 4.0) -> pd.DataFrame:
    """Performance ratios ``r(s, p) = t(s, p) / min_s' t(s', p)`` (Dolan & Moré 2002).

    As in AlgoPerf, a ratio above ``max_ratio`` is set to inf (no credit). A missing time
    (NaN: the solver did not run the problem) counts as a miss (inf); equal times give equal
    ratios, 1 for all the fastest (also where the fastest time is 0). Problems that every
    solver misses are dropped: they say nothing about the solvers relative to each other.

    Args:
        times: :func:`study_times` (index problem, columns solver).
        max_ratio: AlgoPerf's ``max_tau`` (4).

    Returns:
        Same shape as ``times``, less the dropped problems.
    """
    if not max_ratio > 1:
        raise ValueError(f"max_ratio must be > 1 (got {max_ratio})")
    t = times.astype(float).fillna(np.inf)
    fastest = t.min(axis=1)
    t = t[np.isfinite(fastest.to_numpy())]
    fastest = fastest[np.isfinite(fastest.to_numpy())]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = t.div(fastest, axis=0)
    ratios = ratios.mask(t.eq(fastest, axis=0), 1.0)
    return ratios.mask(ratios > max_ratio, np.inf)


def performance_profile(times: pd.DataFrame, *, max_ratio: float = 4.0) -> pd.DataFrame:
    """The performance profile of each solver (Dolan & Moré 2002; AlgoPerf).

    ``rho_s(tau)`` = the fraction of problems with ``r(s, p) <= tau``
    (:func:`performance_ratios`), a right-continuous step function of ``tau``. It is given
    exactly: at 1, at ``max_ratio`` and at every ratio of any solver between them (so every
    solver shares one ``tau`` grid), and between two of them it keeps the value of the left
    one (draw with ``drawstyle="steps-post"``). ``rho_s(1)`` is the fraction of problems
    where ``s`` is fastest, ``rho_s(max_ratio)`` where it is within ``max_ratio`` of the
    fastest. Problems that every solver misses are dropped.

    Returns:
        Columns ``solver, tau, rho``, sorted by solver and tau.
    """
    ratios = performance_ratios(times, max_ratio=max_ratio)
    r = ratios.to_numpy(dtype=float)
    if r.size == 0:
        return pd.DataFrame({"solver": pd.Series(dtype=object), "tau": pd.Series(dtype=float),
                             "rho": pd.Series(dtype=float)})
    inside = r[np.isfinite(r)]
    tau = np.unique(np.concatenate([[1.0, max_ratio], inside[inside <= max_ratio]]))
    ordered = np.sort(r, axis=0)  # shape (problems, solvers), inf last
    rho = np.stack([np.searchsorted(ordered[:, j], tau, side="right")
                    for j in range(r.shape[1])]) / r.shape[0]  # shape (solvers, taus)
    solvers = np.repeat(np.asarray(ratios.columns, dtype=object), len(tau))
    return pd.DataFrame({"solver": solvers, "tau": np.tile(tau, r.shape[1]),
                         "rho": rho.ravel()})


def benchmark_score(times: pd.DataFrame, *, max_ratio: float = 4.0) -> pd.Series:
    """AlgoPerf's benchmark score per solver: the normalised area under its profile.

    ``B_s = 1 / (max_ratio - 1) * integral from 1 to max_ratio of rho_s(tau) d tau``, in
    [0, 1]; 1 means fastest on every problem. Computed exactly: a problem with ratio ``r <=
    max_ratio`` adds ``[r <= tau]`` to ``rho`` times ``1 / n_problems``, whose integral is
    ``max_ratio - r``, so ``B_s = mean over problems of (max_ratio - r) / (max_ratio - 1)``,
    with 0 for a miss. (AlgoPerf's ``performance_profile.py`` samples ``rho`` on a grid
    instead and approximates the same area.) Problems that every solver misses are dropped
    (:func:`performance_ratios`); the score depends on the pool of solvers, as every
    profile-based score does.

    Returns:
        Score per solver (index: the columns of ``times``), name ``score``; NaN where no
        problem is left.
    """
    ratios = performance_ratios(times, max_ratio=max_ratio)
    credit = ((max_ratio - ratios) / (max_ratio - 1)).where(np.isfinite(ratios), 0.0)
    if credit.empty:
        return pd.Series(np.nan, index=times.columns, name="score", dtype=float)
    return credit.mean(axis=0).rename("score")


def speedup(times: pd.DataFrame, baseline: str, *, budget: pd.Series | float) -> pd.Series:
    """Geometric-mean speedup of each solver over ``baseline`` (AlgoPerf).

    ``speedup_s = exp(mean over problems of log(t(baseline, p) / t(s, p)))``; > 1 means
    faster than the baseline. A miss (inf, or NaN: not run) is replaced by the problem's
    ``budget``, as AlgoPerf's ``compute_speedups.py`` replaces it by the runtime budget, so a
    miss costs the full run and two misses cancel. Unlike :func:`benchmark_score` this does
    not depend on the pool, only on the baseline.

    Args:
        times: :func:`study_times`.
        baseline: a column of ``times``.
        budget: per problem (index) the full run in the unit of ``times``
            (:func:`run_length`), or one number for every problem.

    Returns:
        Speedup per solver (the baseline's is 1), name ``speedup``.
    """
    if baseline not in times.columns:
        raise ValueError(f"baseline {baseline!r} is not a solver of the table; solvers: "
                         f"{', '.join(map(str, times.columns))}")
    t = times.astype(float)
    if isinstance(budget, pd.Series):
        cap = budget.reindex(t.index).astype(float)
    else:
        cap = pd.Series(float(budget), index=t.index)
    miss = ~np.isfinite(t.to_numpy())
    lacking = miss.any(axis=1) & cap.isna().to_numpy()
    if lacking.any():
        raise ValueError(f"no budget for problems with misses: "
                         f"{', '.join(map(str, t.index[lacking]))}")
    filled = np.where(miss, cap.to_numpy()[:, None], t.to_numpy())  # shape (problems, solvers)
    reference = filled[:, list(t.columns).index(baseline)]
    with np.errstate(divide="ignore"):
        logs = np.log(reference[:, None] / filled)
    return pd.Series(np.exp(logs.mean(axis=0)), index=t.columns, name="speedup")


# ----------------------------------------------------------------------- tuning budgets


BUDGET_COLUMNS = [*GROUP, "k", "expected", "low", "high", "n_trials"]


def _quantile_of_counts(ranked: np.ndarray, passed: np.ndarray, p: float) -> np.ndarray:
    """Per row, the ``p`` quantile of a sample given as counts: ``ranked`` the distinct
    values in increasing order, ``passed[r, i]`` how many of row ``r``'s values are at most
    ``ranked[i]`` (cumulative counts). Interpolated as ``np.quantile`` does by default:
    between the order statistics ``floor(h)`` and ``floor(h) + 1``, ``h = (size - 1) * p``.
    """
    size = int(passed[0, -1])
    h = (size - 1) * p
    below = math.floor(h)
    # the j-th smallest value (from 0) is the first whose cumulative count exceeds j
    lower = ranked[(passed <= below).sum(axis=1)]
    upper = ranked[(passed <= min(below + 1, size - 1)).sum(axis=1)]
    return lower + (h - below) * (upper - lower)


def budget_curve(runs: pd.DataFrame, *, metric: dict[str, Metric] | None = None,
                 n_boot: int = 1000, seed: int = 0, max_budget: int | None = None,
                 level: float = 0.95) -> pd.DataFrame:
    """Expected reported performance after ``k`` tuning trials (Crowded Valley; Dodge et al.
    2019, "expected validation performance").

    Per solver and problem, every tuning trial (selected or not) gives two numbers: its
    seed-mean final value on the valid split (what tuning selects on) and on the reported
    metric's split (``metric[problem]``, default :func:`metrics` on test). A practitioner
    draws ``k`` trials uniformly with replacement and reports the one with the best valid
    value. With the ``n`` trials sorted by valid value and ``c_j`` the number at or below the
    ``j``-th distinct valid value, the best of ``k`` draws lies at level ``j`` with
    probability ``P_j(k) = (c_j / n)^k - (c_(j-1) / n)^k``, shared evenly by the trials of
    the level (ties on the valid value are broken uniformly at random), so the expected
    reported value is exact: ``sum_j P_j(k) * mean reported value at level j`` (without ties,
    Dodge et al.'s formula applied to the reported value of the best trial).

    The band is the central ``level`` interval (percentiles, linear interpolation as
    ``np.quantile``) of the reported value of the best of ``k`` resampled trials over
    ``n_boot`` bootstrap draws from ``np.random.default_rng(seed)``, i.e. how far one
    practitioner's outcome with ``k`` trials spreads around the expectation. The draws are
    not made one by one: each trial is the reported one of ``k`` resampled trials with the
    probability above, so how often each trial wins in ``n_boot`` draws is one multinomial
    draw, the same distribution at a cost of ``n`` instead of ``n_boot * k`` per ``k``.

    Trials without a finite valid and reported mean (every seed diverged) are left out: a
    practitioner would discard a diverged setting and draw again. Where the problem has no
    valid value at all (DeepOBS 1.1 imports), selection is on the reported split itself.

    Args:
        runs: the runs table (all trials, not only the selected ones).
        metric: the reported metric per problem.
        n_boot: bootstrap draws per ``k``.
        seed: seed of the generator.
        max_budget: the largest ``k`` (default: the number of trials of each group).
        level: coverage of the band.

    Returns:
        Columns :data:`BUDGET_COLUMNS`, one row per GROUP and ``k = 1..K``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1 (got {n_boot})")
    runs = _with_group(runs).reset_index(drop=True)
    metric = metrics(runs, "test") if metric is None else metric
    reported, sign = _metric_arrays(runs, metric)
    selection = {p: Metric("valid", m.name) for p, m in metric.items()}
    valid, _ = _metric_arrays(runs, selection)
    no_valid = pd.Series(np.isnan(valid)).groupby(runs["problem"]).transform("all").to_numpy()
    valid = np.where(no_valid, reported, valid)
    table = runs[GROUP].assign(trial=_trial_keys(runs), valid=sign * valid,
                               reported=reported, sign=sign)
    trials = table.groupby([*GROUP, "trial"], dropna=False, sort=True).agg(
        valid=("valid", "mean"), reported=("reported", "mean"), sign=("sign", "first"))
    trials = trials.dropna(subset=["valid", "reported"]).reset_index()
    if trials.empty:
        return pd.DataFrame({c: [] for c in BUDGET_COLUMNS})
    codes = trials.groupby(GROUP, dropna=False, sort=True).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, (1 + level) / 2]
    all_scores = trials["valid"].to_numpy()  # sign * valid: higher is better
    all_values = trials["reported"].to_numpy()
    budgets, expected, low, high = [], [], [], []
    for start, end in zip(starts, ends, strict=True):
        score, value = all_scores[start:end], all_values[start:end]
        n = len(score)
        order = np.argsort(score, kind="stable")
        score, value = score[order], value[order]
        k = np.arange(1, (n if max_budget is None else max_budget) + 1)
        level_end = np.flatnonzero(np.r_[score[1:] != score[:-1], True]) + 1  # c_j
        size = np.diff(np.r_[0, level_end])
        below = (np.r_[0, level_end] / n)[:, None] ** k[None, :]  # shape (levels + 1, k)
        # P_j(k), split evenly among the trials of a level (ties broken at random)
        chance = (np.diff(below, axis=0) / size[:, None])[np.repeat(np.arange(len(size)), size)]
        chance = np.clip(chance, 0, None)  # shape (n, k): the chance each trial is reported
        expected.append(value @ chance)
        # how often each trial is the best of k resampled trials, in n_boot draws
        wins = rng.multinomial(n_boot, chance.T)  # shape (k, n)
        by_value = np.argsort(value, kind="stable")
        passed = np.cumsum(wins[:, by_value], axis=1)  # shape (k, n)
        low.append(_quantile_of_counts(value[by_value], passed, q[0]))
        high.append(_quantile_of_counts(value[by_value], passed, q[1]))
        budgets.append(k)
    owner = np.repeat(np.arange(len(starts)), [len(k) for k in budgets])
    keys = trials[GROUP].iloc[starts[owner]].reset_index(drop=True)
    return keys.assign(k=np.concatenate(budgets), expected=np.concatenate(expected),
                       low=np.concatenate(low), high=np.concatenate(high),
                       n_trials=(ends - starts)[owner])[BUDGET_COLUMNS]


def _setting(text: str) -> dict[str, object]:
    """A ``hyperparameters`` cell as a dict (empty where it is not a JSON object)."""
    try:
        setting = json.loads(text)
    except ValueError:
        return {}
    return setting if isinstance(setting, dict) else {}


def sensitivity(runs: pd.DataFrame, *, hyperparameter: str = "lr",
                split: str = "test") -> pd.DataFrame:
    """Final performance per tuning trial against one hyperparameter (DeepOBS 1.1
    tuneability plot, ``plot_lr_sensitivity``).

    Per (GROUP, trial): ``value`` the trial's hyperparameter, ``mean``/``std``/``n`` of the
    finite final values (:func:`metrics` on ``split``) over its seeds, and ``relative`` =
    ``mean / best`` for accuracy or ``best / mean`` for loss, with ``best`` the best mean
    over the trials of the group (so 1 = the best trial, lower = worse); ``selected``
    whether tuning chose the trial. Rows whose hyperparameters lack ``hyperparameter`` are
    dropped; a non-numeric value is NaN.

    Returns:
        Columns ``GROUP + [trial, value, mean, std, n, relative, selected]``, sorted by GROUP
        and value.
    """
    columns = [*GROUP, "trial", "value", "mean", "std", "n", "relative", "selected"]
    runs = _with_group(runs).reset_index(drop=True)
    metric = metrics(runs, split)
    settings = runs["hyperparameters"].astype(str)
    parsed = {s: _setting(s).get(hyperparameter) for s in settings.unique()}
    raw = settings.map(parsed)
    keep = raw.notna().to_numpy()
    runs, raw = runs[keep], raw[keep]
    values, sign = _metric_arrays(runs, metric)
    table = runs[GROUP].assign(key=_trial_keys(runs), trial=runs["trial"],
                               value=pd.to_numeric(raw, errors="coerce").astype(float),
                               final=values, sign=sign,
                               selected=runs["selected"].to_numpy(dtype=bool))
    out = table.groupby([*GROUP, "key"], dropna=False, sort=True).agg(
        trial=("trial", "first"), value=("value", "first"), mean=("final", "mean"),
        std=("final", "std"), n=("final", "count"), sign=("sign", "first"),
        selected=("selected", "any")).reset_index()
    if out.empty:
        return pd.DataFrame({c: [] for c in columns})
    score = out["sign"] * out["mean"]
    best = out["sign"] * score.groupby([out[c] for c in GROUP], dropna=False).transform("max")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["relative"] = np.where(out["sign"] > 0, out["mean"] / best, best / out["mean"])
    out["n"] = out["n"].astype("int64")
    return out.sort_values([*GROUP, "value"], ignore_index=True)[columns]


# ----------------------------------------------------------------------- verdicts


COMPARE_COLUMNS = ["problem", "metric", "candidate", "baseline", "improvement", "low", "high",
                   "n_candidate", "n_baseline", "verdict", "missing_candidate",
                   "missing_baseline"]


def compare(candidate: pd.DataFrame, baseline: pd.DataFrame, *,
            metric: dict[str, Metric] | None = None, n_boot: int = 10_000, seed: int = 0,
            level: float = 0.95, candidate_optimizer: str | None = None,
            baseline_optimizer: str | None = None) -> pd.DataFrame:
    """Per problem, whether the candidate's final performance beats the baseline's.

    Each side is its selected runs (optionally of one optimizer); each side must then have a
    single solver (optimizer, budget, schedule) per problem. The values are the finite final
    values of ``metric[problem]`` (default :func:`metrics` of both sides together, on test):
    a diverged run has none and is left out of its side, counted in ``missing_*``; note
    that this favours a side that diverges on unlucky seeds, so read ``missing_*`` too.

    ``improvement`` is oriented so that > 0 means the candidate is better (candidate -
    baseline for accuracy, baseline - candidate for loss), from the two seed means. ``low``
    and ``high`` are the percentile bootstrap interval (coverage ``level``) of the
    improvement: each of ``n_boot`` draws resamples the seeds of each side independently with
    replacement (Efron & Tibshirani 1993), from ``np.random.default_rng(seed)``.
    ``verdict`` is ``better`` if ``low > 0``, ``worse`` if ``high < 0``, else
    ``indistinguishable``; ``missing`` where a side has no finite value on the problem.

    Raises:
        ValueError: a side has several solvers on one problem (restrict it with
            ``*_optimizer`` or filter the table by budget and schedule).

    Returns:
        One row per problem of either side, columns :data:`COMPARE_COLUMNS`.
    """
    candidate, baseline = _with_group(candidate), _with_group(baseline)
    if metric is None:
        metric = metrics(pd.concat([candidate, baseline], ignore_index=True), "test")
    sides: list[dict[str, np.ndarray]] = []
    for name, side, optimizer in (("candidate", candidate, candidate_optimizer),
                                  ("baseline", baseline, baseline_optimizer)):
        keep = side["selected"].to_numpy(dtype=bool, copy=True)
        if optimizer is not None:
            keep &= (side["optimizer"] == optimizer).to_numpy()
        side = side[keep].reset_index(drop=True)
        solvers = side[GROUP].drop_duplicates().groupby("problem").size()
        several = solvers[solvers > 1]
        if len(several):
            raise ValueError(f"the {name} has several solvers on {', '.join(several.index)}; "
                             f"choose one with {name}_optimizer= or filter by budget and "
                             f"schedule")
        values, _ = _metric_arrays(side, metric)
        sides.append({str(p): v.to_numpy()
                      for p, v in pd.Series(values).groupby(side["problem"].to_numpy())})
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, (1 + level) / 2]
    rows = []
    for problem in sorted(set(sides[0]) | set(sides[1])):
        m = metric.get(problem, Metric("test", "loss"))
        a, b = (side.get(problem, np.array([])) for side in sides)
        missing = [int(np.isnan(x).sum()) for x in (a, b)]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        row = {"problem": problem, "metric": m.label, "candidate": np.nan, "baseline": np.nan,
               "improvement": np.nan, "low": np.nan, "high": np.nan, "n_candidate": len(a),
               "n_baseline": len(b), "verdict": "missing", "missing_candidate": missing[0],
               "missing_baseline": missing[1]}
        if len(a):
            row["candidate"] = a.mean()
        if len(b):
            row["baseline"] = b.mean()
        if len(a) and len(b):
            boot_a = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(axis=1)
            boot_b = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(axis=1)
            low, high = np.quantile(m.sign * (boot_a - boot_b), q)
            verdict = "better" if low > 0 else "worse" if high < 0 else "indistinguishable"
            row.update(improvement=m.sign * (a.mean() - b.mean()), low=low, high=high,
                       verdict=verdict)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)
