"""Figures: a Cockpit-style dashboard of one run record, and the report's figures.

Every function returns a plain :class:`matplotlib.figure.Figure`, independent of pyplot and
of the backend, and never saves it.

:func:`dashboard` draws the layout of Cockpit's ``CockpitPlotter`` (Schneider, Dangel &
Hennig, "Cockpit: A Practical Debugging Tool for the Training of Deep Neural Networks",
NeurIPS 2021) from a :class:`~obsbench.results.RunRecord`:

* STEP SIZE: the distribution of ``alpha`` (the last 10% of tracked steps highlighted),
  ``distance`` and ``update_size`` (twin axes), ``grad_norm``;
* GRADIENTS: the gradient tests (``norm_test``, ``inner_test``, ``ortho_test``), the 1-D
  gradient element histogram (``grad_hist_1d``) and the 2-D gradient/parameter histogram
  (``grad_hist_2d``: first axis gradient element, second parameter value) of the last step
  that tracked them;
* CURVATURE: ``hess_max_ev``, ``hess_trace``, ``tic_trace`` and ``tic_diag``;
* below: the learning rate of the spec's schedule per epoch, and the performance (every
  minibatch loss with its exponential moving average, and train/valid accuracy per epoch,
  or loss for problems without accuracy).

Instrument panels plot the network-wide values (``layer == "total"``). A panel whose
quantities the record lacks says "not tracked". The dashboard is grey-scale throughout, so
it reads in print.

The report's figures take the tables of :mod:`obsbench.scoring` (and the ``runs`` and
``curves`` tables of :mod:`obsbench.results`): :func:`learning_curves`,
:func:`sensitivity_plot`, :func:`profile_plot`, :func:`budget_plot`,
:func:`ranking_heatmap` and :func:`published_plot`. They are styled for papers with
tueplots' NeurIPS 2024 bundle (without LaTeX) at the NeurIPS text width, 5.5 in, which fits
a column of an A4 page; the style is applied while a figure is built and never changes
matplotlib's global settings. Every series has its own line style and marker besides its
colour (:func:`solver_styles`), so the figures read in grey scale. They draw a bounded
number of artists whatever the number of runs (one line and one band per solver), and an
empty or all-NaN table gives a figure that says so instead of an error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, Protocol, cast

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType
from tueplots import bundles

from obsbench.instruments import TOTAL
from obsbench.results import Histogram, InstrumentValue, RunRecord

NOT_TRACKED = "not tracked"
"""What a panel says when the record has none of its quantities."""
LAST_FRACTION = 0.1
"""Fraction of the tracked steps that the alpha panel highlights (the last ones)."""
EMA_DECAY = 0.9
"""Decay of the exponential moving average over the minibatch losses."""
MARKERS_UP_TO = 40
"""Lines with at most this many points also mark each point."""

BLACK, DARK, GREY, LIGHT = "0.0", "0.3", "0.55", "0.8"
STYLES: list[dict[str, Any]] = [
    {"color": BLACK, "linestyle": "-"},
    {"color": DARK, "linestyle": "--"},
    {"color": GREY, "linestyle": ":"},
]
"""Line styles of the series that share a panel, told apart without colour."""

TITLES = {
    "alpha": "Alpha distribution", "distance": "Distance and update size",
    "grad_norm": "Gradient norm", "tests": "Gradient tests",
    "hist_1d": "Gradient element histogram", "hist_2d": "Gradient/parameter histogram",
    "hess_max_ev": "Hessian max eigenvalue", "hess_trace": "Hessian trace", "tic": "TIC",
    "hyperparameters": "Hyperparameters", "performance": "Performance",
}
"""Panel titles, by panel."""

Tracks = dict[str, list[InstrumentValue]]
"""Quantity -> its network-wide values, by step."""


def dashboard(record: RunRecord) -> Figure:
    """Cockpit's dashboard of ``record``: nine instrument panels in the columns STEP SIZE,
    GRADIENTS and CURVATURE, and the learning rate and performance below them."""
    tracks: Tracks = {}
    for value in sorted(record.instruments, key=lambda v: v.step):
        if value.layer == TOTAL:
            tracks.setdefault(value.quantity, []).append(value)

    fig = Figure(figsize=(15, 12), layout="constrained")
    spec = record.spec
    status = "" if record.status == "ok" else f" [{record.status}]"
    fig.suptitle(f"{record.run_id}: {_named(spec.problem_id, spec.problem.kind)} with "
                 f"{_named(spec.optimizer_id, spec.optimizer.kind)}, seed {spec.seed}{status}",
                 fontsize="x-large")
    top, bottom = fig.subfigures(2, 1, squeeze=False, height_ratios=[3, 1.15])[:, 0]
    columns = top.subfigures(1, 3, squeeze=False)[0]
    step_size, gradients, curvature = (_column(c, name) for c, name in
                                       zip(columns, ("STEP SIZE", "GRADIENTS", "CURVATURE"),
                                           strict=True))
    _alpha(step_size[0], tracks)
    _distances(step_size[1], tracks)
    _lines(step_size[2], TITLES["grad_norm"], tracks, {"grad_norm": "gradient norm"})
    _lines(gradients[0], TITLES["tests"], tracks, {"norm_test": "norm test",
                                                   "inner_test": "inner product test",
                                                   "ortho_test": "orthogonality test"})
    _histogram_1d(gradients[1], tracks)
    _histogram_2d(gradients[2], tracks)
    _lines(curvature[0], TITLES["hess_max_ev"], tracks, {"hess_max_ev": "max eigenvalue"},
           log=True)
    _lines(curvature[1], TITLES["hess_trace"], tracks, {"hess_trace": "trace"})
    _lines(curvature[2], TITLES["tic"], tracks, {"tic_trace": "TIC (trace)",
                                                 "tic_diag": "TIC (diagonal)"})
    hyperparameters, performance = bottom.subplots(1, 2, width_ratios=[1, 2])
    _learning_rate(hyperparameters, record)
    _performance(performance, record)
    return fig


# ----------------------------------------------------------------------- layout helpers


def _named(spec_id: str, kind: str) -> str:
    """A spec's id, and its kind where that says more."""
    return spec_id if spec_id == kind else f"{spec_id} ({kind})"


