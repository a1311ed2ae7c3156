"""The report figures of ``obsbench.plots``, on small synthetic tables whose content each
test computes itself (seed means with numpy, ranks, profile steps)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from obsbench.plots import (
    MEAN_RANK,
    NO_DATA,
    STYLE,
    budget_plot,
    learning_curves,
    profile_plot,
    published_plot,
    ranking_heatmap,
    sensitivity_plot,
    solver_styles,
)


@dataclass(frozen=True)
class Metric:
    """Stands in for ``obsbench.scoring.Metric`` (the figures need only these)."""

    split: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.split} {self.name}"

    @property
    def higher_is_better(self) -> bool:
        return self.name == "accuracy"


ACCURACY = Metric("test", "accuracy")
EPOCHS = 5
SEEDS = 3
SOLVERS = ["adam", "momentum", "sgd"]


def _lines(ax: Axes) -> dict[str, Line2D]:
    return {str(line.get_label()): line for line in ax.get_lines()}


def _y(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def _x(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=float)


def _bands(ax: Axes) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _band_of(ax: Axes, line: Line2D) -> PolyCollection:
    """The band drawn in the colour of ``line``."""
    colour = mpl.colors.to_rgb(line.get_color())
    found = [b for b in _bands(ax) if np.allclose(b.get_facecolor()[0][:3], colour)]
    assert len(found) == 1
    return found[0]


def _band_limits(band: PolyCollection, x: float) -> tuple[float, float]:
    """Lowest and highest y of the band's outline at ``x``."""
    vertices = band.get_paths()[0].vertices
    ys = vertices[np.isclose(vertices[:, 0], x), 1]
    assert ys.size
    return float(ys.min()), float(ys.max())


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    return buffer.getvalue()


# ----------------------------------------------------------------------- synthetic tables


