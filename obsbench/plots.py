"""A Cockpit-style dashboard of one run record.

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
quantities the record lacks says "not tracked". The figure is a plain
:class:`matplotlib.figure.Figure`, independent of pyplot and of the backend; grey-scale
throughout, so it reads in print.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure, SubFigure

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
