"""The Cockpit-style dashboard (``obsbench.plots``) and ``obsbench inspect``.

The records come from a real tiny run whose instrument values are replaced by synthetic
ones covering every quantity, so that each panel can be checked against known data.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch

from obsbench.catalog import Catalog
from obsbench.cli import main
from obsbench.optimizers import SGD
from obsbench.optimizers.schedules import Cosine, WarmupCosine
from obsbench.plots import NOT_TRACKED, TITLES, dashboard
from obsbench.problems import TwoD
from obsbench.results import Histogram, InstrumentValue, RunRecord, write_record
from obsbench.runner import run
from obsbench.suite import RunSpec
from tests.conftest import REPO

STEPS = 16
"""Training steps of the tiny run: 256 samples / batch 32 = 8 per epoch, 2 epochs."""
SCALARS = ["loss", "grad_norm", "distance", "update_size", "norm_test", "inner_test",
           "ortho_test", "alpha", "hess_trace", "hess_max_ev", "tic_diag", "tic_trace",
           "mean_gsnr", "cabs", "early_stopping", "time"]
PER_LAYER = {"grad_norm", "distance", "update_size", "hess_trace"}
LAYERS = ["0.weight", "0.bias"]
HIST_STEPS = [0, 8]
"""Steps with histograms; the dashboard shows the last one."""
INSTRUMENT_PANELS = ["alpha", "distance", "grad_norm", "tests", "hist_1d", "hist_2d",
                     "hess_max_ev", "hess_trace", "tic"]
PNG = b"\x89PNG\r\n\x1a\n"


def _total(quantity: str, step: int) -> float:
    """A distinct, positive value per quantity and step; alpha spreads around 0."""
    if quantity == "alpha":
        return math.sin(1.7 * step)
    return (1 + SCALARS.index(quantity)) * (1.0 + 0.25 * step)


def _hist_1d(step: int) -> Histogram:
    return Histogram(limits=[(-1.0, 1.0)], bins=[8],
                     counts=[0, 1, 5, 40 + step, 60, 7, 2, 0])


def _hist_2d(step: int) -> Histogram:
    # as the grad_hist_2d instrument: 4 gradient bins (first axis) x 3 parameter bins
    return Histogram(limits=[(-0.5, 0.5), (-2.0, 2.0)], bins=[4, 3],
                     counts=[0, 1, 2, 3, 4, 50 + step, 6, 7, 8, 0, 10, 11])


def _instruments() -> list[InstrumentValue]:
    values = []
    for step in range(STEPS):
        for quantity in SCALARS:
            values.append(InstrumentValue(step=step, quantity=quantity, layer="total",
                                          value=_total(quantity, step)))
            if quantity in PER_LAYER:
                values += [InstrumentValue(step=step, quantity=quantity, layer=layer,
                                           value=-1.0 - i) for i, layer in enumerate(LAYERS)]
    for step in HIST_STEPS:
        h1, h2 = _hist_1d(step), _hist_2d(step)
        values += [
            InstrumentValue(step=step, quantity="grad_hist_1d", layer="total",
                            value=sum(h1.counts), hist=h1),
            InstrumentValue(step=step, quantity="grad_hist_2d", layer="total",
                            value=sum(h2.counts), hist=h2)]
    return values


@pytest.fixture(scope="module")
def tiny(catalog: Catalog) -> RunRecord:
    """A real tiny run (classification, so with accuracy) under a per-epoch cosine
    schedule, without instruments."""
    optimizer = catalog.get("optimizers", "sgd").model_copy(
        update={"schedule": Cosine(kind="cosine")})
    spec = RunSpec.model_validate({
        "suite": "test", "problem_id": "mnist1d_logreg", "optimizer_id": "sgd_cosine",
        "seed": 0, "tiny": True, "problem": catalog.get("problems", "mnist1d_logreg"),
        "optimizer": optimizer})
    record = run(spec)
    assert record.status == "ok" and len(record.minibatch_losses) == STEPS
    return record


@pytest.fixture(scope="module")
def full(tiny: RunRecord) -> RunRecord:
    """The tiny run with a value of every quantity at every step."""
    return tiny.model_copy(update={"instruments": _instruments()})


@pytest.fixture(scope="module")
def figure(full: RunRecord) -> Figure:
    return dashboard(full)


def _panel(fig: Figure, name: str) -> Axes:
    """The axes titled ``TITLES[name]`` (exactly one)."""
    found = [ax for ax in fig.axes if ax.get_title() == TITLES[name]]
    assert len(found) == 1, f"{TITLES[name]!r}: {len(found)} panels"
    return found[0]


def _lines(ax: Axes) -> dict[str, Line2D]:
    """The lines of a panel and of its twin axes, by label."""
    fig = ax.get_figure()  # the panel's column (a subfigure), which holds its twins
    assert fig is not None
    siblings = ax.get_shared_x_axes().get_siblings(ax)
    ordered = [a for a in fig.axes if a in siblings]  # in the order they were made
    return {str(line.get_label()): line for a in ordered for line in a.get_lines()}


def _ydata(line: Line2D) -> list[float]:
    return [float(y) for y in np.asarray(line.get_ydata(), dtype=float)]


def _xdata(line: Line2D) -> list[float]:
    return [float(x) for x in np.asarray(line.get_xdata(), dtype=float)]


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _headings(fig: Figure | SubFigure) -> list[str]:
    return [text for sub in fig.subfigs
            for text in [sub.get_suptitle(), *_headings(sub)] if text]


# ----------------------------------------------------------------------- the figure


def test_every_panel_is_titled_and_the_figure_names_the_run(figure: Figure,
                                                             full: RunRecord) -> None:
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert sorted(titles) == sorted(TITLES.values())
    assert _headings(figure) == ["STEP SIZE", "GRADIENTS", "CURVATURE"]
    suptitle = figure.get_suptitle()
    for part in (full.run_id, "mnist1d_logreg", "sgd_cosine"):
        assert part in suptitle
    for name in INSTRUMENT_PANELS:
        assert NOT_TRACKED not in _texts(_panel(figure, name)), name


def test_step_panels_plot_the_network_wide_values(figure: Figure) -> None:
    steps = [float(s) for s in range(STEPS)]
    for name, quantities in {
            "grad_norm": ["grad_norm"], "distance": ["distance", "update_size"],
            "tests": ["norm_test", "inner_test", "ortho_test"],
            "hess_max_ev": ["hess_max_ev"], "hess_trace": ["hess_trace"],
            "tic": ["tic_trace", "tic_diag"]}.items():
        lines = list(_lines(_panel(figure, name)).values())
        assert len(lines) == len(quantities), name
        for line, quantity in zip(lines, quantities, strict=True):
            assert _xdata(line) == steps, quantity
            assert _ydata(line) == [_total(quantity, s) for s in range(STEPS)], quantity
    distance = _panel(figure, "distance")
    first = next(iter(_lines(distance).values()))
    assert first in distance.get_lines()  # distance on the panel's own axes
    assert len(distance.get_shared_x_axes().get_siblings(distance)) == 2  # update size: twin
    assert _panel(figure, "hess_max_ev").get_yscale() == "log"


def test_alpha_highlights_the_last_tenth_of_the_steps(figure: Figure) -> None:
    ax = _panel(figure, "alpha")
    alphas = [_total("alpha", s) for s in range(STEPS)]
    last = alphas[-2:]  # ceil(10% of 16) = 2 steps
    legend = ax.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [f"all steps (mean {np.mean(alphas):.3g})",
                      f"last 10% (mean {np.mean(last):.3g})"]
    heights = [p.get_height() for p in ax.patches]  # type: ignore[attr-defined]
    assert sum(heights) == STEPS + len(last)


def test_histograms_show_the_last_tracked_step(figure: Figure) -> None:
    last = HIST_STEPS[-1]
    ax = _panel(figure, "hist_1d")
    (patch,) = [p for p in ax.patches if isinstance(p, StepPatch)]
    counts, edges, _ = patch.get_data()
    assert list(counts) == _hist_1d(last).counts
    assert np.allclose(edges, np.linspace(-1.0, 1.0, 9))
    assert ax.get_yscale() == "log"
    assert f"step {last}" in ax.get_xlabel()

    ax = _panel(figure, "hist_2d")
    (image,) = ax.images
    shown = image.get_array()
    assert shown is not None
    shown = np.ma.filled(shown, 0)
    # rows (y) the parameter bins, columns (x) the gradient bins
    assert shown.tolist() == np.reshape(_hist_2d(last).counts, (4, 3)).T.tolist()
    assert tuple(image.get_extent()) == (-0.5, 0.5, -2.0, 2.0)
    assert f"step {last}" in ax.get_xlabel()


def test_absent_quantities_say_not_tracked(tiny: RunRecord) -> None:
    fig = dashboard(tiny)
    for name in INSTRUMENT_PANELS:
        ax = _panel(fig, name)
        assert _texts(ax) == [NOT_TRACKED], name
        assert not ax.get_lines() and not ax.images and not ax.patches, name
    for name in ("hyperparameters", "performance"):
        assert NOT_TRACKED not in _texts(_panel(fig, name))


def test_a_panel_shows_what_is_tracked_of_its_quantities(tiny: RunRecord) -> None:
    kept = {"update_size", "ortho_test", "tic_diag"}
    partial = tiny.model_copy(update={
        "instruments": [v for v in _instruments() if v.quantity in kept]})
    fig = dashboard(partial)
    for name, label in {"distance": "update size", "tests": "orthogonality test",
                        "tic": "TIC (diagonal)"}.items():
        ax = _panel(fig, name)
        assert list(_lines(ax)) == [label], name
        assert _texts(ax) == [], name
    for name in ("alpha", "grad_norm", "hist_1d", "hist_2d", "hess_max_ev", "hess_trace"):
        assert _texts(_panel(fig, name)) == [NOT_TRACKED], name


def test_learning_rate_follows_the_schedule(figure: Figure, full: RunRecord) -> None:
    (line,) = _panel(figure, "hyperparameters").get_lines()
    lr = full.spec.optimizer.lr
    # cosine per epoch over 2 epochs: factors 1 and 0.5, the last held to the end
    assert _xdata(line) == [0.0, 1.0, 2.0]
    assert _ydata(line) == pytest.approx([lr, 0.5 * lr, 0.5 * lr])


def test_performance_shows_minibatch_losses_and_accuracy(figure: Figure,
                                                          full: RunRecord) -> None:
    lines = _lines(_panel(figure, "performance"))
    assert _ydata(lines["minibatch loss"]) == full.minibatch_losses
    ema = _ydata(lines["moving average (0.9)"])
    assert ema[0] == pytest.approx(full.minibatch_losses[0])
    assert min(full.minibatch_losses) <= ema[-1] <= max(full.minibatch_losses)
    for split in ("train", "valid"):
        line = lines[f"{split} accuracy (per epoch)"]
        assert _xdata(line) == [0.0, 8.0, 16.0]  # epochs 0, 1, 2 at steps 0, 8, 16
        assert _ydata(line) == full.curves[split]["accuracy"]


def test_performance_shows_loss_where_there_is_no_accuracy(full: RunRecord) -> None:
    curves = {split: {"loss": metrics["loss"]} for split, metrics in full.curves.items()}
    fig = dashboard(full.model_copy(update={"curves": curves}))
    lines = _lines(_panel(fig, "performance"))
    assert _ydata(lines["valid loss (per epoch)"]) == curves["valid"]["loss"]
    assert not any("accuracy" in label for label in lines)


def test_per_step_schedules_and_unfinished_runs() -> None:
    schedule = WarmupCosine(kind="warmup_cosine", warmup=0.25, unit="step")
    spec = RunSpec.model_validate({
        "suite": "test", "problem_id": "rosenbrock", "optimizer_id": "sgd", "seed": 0,
        "tiny": True, "problem": TwoD(kind="two_d", function="rosenbrock"),
        "optimizer": SGD(kind="sgd", lr=1e-4, schedule=schedule)})
    finished = run(spec)
    assert finished.status == "ok"
    total = finished.timings.steps
    (line,) = _panel(dashboard(finished), "hyperparameters").get_lines()
    lrs = [1e-4 * schedule.factor(t, total) for t in range(total)]
    assert _ydata(line) == pytest.approx([*lrs, lrs[-1]])
    assert _xdata(line)[-1] == 2.0  # steps shown in epochs

    diverged = run(spec.model_copy(update={"optimizer": SGD(kind="sgd", lr=10.0,
                                                                schedule=schedule)}))
    assert diverged.status == "diverged"
    assert not math.isfinite(diverged.minibatch_losses[-1])
    fig = dashboard(diverged)
    assert fig.get_suptitle().endswith("[diverged]")
    # steps per epoch (and so the step schedule, and where epochs end) are unknown
    assert _texts(_panel(fig, "hyperparameters")) == ["per-step schedule of an unfinished run"]
    performance = _panel(fig, "performance")
    lines = _lines(performance)
    assert list(lines) == ["minibatch loss", "moving average (0.9)"]
    assert math.isnan(_ydata(lines["moving average (0.9)"])[-1])  # the non-finite loss: a gap
    assert _texts(performance) == ["per-epoch loss not shown: the run did not finish"]


# ----------------------------------------------------------------------- obsbench inspect


def _inspect(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "obsbench", "inspect", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": path})


def test_inspect_finds_a_run_id_and_writes_a_png(full: RunRecord, tmp_path: Path) -> None:
    write_record(tmp_path / "results" / "some_suite", full)
    done = _inspect(full.run_id, cwd=tmp_path)  # default --results: results/, at any depth
    assert done.returncode == 0, done.stderr
    out = tmp_path / f"{full.run_id}-dashboard.png"
    assert done.stdout.strip().endswith(out.name)
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000


def test_inspect_takes_a_record_file_and_the_format_of_the_suffix(
        full: RunRecord, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path, full)
    out = tmp_path / "plots" / "dash.pdf"
    assert main(["inspect", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(("args", "named"), [
    (["0123456789abcdef", "--results", "results"], "0123456789abcdef"),
    (["RECORD", "--out", "dashboard.gif"], "'.gif'"),
])
def test_inspect_errors_are_one_line_and_exit_2(full: RunRecord, tmp_path: Path,
                                                args: list[str], named: str) -> None:
    record = write_record(tmp_path / "results", full)
    done = _inspect(*[str(record) if a == "RECORD" else a for a in args], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("obsbench inspect: error: ") and named in lines[0]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.gif"))


@pytest.mark.parametrize(("run_arg", "named"), [
    ("missing.json", "missing.json: no such record file"),
    ("not-a-run", "not-a-run: no such record file, nor a run id"),
    ("broken.json", "broken.json: not a valid run record"),
    (".", ".: not a record file"),
    ("fedcba9876543210", "no such results directory"),
])
def test_inspect_names_the_file_or_run_at_fault(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        run_arg: str, named: str) -> None:
    monkeypatch.chdir(tmp_path)  # no results/ here
    (tmp_path / "broken.json").write_text('{"run_id": "x"}')
    assert main(["inspect", run_arg]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("obsbench inspect: error: ") and named in line
    assert not list(tmp_path.glob("*.png"))