def _runs_and_curves(solvers: list[str] = SOLVERS, seeds: int = SEEDS
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Selected runs of problem "p" (``seeds`` per solver), an unselected run with wild
    values, a run of problem "q", curves of two splits and two metrics."""
    rng = np.random.default_rng(1)
    runs, curves = [], []

    def add(run_id: str, problem: str, optimizer: str, seed: int, selected: bool,
            scale: float = 1.0) -> None:
        runs.append({"run_id": run_id, "problem": problem, "optimizer": optimizer,
                     "budget": None, "schedule": "constant", "seed": seed, "trial": 0,
                     "selected": selected})
        for split in ("test", "valid"):
            for metric in ("accuracy", "loss"):
                values = scale * rng.uniform(0, 1, EPOCHS + 1)
                curves.append(pd.DataFrame({"run_id": run_id, "epoch": range(EPOCHS + 1),
                                            "split": split, "metric": metric,
                                            "value": values}))

    for optimizer in solvers:
        for seed in range(seeds):
            add(f"{optimizer}-{seed}", "p", optimizer, seed, True)
        add(f"{optimizer}-tuning", "p", optimizer, 99, False, scale=1e6)
        add(f"{optimizer}-q", "q", optimizer, 0, True, scale=1e6)
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


def _seed_stats(runs: pd.DataFrame, curves: pd.DataFrame, optimizer: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over the selected seeds of problem "p" per epoch (finite only)."""
    ids = runs.loc[(runs.problem == "p") & runs.selected & (runs.optimizer == optimizer),
                   "run_id"]
    chosen = curves[curves.run_id.isin(ids) & (curves.split == "test")
                    & (curves.metric == "accuracy")]
    table = chosen.pivot(index="epoch", columns="run_id", values="value").to_numpy()
    table = np.where(np.isfinite(table), table, np.nan)
    return np.nanmean(table, axis=1), np.nanmin(table, axis=1), np.nanmax(table, axis=1)


def _sensitivity_table() -> pd.DataFrame:
    rows = []
    for index, optimizer in enumerate(SOLVERS):
        for trial, lr in enumerate([1e-1, 1e-3, 1e-2]):  # not sorted by value
            mean = 0.5 + 0.1 * index + 0.01 * trial
            rows.append({"problem": "p", "optimizer": optimizer, "budget": None,
                         "schedule": "constant", "trial": trial, "value": lr, "mean": mean,
                         "std": 0.02, "n": 3, "relative": mean / 0.9,
                         "selected": trial == 1})
    rows.append({**rows[0], "problem": "q", "value": 5.0, "mean": 100.0})
    return pd.DataFrame(rows)


def _profile_table() -> pd.DataFrame:
    """Exact step functions over tau in [1, 4]; "slow" never reaches the target."""
    return pd.DataFrame({
        "solver": ["fast"] * 3 + ["mid"] * 4 + ["slow"] * 2,
        "tau": [1.0, 2.5, 4.0, 1.0, 1.5, 3.0, 4.0, 1.0, 4.0],
        "rho": [0.5, 1.0, 1.0, 0.25, 0.5, 0.75, 0.75, 0.0, 0.0]})


def _budget_table() -> pd.DataFrame:
    rows = []
    for index, optimizer in enumerate(SOLVERS):
        for k in range(1, 6):
            expected = 0.5 + 0.05 * index + 0.02 * k
            rows.append({"problem": "p", "optimizer": optimizer, "budget": "large_budget",
                         "schedule": "constant", "k": k, "expected": expected,
                         "low": expected - 0.01 * k, "high": expected + 0.02})
    return pd.DataFrame(rows)


def _ranks() -> pd.DataFrame:
    ranks = pd.DataFrame({"p": [1.0, 2.5, 2.5], "q": [2.0, 1.0, np.nan]},
                         index=["adam", "sgd", "momentum"])
    ranks[MEAN_RANK] = ranks.mean(axis=1)
    return ranks


def _published() -> pd.DataFrame:
    return pd.DataFrame({
        "problem": ["p", "p", "q", "q", "r"],
        "optimizer": ["sgd", "adam", "adam", "momentum", "adam"],
        "published_mean": [0.8, 0.9, 0.7, np.nan, np.nan],
        "published_std": [0.01, 0.02, np.nan, np.nan, np.nan],
        "reproduced_mean": [0.78, 0.91, 0.72, 0.69, np.inf],
        "reproduced_std": [0.03, 0.01, 0.02, 0.04, np.nan]})


FIGURES: dict[str, Callable[[], Figure]] = {
    "learning_curves": lambda: learning_curves(*reversed(_runs_and_curves()), problem="p",
                                               metric=ACCURACY),
    "sensitivity_plot": lambda: sensitivity_plot(_sensitivity_table(), problem="p"),
    "profile_plot": lambda: profile_plot(_profile_table()),
    "budget_plot": lambda: budget_plot(_budget_table(), problem="p", metric=ACCURACY),
    "ranking_heatmap": lambda: ranking_heatmap(_ranks()),
    "published_plot": lambda: published_plot(_published()),
}


# ----------------------------------------------------------------------- learning curves


def test_learning_curves_are_the_seed_means_with_a_min_max_band() -> None:
    runs, curves = _runs_and_curves()
    # a diverged seed: its value at epoch 3 is not finite and drops out of that epoch
    broken = (curves.run_id == "sgd-0") & (curves.epoch == 3) & (curves.split == "test")
    curves.loc[broken, "value"] = np.inf
    fig = learning_curves(curves, runs, problem="p", metric=ACCURACY)
    ax = fig.axes[0]
    lines = _lines(ax)
    assert sorted(lines) == SOLVERS
    assert len(_bands(ax)) == len(SOLVERS)
    epochs = np.arange(EPOCHS + 1)
    for optimizer, line in lines.items():
        mean, low, high = _seed_stats(runs, curves, optimizer)
        np.testing.assert_array_equal(_x(line), epochs)
        np.testing.assert_allclose(_y(line), mean)
        band = _band_of(ax, line)
        for epoch in epochs:
            assert _band_limits(band, epoch) == pytest.approx((low[epoch], high[epoch]))
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "test accuracy"
    assert ax.get_title() == "p"


def test_learning_curves_draw_one_line_per_solver_whatever_the_number_of_runs() -> None:
    runs, curves = _runs_and_curves(seeds=40)
    ax = learning_curves(curves, runs, problem="p", metric=ACCURACY).axes[0]
    assert len(ax.get_lines()) == len(SOLVERS)
    assert len(ax.collections) == len(SOLVERS)


def test_solvers_with_several_budgets_are_told_apart() -> None:
    runs, curves = _runs_and_curves()
    runs.loc[runs.optimizer == "adam", "budget"] = np.where(
        runs.loc[runs.optimizer == "adam", "seed"] == 0, "oneshot", "large_budget")
    lines = _lines(learning_curves(curves, runs, problem="p", metric=ACCURACY).axes[0])
    assert sorted(lines) == ["adam (large_budget, constant)", "adam (oneshot, constant)",
                             "momentum", "sgd"]


def test_twenty_solvers_differ_in_line_style_and_marker() -> None:
    solvers = [f"opt{i:02d}" for i in range(20)]
    runs, curves = _runs_and_curves(solvers=solvers, seeds=1)
    fig = learning_curves(curves, runs, problem="p", metric=ACCURACY)
    ax = fig.axes[0]
    pairs = {(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}
    assert len(ax.get_lines()) == 20 and len(pairs) == 20
    # a legend that long goes below the axes, with every solver in it
    assert ax.get_legend() is None and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == solvers


def test_solver_styles_give_28_distinct_grey_scale_pairs_and_are_kept() -> None:
    styles = solver_styles([f"s{i}" for i in range(28)])
    assert len({(s["linestyle"], s["marker"]) for s in styles.values()}) == 28
    runs, curves = _runs_and_curves()
    given = solver_styles(["zeta", "sgd", "adam"])  # as the report would, across figures
    lines = _lines(learning_curves(curves, runs, problem="p", metric=ACCURACY,
                                   styles=given).axes[0])
    for name in ("sgd", "adam"):
        assert lines[name].get_linestyle() == given[name]["linestyle"]
        assert lines[name].get_marker() == given[name]["marker"]
    # momentum has no given style: it gets one that none of the given ones has
    taken = {(s["linestyle"], s["marker"]) for s in given.values()}
    assert (lines["momentum"].get_linestyle(), lines["momentum"].get_marker()) not in taken


def test_losses_spanning_decades_get_a_log_axis() -> None:
    runs, curves = _runs_and_curves()
    loss = Metric("test", "loss")
    curves.loc[curves.metric == "loss", "value"] = 10.0 ** -curves.epoch
    assert learning_curves(curves, runs, problem="p", metric=loss).axes[0].get_yscale() == "log"
    assert learning_curves(curves, runs, problem="p",
                           metric=ACCURACY).axes[0].get_yscale() == "linear"


# ----------------------------------------------------------------------- other figures


def test_sensitivity_plots_each_trial_over_a_log_axis_and_circles_the_selected() -> None:
    table = _sensitivity_table()
    ax = sensitivity_plot(table, problem="p", metric=ACCURACY).axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "final test accuracy"
    lines = _lines(ax)
    assert sorted(lines) == SOLVERS
    for optimizer, line in lines.items():
        rows = table[(table.problem == "p") & (table.optimizer == optimizer)]
        rows = rows.sort_values("value")
        np.testing.assert_allclose(_x(line), rows.value)
        np.testing.assert_allclose(_y(line), rows["mean"])
    circles = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(circles) == 1
    chosen = table[(table.problem == "p") & table.selected]
    np.testing.assert_allclose(circles[0].get_offsets(), chosen[["value", "mean"]].to_numpy())


def test_sensitivity_relative_and_non_positive_values() -> None:
    table = _sensitivity_table()
    ax = sensitivity_plot(table, problem="p", relative=True).axes[0]
    adam = table[(table.problem == "p") & (table.optimizer == "adam")].sort_values("value")
    np.testing.assert_allclose(_y(_lines(ax)["adam"]), adam.relative)
    assert not _bands(ax)
    table.loc[0, "value"] = 0.0  # a momentum of 0 has no place on a log axis
    assert sensitivity_plot(table, problem="p").axes[0].get_xscale() == "linear"


def test_profile_steps_are_the_given_rho() -> None:
    profile = _profile_table()
    ax = profile_plot(profile).axes[0]
    lines = _lines(ax)
    assert sorted(lines) == ["fast", "mid", "slow"]
    for solver, line in lines.items():
        rows = profile[profile.solver == solver]
        assert line.get_drawstyle() == "steps-post"
        np.testing.assert_allclose(_x(line), rows.tau)
        np.testing.assert_allclose(_y(line), rows.rho)
    assert np.all(_y(lines["slow"]) == 0)
    assert ax.get_xlim() == pytest.approx((1.0, 4.0))


def test_profile_leaves_out_infinite_tau_and_extends_the_last_step() -> None:
    profile = pd.concat([_profile_table(),
                         pd.DataFrame({"solver": ["fast", "late"], "tau": [np.inf, 1.0],
                                       "rho": [1.0, 0.25]})], ignore_index=True)
    lines = _lines(profile_plot(profile).axes[0])
    np.testing.assert_allclose(_x(lines["fast"]), [1.0, 2.5, 4.0])
    # "late" has one breakpoint: its step continues to the end of the axis
    np.testing.assert_allclose(_x(lines["late"]), [1.0, 4.0])
    np.testing.assert_allclose(_y(lines["late"]), [0.25, 0.25])


def test_budget_plot_draws_the_expectation_and_its_band() -> None:
    table = _budget_table()
    ax = budget_plot(table, problem="p", metric=ACCURACY).axes[0]
    assert ax.get_ylabel() == "expected test accuracy"
    lines = _lines(ax)
    assert sorted(lines) == SOLVERS
    for optimizer, line in lines.items():
        rows = table[table.optimizer == optimizer]
        np.testing.assert_allclose(_x(line), rows.k)
        np.testing.assert_allclose(_y(line), rows.expected)
        band = _band_of(ax, line)
        for row in rows.itertuples():
            assert _band_limits(band, float(row.k)) == pytest.approx((row.low, row.high))


def test_heatmap_writes_each_rank_in_its_cell() -> None:
    ranks = _ranks()
    ax = ranking_heatmap(ranks).axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    expected = {(i, j): rank for (i, j), rank in np.ndenumerate(ranks.to_numpy())
                if math.isfinite(rank)}
    assert set(cells) == set(expected)  # the missing rank has a blank cell
    for cell, rank in expected.items():
        assert float(cells[cell]) == pytest.approx(rank, abs=0.05 + 1e-9)  # one decimal
    assert [t.get_text() for t in ax.get_yticklabels()] == list(ranks.index)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["p", "q", MEAN_RANK]
    assert ax.get_images()[0].get_array().shape == ranks.shape


def test_published_plot_has_a_panel_per_problem_with_both_results() -> None:
    table = _published()
    fig = published_plot(table)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert sorted(panels) == ["p", "q", "r"]
    optimizers = ["adam", "momentum", "sgd"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == optimizers
    p = panels["p"]
    bars = [c for c in p.containers if isinstance(c, ErrorbarContainer)]
    assert [b.get_label() for b in bars] == ["published", "reproduced"]
    published, reproduced = (np.asarray(b.lines[0].get_xdata(), dtype=float) for b in bars)
    np.testing.assert_allclose(published, [0.8, 0.9])  # sgd, adam in the table's order
    np.testing.assert_allclose(reproduced, [0.78, 0.91])
    published_y = np.asarray(bars[0].lines[0].get_ydata(), dtype=float)
    reproduced_y = np.asarray(bars[1].lines[0].get_ydata(), dtype=float)
    # side by side: the same optimizer row, the published point above the reproduced
    np.testing.assert_allclose(np.round(published_y), [2, 0])
    assert np.all(published_y < reproduced_y)
    # "r" has no finite value: its panel says so instead of drawing
    assert [t.get_text() for t in panels["r"].texts] == [NO_DATA]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["published", "reproduced"]


# ----------------------------------------------------------------------- every figure


def _nan(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return table.assign(**{c: np.nan for c in columns})


EMPTY: dict[str, Callable[[], Figure]] = {
    "learning_curves/empty": lambda: learning_curves(pd.DataFrame(), pd.DataFrame(),
                                                     problem="p", metric=ACCURACY),
    "learning_curves/nan": lambda: learning_curves(
        _nan(_runs_and_curves()[1], ["value"]), _runs_and_curves()[0], problem="p",
        metric=ACCURACY),
    "learning_curves/other_problem": lambda: learning_curves(
        _runs_and_curves()[1], _runs_and_curves()[0], problem="nope", metric=ACCURACY),
    "sensitivity_plot/empty": lambda: sensitivity_plot(pd.DataFrame(), problem="p"),
    "sensitivity_plot/nan": lambda: sensitivity_plot(
        _nan(_sensitivity_table(), ["mean"]), problem="p"),
    "profile_plot/empty": lambda: profile_plot(pd.DataFrame(columns=["solver", "tau", "rho"])),
    "profile_plot/inf": lambda: profile_plot(_profile_table().assign(tau=np.inf)),
    "budget_plot/empty": lambda: budget_plot(pd.DataFrame(), problem="p"),
    "budget_plot/nan": lambda: budget_plot(_nan(_budget_table(), ["expected"]), problem="p"),
    "ranking_heatmap/empty": lambda: ranking_heatmap(pd.DataFrame()),
    "ranking_heatmap/nan": lambda: ranking_heatmap(_ranks() * np.nan),
    "published_plot/empty": lambda: published_plot(pd.DataFrame()),
    "published_plot/nan": lambda: published_plot(
        _nan(_published(), ["published_mean", "reproduced_mean"])),
}


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_nothing_to_draw_gives_a_message(case: str) -> None:
    fig = EMPTY[case]()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert not ax.get_lines() and not ax.collections and not ax.images
    (text,) = ax.texts
    assert text.get_text().startswith(NO_DATA)
    assert "<svg" in _svg(fig)


def test_a_table_with_rows_but_without_the_columns_is_an_error() -> None:
    with pytest.raises(ValueError, match="rho"):
        profile_plot(pd.DataFrame({"solver": ["a"], "tau": [1.0]}))


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figures_save_as_svg_and_leave_the_global_style_alone(name: str) -> None:
    before = dict(mpl.rcParams)
    fig = FIGURES[name]()
    assert dict(mpl.rcParams) == before
    assert isinstance(fig, Figure) and fig.axes
    svg = _svg(fig)
    assert svg.startswith("<?xml") and "</svg>" in svg
    # the paper style holds after the context: tick labels made at the first draw are
    # 7 pt as in the bundle, not matplotlib's 10 pt
    tick = fig.axes[0].xaxis.get_major_ticks()[0]
    assert tick.label1.get_fontsize() == pytest.approx(STYLE["xtick.labelsize"])
    assert fig.get_figwidth() <= 6.3  # an A4 text column (21 cm less 2 x 2.5 cm margins)