def _column(sub: SubFigure, heading: str) -> list[Axes]:
    sub.suptitle(heading, fontweight="bold")
    return list(sub.subplots(3, 1))


def _message(ax: Axes, title: str, text: str = NOT_TRACKED) -> None:
    """An empty panel that says ``text`` in its centre."""
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=GREY)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot(ax: Axes, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
          label: str, style: dict[str, Any]) -> None:
    marker = "." if len(x) <= MARKERS_UP_TO else None
    ax.plot(x, _finite(y), label=label, marker=marker, linewidth=1.2, **style)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` as floats, non-finite ones as NaN (a gap in a line)."""
    array = np.asarray(values, dtype=float)
    return np.where(np.isfinite(array), array, np.nan)


def _steps(track: list[InstrumentValue]) -> tuple[list[int], list[float]]:
    return [v.step for v in track], [v.value for v in track]


# ----------------------------------------------------------------------- instrument panels


def _lines(ax: Axes, title: str, tracks: Tracks, labels: dict[str, str],
           log: bool = False) -> None:
    """Each quantity in ``labels`` (quantity -> legend label) over steps."""
    present = [q for q in labels if q in tracks]
    if not present:
        _message(ax, title)
        return
    ax.set_title(title)
    values: list[float] = []
    for quantity, style in zip(present, STYLES, strict=False):
        steps, ys = _steps(tracks[quantity])
        _plot(ax, steps, ys, labels[quantity], style)
        values += ys
    if log and any(math.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    if len(present) > 1:
        ax.legend(fontsize="small")
    else:
        ax.set_ylabel(labels[present[0]])


def _alpha(ax: Axes, tracks: Tracks) -> None:
    """Cockpit's alpha gauge: the distribution of alpha over all tracked steps, the last
    10% highlighted, with the means in the legend."""
    title = TITLES["alpha"]
    if "alpha" not in tracks:
        _message(ax, title)
        return
    _, values = _steps(tracks["alpha"])
    last_count = max(1, math.ceil(LAST_FRACTION * len(values)))
    every = np.asarray([v for v in values if math.isfinite(v)])
    last = np.asarray([v for v in values[-last_count:] if math.isfinite(v)])
    if not every.size:
        _message(ax, title, "no finite values")
        return
    ax.set_title(title)
    edges = np.histogram_bin_edges(every, bins=min(30, max(5, every.size // 2))).tolist()
    ax.hist(every, bins=edges, color=LIGHT, edgecolor=GREY,
            label=f"all steps (mean {every.mean():.3g})")
    if last.size:
        ax.hist(last, bins=edges, color=DARK,
                label=f"last {LAST_FRACTION:.0%} (mean {last.mean():.3g})")
    ax.axvline(0.0, color=BLACK, linestyle=":", linewidth=1)
    ax.set_xlabel("alpha (0: step to the minimum of the local parabola)")
    ax.set_ylabel("steps")
    ax.legend(fontsize="small")


def _distances(ax: Axes, tracks: Tracks) -> None:
    """Distance from the initial parameters and update size, on twin y-axes."""
    title = TITLES["distance"]
    present = [q for q in ("distance", "update_size") if q in tracks]
    if not present:
        _message(ax, title)
        return
    ax.set_title(title)
    ax.set_xlabel("step")
    labels = {"distance": "distance from init", "update_size": "update size"}
    target = ax
    for index, (quantity, style) in enumerate(zip(present, STYLES, strict=False)):
        if index:
            target = ax.twinx()
        steps, values = _steps(tracks[quantity])
        _plot(target, steps, values, labels[quantity], style)
        target.set_ylabel(labels[quantity])
    if len(present) > 1:
        handles = [line for a in (ax, target) for line in a.get_lines()]
        target.legend(handles, [str(h.get_label()) for h in handles], fontsize="small")


def _last_histogram(tracks: Tracks, quantity: str, ndim: int
                    ) -> tuple[int, Histogram, np.ndarray] | str:
    """``(step, histogram, counts shaped by its bins)`` of the last step that tracked
    ``quantity`` with a histogram, or why there is none."""
    found = [v for v in tracks.get(quantity, []) if v.hist is not None]
    if not found:
        return NOT_TRACKED
    step, hist = found[-1].step, found[-1].hist
    assert hist is not None
    if len(hist.bins) != ndim or len(hist.limits) != ndim or math.prod(hist.bins) != len(
            hist.counts):
        return f"not a {ndim}-D histogram"
    counts = np.asarray(hist.counts, dtype=float).reshape(hist.bins)
    if not counts.sum():
        return "empty histogram"
    return step, hist, counts


def _histogram_1d(ax: Axes, tracks: Tracks) -> None:
    """Cockpit's gradient element histogram of the last tracked step, log y-axis."""
    title = TITLES["hist_1d"]
    found = _last_histogram(tracks, "grad_hist_1d", 1)
    if isinstance(found, str):
        _message(ax, title, found)
        return
    step, hist, counts = found
    (low, high), = hist.limits
    edges = np.linspace(low, high, hist.bins[0] + 1)
    ax.set_title(title)
    ax.stairs(counts, edges, fill=True, color=GREY, edgecolor=BLACK)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.set_xlabel(f"gradient element (step {step})")
    ax.set_ylabel("count")


def _histogram_2d(ax: Axes, tracks: Tracks) -> None:
    """Cockpit's 2-D histogram of gradient elements (x) and parameter values (y) of the
    last tracked step, counts on a log scale; empty bins blank.

    The record's histogram has the gradient on its first axis and the parameter on its
    second, as Cockpit's ``GradHist2d`` and obsbench's ``grad_hist_2d`` instrument.
    """
    title = TITLES["hist_2d"]
    found = _last_histogram(tracks, "grad_hist_2d", 2)
    if isinstance(found, str):
        _message(ax, title, found)
        return
    step, hist, counts = found
    (g_low, g_high), (p_low, p_high) = hist.limits
    ax.set_title(title)
    # imshow puts an array's rows on the y-axis: rows must be the parameter bins
    image = ax.imshow(np.ma.masked_equal(counts.T, 0), origin="lower", aspect="auto",
                      extent=(g_low, g_high, p_low, p_high), cmap="Greys",
                      norm=LogNorm(vmin=1, vmax=max(1.0, float(counts.max()))),
                      interpolation="nearest")
    ax.set_xlabel(f"gradient element (step {step})")
    ax.set_ylabel("parameter value")
    parent = ax.get_figure()
    assert parent is not None
    parent.colorbar(image, ax=ax, label="count")


# ----------------------------------------------------------------------- bottom row


def _steps_per_epoch(record: RunRecord) -> float | None:
    """Training steps per epoch; known only for runs that finished."""
    epochs = record.spec.problem.sizes(record.spec.tiny)[1]
    if record.status != "ok" or not record.timings.steps:
        return None
    return record.timings.steps / epochs


def _learning_rate(ax: Axes, record: RunRecord) -> None:
    """The learning rate the spec's schedule gives, over epochs."""
    title = TITLES["hyperparameters"]
    optimizer = record.spec.optimizer
    schedule = optimizer.schedule
    epochs = record.spec.problem.sizes(record.spec.tiny)[1]
    if schedule.unit == "step":
        per_epoch = _steps_per_epoch(record)
        if per_epoch is None:
            _message(ax, title, "per-step schedule of an unfinished run")
            return
        total = round(per_epoch * epochs)
        x = np.arange(total + 1) / per_epoch
    else:
        total = epochs
        x = np.arange(total + 1, dtype=float)
    lrs = [optimizer.lr * schedule.factor(t, total) for t in range(total)]
    ax.set_title(title)
    ax.plot(x, [*lrs, lrs[-1]], drawstyle="steps-post", color=BLACK,
            label=f"learning rate ({schedule.kind}, per {schedule.unit})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")


def _ema(values: Sequence[float], decay: float = EMA_DECAY) -> np.ndarray:
    """Bias-corrected exponential moving average; non-finite values are left out of it and
    are gaps (NaN) in it."""
    out = np.full(len(values), np.nan)
    mean, weight = 0.0, 0.0
    for i, value in enumerate(values):
        if math.isfinite(value):
            mean = decay * mean + (1 - decay) * value
            weight = decay * weight + (1 - decay)
            out[i] = mean / weight
    return out


def _performance(ax: Axes, record: RunRecord) -> None:
    """Every minibatch loss with its moving average, and the train/valid accuracy (else
    loss) per epoch, placed at the step that ends the epoch."""
    title = TITLES["performance"]
    losses = record.minibatch_losses
    metric = "accuracy" if any("accuracy" in record.curves.get(s, {})
                               for s in ("train", "valid")) else "loss"
    per_epoch = _steps_per_epoch(record)
    curves = {split: record.curves.get(split, {}).get(metric, [])
              for split in ("train", "valid")}
    if not losses and not any(curves.values()):
        _message(ax, title)
        return
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses:
        steps = np.arange(len(losses))
        ax.plot(steps, _finite(losses), color=GREY, linewidth=0.6, label="minibatch loss")
        ax.plot(steps, _ema(losses), color=BLACK, linewidth=1.5,
                label=f"moving average ({EMA_DECAY:g})")
    target = ax
    if per_epoch is not None and any(curves.values()):
        if metric == "accuracy":
            target = ax.twinx()
            target.set_ylabel("accuracy")
        for (split, values), style in zip(curves.items(), STYLES[1:], strict=False):
            if values:
                epochs = np.arange(len(values)) * per_epoch
                target.plot(epochs, _finite(values), marker="o", markersize=4,
                            label=f"{split} {metric} (per epoch)", **style)
    elif any(curves.values()):
        ax.text(0.99, 0.98, f"per-epoch {metric} not shown: the run did not finish",
                transform=ax.transAxes, ha="right", va="top", color=GREY, fontsize="small")
    handles = [line for a in dict.fromkeys((ax, target)) for line in a.get_lines()]
    target.legend(handles, [str(h.get_label()) for h in handles], fontsize="small")  # on top


# ----------------------------------------------------------------------- report figures

P = ParamSpec("P")


class MetricLike(Protocol):
    """What the figures need of a metric (:class:`obsbench.scoring.Metric`)."""

    @property
    def split(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def higher_is_better(self) -> bool: ...


SeriesStyle = dict[str, Any]
"""Keyword arguments of ``Axes.plot`` that draw one series: colour, line style, marker."""

_BUNDLE = bundles.neurips2024(usetex=False)
STYLE = cast(dict[RcKeyType, Any], {
    **_BUNDLE,
    # tueplots asks for Times or Helvetica; where neither is installed the figures fall
    # back to matplotlib's own fonts instead of warning at every text
    "font.serif": [*_BUNDLE["font.serif"], "DejaVu Serif"],
    "font.sans-serif": [*_BUNDLE["font.sans-serif"], "DejaVu Sans"],
})
"""Settings the report figures are built under: tueplots' NeurIPS 2024 bundle without
LaTeX (Times 9 pt text, 7 pt ticks and legends)."""
WIDTH = float(_BUNDLE["figure.figsize"][0])
"""Figure width in inches: the NeurIPS text width, which fits a column of an A4 page."""
LINE_HEIGHT = 2.8
"""Height in inches of the axes of a single-panel figure, without an outside legend."""
EMPTY_HEIGHT = 1.2
"""Height in inches of a figure that only says that there is nothing to draw."""

SOLVER = ["optimizer", "budget", "schedule"]
"""Columns that tell solvers apart within a problem (scoring's ``GROUP`` less ``problem``)."""
MEAN_RANK = "mean rank"
"""The column of :func:`obsbench.scoring.ranking` that averages the ranks."""
NO_DATA = "no data"
"""How the message of a figure without anything to draw begins."""

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
"""Series ``i`` gets line style ``i % 4`` and marker ``i % 7``: as 4 and 7 are coprime,
the first 28 series all differ in the pair, so they are told apart without colour."""
COLOURS = [str(mpl.colors.to_hex(mpl.colormaps["tab10"](i))) for i in range(10)]
MARKERS_PER_LINE = 10
"""About this many markers per line; more would hide the line styles."""
LEGEND_INSIDE = 6
"""Up to this many entries a legend sits inside the axes; more go below them."""
LEGEND_ROW = 0.16
"""Height in inches of a legend row (7 pt text)."""
BAND_ALPHA = 0.15
"""Opacity of the bands around lines (seed spread, bootstrap interval)."""
LOG_SPREAD = 100.0
"""Losses that span more than this factor are drawn on a log axis."""
HEAT_MAP = "viridis_r"
"""Colour map of the rank heat map: rank 1 light, so the lightness alone orders ranks."""
PANELS_PER_ROW = 4


def solver_styles(solvers: Sequence[str]) -> dict[str, SeriesStyle]:
    """Colour, line style and marker of each solver, in the order given.

    Pass the result to several figures (their ``styles`` argument) to give a solver the
    same look in each; without it, a figure styles its own solvers in alphabetical order.
    """
    return {solver: _series_style(index) for index, solver in enumerate(solvers)}


def _series_style(index: int) -> SeriesStyle:
    return {"color": COLOURS[index % len(COLOURS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "marker": MARKERS[index % len(MARKERS)]}


def _styles_for(solvers: Sequence[str], styles: Mapping[str, SeriesStyle] | None
                ) -> dict[str, SeriesStyle]:
    """The given styles of ``solvers``; solvers without one continue the sequence after
    the given styles, so that they do not repeat one."""
    given = dict(styles or {})
    missing = [s for s in solvers if s not in given]
    extra = {s: _series_style(len(given) + i) for i, s in enumerate(missing)}
    return {s: dict(given.get(s) or extra[s]) for s in solvers}


def _styled(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build the figure under :data:`STYLE`; matplotlib's global settings stay as they were."""

    @functools.wraps(draw)
    def styled(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with mpl.rc_context(STYLE):
            fig = draw(*args, **kwargs)
            # tick labels read the settings when they are made, and later ticks copy the
            # first; matplotlib 3.11 makes the first with the axes, but it may make ticks
            # lazily (at the first draw, outside the context): make sure they exist now
            for ax in fig.axes:
                for axis in (ax.xaxis, ax.yaxis):
                    axis.get_major_ticks(1)
                    axis.get_minor_ticks(1)
        return fig

    return styled


def _empty(title: str, reason: str) -> Figure:
    """A figure that says why it has nothing to draw."""
    fig = Figure(figsize=(WIDTH, EMPTY_HEIGHT), layout="constrained")
    _message(fig.add_subplot(), title, f"{NO_DATA}: {reason}")
    return fig


def _usable(frame: pd.DataFrame | None, columns: Sequence[str]) -> bool:
    """Whether ``frame`` has rows; a table with rows must have ``columns``."""
    if frame is None or frame.empty:
        return False
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing} (has {list(frame.columns)})")
    return True


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` as floats, infinities as NaN (nothing to draw)."""
    converted = {c: pd.to_numeric(frame[c], errors="coerce").astype(float)
                 .replace([np.inf, -np.inf], np.nan) for c in columns}
    return frame.assign(**converted)


def _with_solver(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``solver`` label: the optimizer, or ``optimizer (budget,
    schedule)`` where the table has several budget/schedule combinations of that optimizer
    (the labels of :func:`obsbench.scoring.study_times`; missing parts are left out)."""
    def text(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series("", index=frame.index, dtype="string")
        return frame[column].astype("string").fillna("")

    optimizer, budget, schedule = (text(c) for c in SOLVER)
    suffix = (budget + ", " + schedule).where((budget != "") & (schedule != ""),
                                              budget + schedule)
    combinations = suffix.groupby(optimizer).transform("nunique")
    solver = (optimizer + " (" + suffix + ")").where((combinations > 1) & (suffix != ""),
                                                     optimizer)
    return frame.assign(solver=solver.astype(str))


def _legend_columns(labels: Sequence[str]) -> int:
    """Legend columns below a full-width figure: as many as the longest label allows."""
    longest = max((len(label) for label in labels), default=1)
    # 7 pt text is about 0.05 in a character; the handle and padding about 0.45 in
    return max(1, min(4, int(WIDTH // (0.05 * longest + 0.45))))


def _legend_height(labels: Sequence[str]) -> float:
    """Height the legend of ``labels`` adds below the axes (0 where it sits inside)."""
    if len(labels) <= LEGEND_INSIDE:
        return 0.0
    return LEGEND_ROW * math.ceil(len(labels) / _legend_columns(labels)) + 0.1


def _line_figure(labels: Sequence[str]) -> tuple[Figure, Axes]:
    """A one-axes figure with room below for the legend of ``labels``."""
    fig = Figure(figsize=(WIDTH, LINE_HEIGHT + _legend_height(labels)), layout="constrained")
    return fig, fig.add_subplot()


def _legend(fig: Figure, ax: Axes, loc: Literal["best", "lower right"] = "best") -> None:
    """A legend of ``ax``: inside it for a few entries, below it in columns for many."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(labels) <= LEGEND_INSIDE:
        ax.legend(handles, labels, loc=loc)
    else:
        fig.legend(handles, labels, loc="outside lower center",
                   ncols=_legend_columns(labels), frameon=False)


def _series(ax: Axes, x: np.ndarray, y: np.ndarray, label: str, style: SeriesStyle,
            index: int, **kwargs: Any) -> None:
    """One solver's line; markers on about :data:`MARKERS_PER_LINE` points, staggered by
    ``index`` so that the markers of different solvers do not sit on top of each other."""
    every = max(1, math.ceil(len(x) / MARKERS_PER_LINE))
    ax.plot(x, y, label=label, linewidth=1.0, markersize=3.5,
            markevery=(index % every, every), **style, **kwargs)


def _band(ax: Axes, x: np.ndarray, low: np.ndarray, high: np.ndarray,
          style: SeriesStyle) -> None:
    """One filled band per solver (one SVG path), where it has a width."""
    if np.any(high > low):
        ax.fill_between(x, low, high, color=style["color"], alpha=BAND_ALPHA, linewidth=0)


def _log_loss_axis(ax: Axes, values: pd.DataFrame, metric: MetricLike | None) -> None:
    """A log y-axis for positive losses that span more than :data:`LOG_SPREAD`."""
    if metric is None or metric.higher_is_better:
        return
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() > LOG_SPREAD * finite.min():
        ax.set_yscale("log")


@_styled
def learning_curves(curves: pd.DataFrame, runs: pd.DataFrame, *, problem: str,
                    metric: MetricLike,
                    styles: Mapping[str, SeriesStyle] | None = None) -> Figure:
    """Learning curves of the selected runs of ``problem``: per solver the mean over seeds
    of ``metric`` at every epoch, with a band from the lowest to the highest seed.

    At each epoch the mean and the band are over the runs with a finite value there, so a
    run that diverged drops out where its values stop being finite.

    Args:
        curves: the ``curves`` table (``run_id, epoch, split, metric, value``).
        runs: the ``runs`` table; solver labels come from all of it (as in
            :func:`obsbench.scoring.study_times`), the lines from the selected runs of
            ``problem``.
        problem: the problem to draw.
        metric: the split and metric of the curves (:class:`obsbench.scoring.Metric`).
        styles: solver -> style (:func:`solver_styles`); missing solvers get their own.
    """
    title = problem
    if not (_usable(runs, ["run_id", "problem", "optimizer", "selected"])
            and _usable(curves, ["run_id", "epoch", "split", "metric", "value"])):
        return _empty(title, "no runs or no curves")
    pool = _with_solver(runs)
    chosen = pool.loc[(pool["problem"] == problem) & pool["selected"].eq(True),
                      ["run_id", "solver"]]
    values = curves.loc[(curves["split"] == metric.split) & (curves["metric"] == metric.name),
                        ["run_id", "epoch", "value"]]
    joined = _numeric(values.merge(chosen, on="run_id"), ["value"]).dropna(subset="value")
    if joined.empty:
        return _empty(title, f"no finite {metric.label} of selected runs of {problem}")
    stats = joined.groupby(["solver", "epoch"])["value"].agg(["mean", "min", "max"])
    stats = stats.reset_index()
    solvers = sorted(stats["solver"].unique())
    chosen_styles = _styles_for(solvers, styles)
    fig, ax = _line_figure(solvers)
    for index, (solver, group) in enumerate(stats.groupby("solver", sort=True)):
        style = chosen_styles[str(solver)]
        epochs = group["epoch"].to_numpy(dtype=float)
        _series(ax, epochs, group["mean"].to_numpy(), str(solver), style, index)
        _band(ax, epochs, group["min"].to_numpy(), group["max"].to_numpy(), style)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _log_loss_axis(ax, stats[["min", "max"]], metric)
    _legend(fig, ax)
    return fig


@_styled
def sensitivity_plot(table: pd.DataFrame, *, problem: str, hyperparameter: str = "lr",
                     metric: MetricLike | None = None, relative: bool = False,
                     styles: Mapping[str, SeriesStyle] | None = None) -> Figure:
    """Sensitivity to a hyperparameter (DeepOBS): per solver the final performance of
    each tuning trial of ``problem`` over the trial's hyperparameter value, a band of one
    standard deviation over seeds, and the selected setting circled.

    The x-axis is logarithmic where every value is positive (learning rates), else linear.

    Args:
        table: :func:`obsbench.scoring.sensitivity`.
        problem: the problem to draw.
        hyperparameter: the name of the x-axis.
        metric: names the y-axis (the table does not say which metric it holds).
        relative: draw the column ``relative`` (1 = the solver's best trial) instead of
            ``mean``, without bands.
        styles: solver -> style (:func:`solver_styles`); missing solvers get their own.
    """
    title = problem
    column = "relative" if relative else "mean"
    if not _usable(table, ["problem", "optimizer", "value", "mean", "std", "relative",
                           "selected"]):
        return _empty(title, "no trials")
    rows = _numeric(_with_solver(table), ["value", "mean", "std", "relative"])
    rows = rows[(rows["problem"] == problem)].dropna(subset=["value", column])
    if rows.empty:
        return _empty(title, f"no finite {hyperparameter} and performance of {problem}")
    solvers = sorted(rows["solver"].unique())
    chosen_styles = _styles_for(solvers, styles)
    labels = [*solvers, "selected setting"]
    fig, ax = _line_figure(labels)
    for solver, group in rows.groupby("solver", sort=True):
        group = group.sort_values("value", kind="stable")
        style = chosen_styles[str(solver)]
        x, y = group["value"].to_numpy(), group[column].to_numpy()
        # every trial is a measurement, so every one is marked
        ax.plot(x, y, label=str(solver), linewidth=1.0, markersize=3.5, **style)
        if not relative:
            spread = group["std"].to_numpy()
            _band(ax, x, y - spread, y + spread, style)
    selected = rows[rows["selected"].eq(True)]
    if not selected.empty:
        ax.scatter(selected["value"], selected[column], s=45, facecolors="none",
                   edgecolors=BLACK, linewidths=0.8, label="selected setting", zorder=3)
    if (rows["value"] > 0).all():
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(hyperparameter)
    if relative:
        ax.set_ylabel("relative performance (1 = best trial)")
    else:
        ax.set_ylabel(f"final {metric.label}" if metric else "final performance")
        _log_loss_axis(ax, rows[[column]], metric)
    _legend(fig, ax)
    return fig


@_styled
def profile_plot(profile: pd.DataFrame, *,
                 styles: Mapping[str, SeriesStyle] | None = None) -> Figure:
    """Performance profiles (Dolan & Moré, "Benchmarking optimization software with
    performance profiles", Math. Programming 2002): per solver the step function
    ``rho(tau)``, the fraction of problems solved within ``tau`` times the fastest time.

    Each solver's rows are drawn as given (sorted by ``tau``) with ``steps-post``; a
    solver whose steps end before the largest ``tau`` keeps its last value up to it.
    Non-finite ``tau`` or ``rho`` are left out; a solver that never reaches the target is a
    line at 0.

    Args:
        profile: :func:`obsbench.scoring.performance_profile` (``solver, tau, rho``).
        styles: solver -> style (:func:`solver_styles`); missing solvers get their own.
    """
    title = "Performance profile"
    if not _usable(profile, ["solver", "tau", "rho"]):
        return _empty(title, "no profile")
    rows = _numeric(profile, ["tau", "rho"]).dropna(subset=["tau", "rho"])
    if rows.empty:
        return _empty(title, "no finite profile values")
    rows = rows.assign(solver=rows["solver"].astype(str))
    left, right = min(1.0, float(rows["tau"].min())), float(rows["tau"].max())
    solvers = sorted(rows["solver"].unique())
    chosen_styles = _styles_for(solvers, styles)
    fig, ax = _line_figure(solvers)
    for index, (solver, group) in enumerate(rows.groupby("solver", sort=True)):
        group = group.sort_values("tau", kind="stable")
        tau, rho = group["tau"].to_numpy(), group["rho"].to_numpy()
        if tau[-1] < right:  # the step function is constant after its last breakpoint
            tau, rho = np.append(tau, right), np.append(rho, rho[-1])
        _series(ax, tau, rho, str(solver), chosen_styles[str(solver)], index,
                drawstyle="steps-post")
    if right > left:
        ax.set_xlim(left, right)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.set_xlabel(r"performance ratio $\tau$ (time over the fastest time)")
    ax.set_ylabel(r"fraction of problems $\rho(\tau)$")
    _legend(fig, ax, loc="lower right")
    return fig


@_styled
def budget_plot(table: pd.DataFrame, *, problem: str, metric: MetricLike | None = None,
                styles: Mapping[str, SeriesStyle] | None = None) -> Figure:
    """Expected performance under a tuning budget (Crowded Valley; Dodge et al., "Show
    Your Work: Improved Reporting of Experimental Results", EMNLP 2019): per solver the
    expected test performance of the best of ``k`` trials over ``k``, with its bootstrap
    band.

    Args:
        table: :func:`obsbench.scoring.budget_curve` (``k, expected, low, high`` per solver).
        problem: the problem to draw.
        metric: names the y-axis (the table does not say which metric it holds).
        styles: solver -> style (:func:`solver_styles`); missing solvers get their own.
    """
    title = problem
    if not _usable(table, ["problem", "optimizer", "k", "expected", "low", "high"]):
        return _empty(title, "no budget curves")
    rows = _numeric(_with_solver(table), ["k", "expected", "low", "high"])
    rows = rows[rows["problem"] == problem].dropna(subset=["k", "expected"])
    if rows.empty:
        return _empty(title, f"no finite expected performance of {problem}")
    solvers = sorted(rows["solver"].unique())
    chosen_styles = _styles_for(solvers, styles)
    fig, ax = _line_figure(solvers)
    for index, (solver, group) in enumerate(rows.groupby("solver", sort=True)):
        group = group.sort_values("k", kind="stable")
        style = chosen_styles[str(solver)]
        k = group["k"].to_numpy()
        _series(ax, k, group["expected"].to_numpy(), str(solver), style, index)
        _band(ax, k, group["low"].to_numpy(), group["high"].to_numpy(), style)
    ax.set_title(title)
    ax.set_xlabel("tuning budget (trials)")
    ax.set_ylabel(f"expected {metric.label}" if metric else "expected performance")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _log_loss_axis(ax, rows[["expected", "low", "high"]], metric)
    _legend(fig, ax)
    return fig


def _rank_text(rank: float) -> str:
    """A rank as a cell shows it: one decimal at most (ties give halves, thirds)."""
    return f"{round(rank, 1):g}"


@_styled
def ranking_heatmap(ranks: pd.DataFrame) -> Figure:
    """Ranks of the solvers per problem and their mean (Crowded Valley, Figure 4 style):
    a heat map with each rank written in its cell; rows in the table's order.

    Args:
        ranks: :func:`obsbench.scoring.ranking` (index solver, columns problems and
            ``mean rank``). Missing ranks are blank cells.
    """
    title = "Rank per problem (1 = best)"
    if ranks is None or ranks.empty:
        return _empty(title, "no ranks")
    values = ranks.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, copy=True)
    values[~np.isfinite(values)] = np.nan
    if np.isnan(values).all():
        return _empty(title, "no finite ranks")
    count, columns = values.shape
    fig = Figure(figsize=(min(WIDTH, 2.0 + 0.45 * columns), 1.2 + 0.17 * count),
                 layout="constrained")
    ax = fig.add_subplot()
    norm = Normalize(vmin=1.0, vmax=max(float(count), float(np.nanmax(values)), 1.0 + 1e-9))
    cmap = mpl.colormaps[HEAT_MAP].with_extremes(bad=LIGHT)
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto",
              interpolation="nearest")
    for (row, column), rank in np.ndenumerate(values):
        if math.isfinite(rank):
            red, green, blue, _ = cmap(norm(rank))
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5  # luma (ITU-R BT.601)
            ax.text(column, row, _rank_text(rank), ha="center", va="center",
                    fontsize="x-small", color=BLACK if light else "1.0")
    names = [str(c) for c in ranks.columns]
    if MEAN_RANK in names and columns > 1:
        ax.axvline(names.index(MEAN_RANK) - 0.5, color="1.0", linewidth=2)
    ax.set_xticks(range(columns), labels=names, rotation=35, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(count), labels=[str(s) for s in ranks.index])
    ax.tick_params(length=0)
    ax.set_title(title)
    return fig


PUBLISHED_STYLE: SeriesStyle = {"color": BLACK, "marker": "o", "markerfacecolor": "1.0",
                                "linestyle": "none"}
REPRODUCED_STYLE: SeriesStyle = {"color": COLOURS[0], "marker": "s", "linestyle": "none"}
PAIR_OFFSET = 0.18
"""Vertical offset of the published and the reproduced point of one optimizer."""


@_styled
def published_plot(table: pd.DataFrame) -> Figure:
    """Published against reproduced results: a panel per problem, in each per optimizer
    the published and the reproduced mean side by side with error bars of one standard
    deviation. Optimizers are rows shared by all panels, in alphabetical order.

    Args:
        table: columns ``problem, optimizer, published_mean, published_std,
            reproduced_mean, reproduced_std``, and optionally ``metric`` (names the
            x-axis of each panel). Missing values are not drawn.
    """
    title = "Published and reproduced results"
    kinds = ["published", "reproduced"]
    numbers = [f"{kind}_{stat}" for kind in kinds for stat in ("mean", "std")]
    if not _usable(table, ["problem", "optimizer", *numbers]):
        return _empty(title, "no results")
    rows = _numeric(table, numbers)
    means = [f"{kind}_mean" for kind in kinds]
    if rows[means].isna().all().all():
        return _empty(title, "no finite means")
    problems = [str(p) for p in pd.unique(rows["problem"])]
    optimizers = sorted({str(o) for o in rows["optimizer"]})
    position = {name: index for index, name in enumerate(optimizers)}
    ncols = min(len(problems), PANELS_PER_ROW)
    nrows = math.ceil(len(problems) / ncols)
    fig = Figure(figsize=(WIDTH, nrows * (0.6 + 0.13 * len(optimizers)) + 0.3),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    for ax, problem in zip(axes.flat, problems, strict=False):
        part = rows[rows["problem"].astype(str) == problem]
        y = part["optimizer"].astype(str).map(position).to_numpy(dtype=float)
        ax.set_title(problem)
        if part[means].isna().all().all():
            # not _message: the panels share their y-ticks
            ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes,
                    color=GREY)
            continue
        for kind, offset, style in zip(kinds, (-PAIR_OFFSET, PAIR_OFFSET),
                                       (PUBLISHED_STYLE, REPRODUCED_STYLE), strict=True):
            spread = part[f"{kind}_std"].where(part[f"{kind}_std"] >= 0)
            ax.errorbar(part[f"{kind}_mean"], y + offset, xerr=spread, label=kind,
                        markersize=3.5, capsize=1.5, elinewidth=0.8, **style)
        if "metric" in part.columns and part["metric"].notna().any():
            ax.set_xlabel(str(part["metric"].dropna().iloc[0]))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
    for ax in axes.flat[len(problems):]:
        ax.remove()
    first = axes[0, 0]
    first.set_yticks(range(len(optimizers)), labels=optimizers)
    first.set_ylim(len(optimizers) - 0.5, -0.5)  # the first optimizer on top
    handles, labels = next(((h, lab) for ax in axes.flat
                            for h, lab in [ax.get_legend_handles_labels()] if h), ([], []))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return fig
