"""The comparison report: scored results rendered into one self-contained HTML file and a PDF.

``obsbench report RESULTS... [--baseline NAME]`` reads each RESULTS folder (run records of
``obsbench run``, or the tables of a baseline or of ``obsbench import``), scores the union
with :mod:`obsbench.scoring`, draws it with :mod:`obsbench.plots`, and renders the Jinja2
template ``templates/report.html.j2``:

* the HTML file holds everything it shows: figures as inline SVG, its style sheet and the
  few lines of script that sort tables; a Content-Security-Policy forbids every URL, so
  opening it makes no network request;
* the PDF (WeasyPrint) renders the same HTML, so it has the same sections;
* every string that comes from a user (spec names, paths, notes) goes through Jinja2's
  autoescaping, and figure text is drawn as paths, so ``<script>`` in a spec name is text.

Optimizers that appear in more than one source are told apart as ``name [source]``. The
figures show at most ``max_solvers`` solvers (the best by mean rank); the tables show all.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from obsbench import plots, scoring
from obsbench.report.provenance import Provenance, collect

TEMPLATES = Path(__file__).parent / "templates"
MAX_SOLVERS = 10
"""Solvers drawn per figure at most (tables list all)."""
PDF_ROWS = 100
"""Rows of each table in the PDF (the HTML file has all): WeasyPrint lays out about 600
table cells a second, so the 1,440-row tables of a Crowded Valley-sized study would take
minutes. The tables come sorted best first where there is a best (scores, ranking)."""
DIGITS = 4
"""Significant digits of numbers in tables."""


class ReportError(Exception):
    """A problem with the report's inputs, worded for the user (one line)."""


@dataclass
class Source:
    """One RESULTS folder: its runs and curves tables, and what its ``meta.json`` says."""

    name: str
    path: Path
    kind: str
    runs: pd.DataFrame
    curves: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


def load_source(path: Path, name: str | None = None) -> Source:
    """Read a folder of run records (``obsbench run``) or of tables (``runs.parquet`` and
    ``curves.parquet``: a baseline, ``obsbench import`` or ``obsbench table`` output).

    Raises:
        ReportError: the folder is missing, holds neither, or cannot be read.
    """
    import json

    from obsbench.results import (
        CURVE_COLUMNS,
        RecordError,
        curves_table,
        read_records,
        read_selection,
        record_paths,
        runs_table,
    )

    name = name or path.resolve().name
    if not path.is_dir():
        raise ReportError(f"{path}: no such results directory")
    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if (path / "runs.parquet").is_file():
        try:
            runs = pd.read_parquet(path / "runs.parquet")
            curves = (pd.read_parquet(path / "curves.parquet")
                      if (path / "curves.parquet").is_file()
                      else pd.DataFrame(columns=CURVE_COLUMNS))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{path}: cannot read its tables: {exc}") from None
        kinds = {str(k): str(v.get("kind", k)) for k, v in
                 meta.get("specs", {}).get("problems", {}).items() if isinstance(v, dict)}
        runs["problem_kind"] = runs["problem"].map(lambda p: kinds.get(str(p), p))
        return Source(name, path, "tables", runs, curves, meta)
    submission = None
    if (path / "manifest.json").is_file() and (path / "runs").is_dir():
        # a submission bundle (obsbench submit): its records are in runs/
        from obsbench.results import sha256_file
        from obsbench.submission import SubmissionError, read_manifest

        try:
            manifest = read_manifest(path)
        except SubmissionError as exc:
            raise ReportError(f"{path}: {exc}") from None
        submission = {"bundle": str(path), "optimizer": manifest.optimizer,
                      "suite": manifest.suite, "created": manifest.created,
                      "manifest_sha256": sha256_file(path / "manifest.json")}
        path = path / "runs"
    if record_paths(path):
        try:
            records = list(read_records(path))
            choices = read_selection(path)
        except (RecordError, ValueError) as exc:
            raise ReportError(str(exc)) from None
        runs = runs_table(records, choices)
        kind = {r.run_id: r.spec.problem.kind for r in records}
        runs["problem_kind"] = runs["run_id"].map(kind)
        if submission is not None:
            return Source(name, path.parent, "submission", runs, curves_table(records),
                          {"submission": submission})
        return Source(name, path, "run records", runs, curves_table(records), meta)
    raise ReportError(f"{path}: neither run records (*.json) nor tables (runs.parquet)")


def combine(sources: Sequence[Source]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The union of the sources' tables.

    Adds ``source_name``; run ids become ``<source>:<run id>`` (the same run may sit in two
    folders); an optimizer name used by more than one source becomes ``name [source]`` (the
    original stays in ``optimizer_id``).
    """
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ReportError(f"two RESULTS folders share the name "
                          f"'{next(n for n in names if names.count(n) > 1)}'; rename one")
    runs, curves = [], []
    for s in sources:
        r = s.runs.copy()
        r["source_name"] = s.name
        r["run_id"] = s.name + ":" + r["run_id"].astype(str)
        c = s.curves.copy()
        c["run_id"] = s.name + ":" + c["run_id"].astype(str)
        runs.append(r)
        curves.append(c)
    all_runs = pd.concat(runs, ignore_index=True)
    all_curves = pd.concat(curves, ignore_index=True)
    all_runs["optimizer_id"] = all_runs["optimizer"]
    owners = all_runs.groupby("optimizer")["source_name"].nunique()
    shared = all_runs["optimizer"].isin(owners[owners > 1].index)
    all_runs.loc[shared, "optimizer"] = (all_runs.loc[shared, "optimizer"] + " ["
                                         + all_runs.loc[shared, "source_name"] + "]")
    return all_runs, all_curves


# ------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str
    """Sort key: a number as text for numeric cells, else the text."""
    css: str = ""


@dataclass
class Table:
    """A table for the template: header and cells, sortable by any column."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    numeric: list[bool] = field(default_factory=list)


def number(value: Any, digits: int = DIGITS) -> Cell:
    """A numeric cell: ``—`` for missing, ``∞`` for infinite, else ``digits`` significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return Cell("—", "NaN")
    x = float(value)
    if math.isinf(x):
        return Cell("∞" if x > 0 else "-∞", "Infinity" if x > 0 else "-Infinity")
    if x == int(x) and abs(x) < 1e6:
        return Cell(str(int(x)), repr(x))
    return Cell(f"{x:.{digits}g}", repr(x))


def text(value: Any, css: str = "") -> Cell:
    s = "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return Cell(s, s, css)


def table(frame: pd.DataFrame, columns: dict[str, str], *, caption: str = "",
          css: dict[str, dict[str, str]] | None = None) -> Table:
    """A :class:`Table` of ``frame``'s columns (``{column: heading}``); numeric columns are
    formatted by :func:`number`, ``css[column][value]`` classes cells."""
    css = css or {}
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(
        frame[c]) for c in columns]
    rows = []
    for values in zip(*(frame[c].tolist() for c in columns), strict=True):
        rows.append([number(v) if num else text(v, css.get(c, {}).get(str(v), ""))
                     for c, v, num in zip(columns, values, numeric, strict=True)])
    return Table(list(columns.values()), rows, caption, numeric)


# ----------------------------------------------------------------------------- figures


def svg(figure: Figure) -> Markup:
    """``figure`` as an inline ``<svg>`` element, with fixed ids and no date, so the same input
    gives the same bytes. Text stays text (searchable, and in the PDF's text); matplotlib's SVG
    writer escapes it, so a label cannot carry markup."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "obsbench"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return Markup(text[text.index("<svg"):])


PNG_DPI = 150


def png(figure: Figure) -> str:
    """``figure`` as a base64 PNG (``PNG_DPI``), for the PDF: WeasyPrint lays out an inline
    SVG figure in about 0.7 s, a PNG in a few milliseconds."""
    import base64

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Plot:
    """A figure of the report: vector (SVG) for the HTML file, raster (PNG) for the PDF.

    Made empty by :func:`figure` with the plot to draw; :func:`draw_all` fills it in."""

    title: str
    plot: tuple[str, tuple[Any, ...], dict[str, Any]]
    """``(name of the obsbench.plots function, args, kwargs)``."""
    svg: str = ""
    png: str = ""


def figure(title: str, plot: str, *args: Any, **kwargs: Any) -> Plot:
    """A figure to draw later with ``obsbench.plots.<plot>(*args, **kwargs)``."""
    return Plot(title, (plot, args, kwargs))


def _draw(plot: tuple[str, tuple[Any, ...], dict[str, Any]]) -> tuple[str, str]:
    name, args, kwargs = plot
    fig = getattr(plots, name)(*args, **kwargs)
    engine = fig.get_layout_engine()
    if engine is not None:  # lay out once, not once per format
        engine.execute(fig)
        fig.set_layout_engine("none")
    return str(svg(fig)), png(fig)


def draw_all(figures: list[Plot], workers: int | None = None) -> None:
    """Draw ``figures`` in place, in ``workers`` processes (default: one per core; a
    Crowded Valley-sized report has two dozen figures of about a second each)."""
    workers = min(workers or os.cpu_count() or 1, len(figures))
    plots_ = [f.plot for f in figures]
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            drawn = list(pool.map(_draw, plots_))
    else:
        drawn = [_draw(p) for p in plots_]
    for f, (vector, raster) in zip(figures, drawn, strict=True):
        f.svg, f.png = Markup(vector), raster


# ------------------------------------------------------------------------------ report


@dataclass
class Report:
    """Everything the template shows."""

    title: str
    sources: Table
    baseline: str | None
    summary: list[str]
    verdicts: Table | None
    performance: Table
    curves: list[Plot]
    times: Table
    scores: Table
    profile: Plot | None
    budget: list[Plot]
    sensitivity: list[Plot]
    ranking: Table
    ranking_figure: Plot | None
    published: Table | None
    published_figure: Plot | None
    provenance: Provenance
    notes: list[str] = field(default_factory=list)
    submissions: list[dict[str, str]] = field(default_factory=list)
    """What the manifest of each submission bundle among the sources says."""


def build(sources: Sequence[Source], *, baseline: str | None = None, commands: list[str],
          specs_root: Path = Path("specs"), root: Path = Path("."),
          max_solvers: int = MAX_SOLVERS, title: str | None = None) -> Report:
    """Score ``sources`` and draw the report (no file is written).

    Args:
        baseline: the name of the source the others are compared with (verdicts,
            speed-up); it also sets the targets of time-to-target.
        commands: the commands that produced the report, for its provenance.
    """
    names = [s.name for s in sources]
    if baseline is not None and baseline not in names:
        raise ReportError(f"--baseline: '{baseline}' is none of the RESULTS ({', '.join(names)})")
    runs, curves, metric, perf, ranks = _scored(sources, baseline)
    notes: list[str] = []
    base = runs[runs["source_name"] == baseline] if baseline else runs
    order = [str(s) for s in ranks.index]
    drawn = order[:max_solvers]
    if len(order) > max_solvers:
        notes.append(f"Figures show the {max_solvers} best of {len(order)} solvers by mean "
                     "rank; the tables list all.")

    styles = plots.solver_styles(drawn)
    times_steps, times_seconds = _times(runs, curves, base, notes)
    scores = _scores(times_steps, times_seconds, runs, baseline, notes)

    report = Report(
        title=title or ("obsbench report: " + " vs ".join(names[:4])
                        + (" ..." if len(names) > 4 else "")),
        sources=_sources_table(sources),
        baseline=baseline,
        summary=[],
        verdicts=_verdicts(runs, baseline, metric) if baseline else None,
        performance=_performance_table(perf),
        curves=[figure(f"{p}: {metric[p].label}", "learning_curves",
                       *_problem_tables(runs, curves, drawn, p), problem=p,
                       metric=metric[p], styles=styles)
                for p in sorted(metric)],
        times=_times_table(times_steps, times_seconds),
        scores=scores,
        profile=figure("Performance profiles (steps to the target)", "profile_plot",
                       scoring.performance_profile(_columns(times_steps, drawn)),
                       styles=styles)
        if not times_steps.empty else None,
        budget=_budget(runs, drawn, metric, styles),
        sensitivity=_sensitivity(runs, drawn, metric, styles),
        ranking=_ranking_table(ranks),
        ranking_figure=figure("Rank per problem", "ranking_heatmap",
                              ranks.loc[[s for s in ranks.index if str(s) in drawn]])
        if not ranks.empty else None,
        published=None, published_figure=None,
        provenance=collect(commands=commands + _regenerate(sources),
                           suites=set(runs["suite"].dropna().astype(str)),
                           problems=set(runs["problem"].dropna().astype(str)),
                           optimizers=set(runs.loc[runs["source"] == "obsbench",
                                                   "optimizer_id"].dropna().astype(str)),
                           specs_root=specs_root, root=root),
        notes=notes,
        submissions=[{"name": s.name, **s.meta["submission"]} for s in sources
                     if "submission" in s.meta],
    )
    published = published_vs_reproduced(runs, metric)
    if not published.empty:
        report.published = table(published, {
            "problem": "problem", "optimizer": "optimizer", "published_source": "published",
            "published_mean": "mean", "published_std": "std", "published_n": "runs",
            "reproduced_source": "reproduced", "reproduced_mean": "mean ",
            "reproduced_std": "std ", "reproduced_n": "runs ", "gap_in_std": "gap / std"},
            caption="Final test performance of the chosen setting, mean and standard deviation "
                    "over seeds; gap in published standard deviations.")
        report.published_figure = figure("Published vs reproduced", "published_plot",
                                         published)
    report.summary = _summary(report, len(runs), perf, ranks, baseline)
    draw_all([f for f in (*report.curves, report.profile, *report.budget,
                          *report.sensitivity, report.ranking_figure, report.published_figure)
              if f is not None])
    return report


def _scored(sources: Sequence[Source], baseline: str | None
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, scoring.Metric], pd.DataFrame,
                       pd.DataFrame]:
    """The pooled runs and curves, each problem's metric, the performance table (speed
    against the baseline's targets, DeepOBS's where published) and the ranking."""
    runs, curves = combine(sources)
    if runs.empty:
        raise ReportError("the RESULTS hold no runs")
    # one label per solver for the whole pool, so that every table and figure names it alike
    runs["optimizer"] = scoring.solver_labels(runs).astype(str)
    metric = scoring.metrics(runs)
    base = runs[runs["source_name"] == baseline] if baseline else runs
    speed_targets = {**scoring.targets(base, split="test"),
                     **{p: t for p, t in scoring.DEEPOBS_TARGETS.items() if p in metric}}
    perf = scoring.performance(runs, curves, split="test", targets=speed_targets)
    return runs, curves, metric, perf, scoring.ranking(perf)


def _problem_tables(runs: pd.DataFrame, curves: pd.DataFrame, solvers: list[str],
                    problem: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The curves and the chosen runs of ``solvers`` on ``problem`` (all a learning-curve
    figure reads, and small enough to send to a drawing process)."""
    mine = runs[runs["optimizer"].isin(solvers) & (runs["problem"] == problem)
                & runs["selected"].astype(bool)]
    return curves[curves["run_id"].isin(mine["run_id"])], mine


def _columns(times: pd.DataFrame, solvers: list[str]) -> pd.DataFrame:
    keep = [c for c in times.columns if str(c) in solvers]
    return times[keep] if keep else times


def _times(runs: pd.DataFrame, curves: pd.DataFrame, base: pd.DataFrame,
           notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median-over-seeds times to the target (steps, seconds), on the validation split
    where the problem has one, else on the test split (DeepOBS 1.1 imports)."""
    has_valid = runs.groupby("problem")["final_valid_loss"].apply(lambda s: s.notna().any())
    parts = []
    for split, problems in (("valid", has_valid[has_valid].index),
                            ("test", has_valid[~has_valid].index)):
        if len(problems) == 0:
            continue
        subset = runs[runs["problem"].isin(problems)]
        # the baseline's targets where it ran the problem, else the whole pool's
        goals = {**scoring.targets(subset, split=split),
                 **scoring.targets(base[base["problem"].isin(problems)], split=split)}
        goals.update({p: t for p, t in scoring.DEEPOBS_TARGETS.items()
                      if p in problems and split == "test"})
        if split == "test":
            notes.append("Problems without a validation split ("
                         + ", ".join(sorted(problems)) + ") take the test split for the "
                         "time to the target.")
        parts.append(scoring.time_to_target(subset, curves, goals, split=split))
    if not parts:
        return pd.DataFrame(), pd.DataFrame()
    ttt = pd.concat(parts, ignore_index=True)
    return (scoring.study_times(ttt, unit="steps"), scoring.study_times(ttt, unit="seconds"))


def _scores(steps: pd.DataFrame, seconds: pd.DataFrame, runs: pd.DataFrame,
            baseline: str | None, notes: list[str]) -> Table:
    if steps.empty:
        return Table(["solver"], [], "No time-to-target data.")
    frame = pd.DataFrame({
        "score_steps": scoring.benchmark_score(steps),
        "score_seconds": scoring.benchmark_score(seconds),
        "reached": np.isfinite(steps.to_numpy(dtype=float)).sum(0),
    })
    frame["problems"] = steps.shape[0]
    columns = {"solver": "solver", "score_steps": "score (steps)",
               "score_seconds": "score (seconds)", "reached": "problems reached"}
    if baseline is not None:
        reference = _reference(steps, frame["score_steps"], runs, baseline)
        if reference is not None:
            budget = scoring.run_length(runs, unit="steps").reindex(steps.index)
            frame["speedup"] = scoring.speedup(steps, reference, budget=budget)
            columns["speedup"] = f"speed-up vs {reference}"
            notes.append(f"Speed-ups are geometric means over problems of steps to the target "
                         f"of {reference} (the baseline's best-scoring solver) divided by the "
                         "solver's; a miss counts as the full run.")
    frame = frame.sort_values("score_steps", ascending=False)
    frame.insert(0, "solver", [str(s) for s in frame.index])
    return table(frame, columns, caption="AlgoPerf benchmark score: the area under the "
                 "performance profile up to ratio 4, in [0, 1] (1: fastest on every problem).")


def _reference(steps: pd.DataFrame, score: pd.Series, runs: pd.DataFrame,
               baseline: str) -> str | None:
    """The baseline's solver with the highest benchmark score ``score``."""
    mine = set(runs.loc[runs["source_name"] == baseline, "optimizer"])
    candidates = [c for c in steps.columns if str(c) in mine]
    if not candidates:
        return None
    return str(max(candidates, key=lambda c: (score.get(c, 0.0), str(c))))


def _sources_table(sources: Sequence[Source]) -> Table:
    rows = []
    for s in sources:
        status = s.runs["status"].value_counts()
        rows.append({"name": s.name, "kind": s.kind, "path": str(s.path),
                     "origin": ", ".join(sorted(s.runs["source"].dropna().astype(str).unique())),
                     "runs": len(s.runs), "ok": int(status.get("ok", 0)),
                     "diverged": int(status.get("diverged", 0)),
                     "failed": int(status.get("failed", 0)),
                     "problems": ", ".join(sorted(s.runs["problem"].astype(str).unique())),
                     "optimizers": ", ".join(sorted(s.runs["optimizer"].astype(str).unique()))})
    return table(pd.DataFrame(rows), {k: k for k in rows[0]} if rows else {"name": "name"})


def _performance_table(perf: pd.DataFrame) -> Table:
    frame = perf.copy()
    frame["metric"] = frame["metric"].astype(str)
    columns = {"problem": "problem", "optimizer": "optimizer", "budget": "budget",
               "schedule": "schedule", "metric": "metric", "n": "runs",
               "n_diverged": "diverged", "final_mean": "final mean", "final_std": "std",
               "final_median": "median", "final_q25": "25%", "final_q75": "75%",
               "best_mean": "best mean", "speed": "speed"}
    for column in ("budget", "schedule"):  # columns that say nothing for this pool
        if frame[column].isna().all():
            del columns[column]
    return table(frame, columns,
        caption="Final and best test performance of the chosen settings over seeds; speed is "
                "DeepOBS's: the mean first epoch at which the test metric reaches the problem's "
                "target (num_epochs + 1 if never).")


def _times_table(steps: pd.DataFrame, seconds: pd.DataFrame) -> Table:
    if steps.empty:
        return Table(["problem"], [], "No curves to measure time to the target.")
    long = pd.DataFrame({"steps": steps.stack(future_stack=True),
                         "seconds": seconds.stack(future_stack=True)})
    long = long.reset_index()
    long.columns = ["problem", "solver", "steps", "seconds"]
    return table(long, {"problem": "problem", "solver": "solver", "steps": "steps",
                        "seconds": "seconds"},
                 caption="Time to the target: per seed the fastest trial, then the median over "
                 "seeds (AlgoPerf); ∞ where the median run misses it.")


def _ranking_table(ranks: pd.DataFrame) -> Table:
    frame = ranks.copy()
    frame.insert(0, "solver", [str(s) for s in frame.index])
    return table(frame, {c: str(c) for c in frame.columns},
                 caption="Rank of each solver's mean final test performance per problem "
                 "(1 = best; ties share the average rank).")


def _verdicts(runs: pd.DataFrame, baseline: str, metric: dict[str, Any]) -> Table:
    """Each solver of the other sources against the baseline's best solver per problem, with
    a caveat where the two did not train alike (epochs, batch size)."""
    runs = runs.assign(solver=runs["optimizer"])
    base = runs[runs["source_name"] == baseline]
    others = runs[runs["source_name"] != baseline]
    perf = scoring.performance(base)
    perf["solver"] = scoring.solver_labels(perf)
    rows = []
    for problem, group in perf.groupby("problem"):
        good = group.dropna(subset=["final_mean"])
        mine = others[others["problem"] == problem]
        if good.empty or mine.empty:
            continue
        best = str(good.sort_values("final_mean", ascending=not bool(
            good["higher_is_better"].iloc[0])).iloc[0]["solver"])
        reference = base[(base["problem"] == problem) & (base["solver"] == best)]
        for solver, candidate in mine.groupby("solver"):
            result = scoring.compare(candidate, reference, metric=metric)
            rows += [{**row, "solver": solver, "reference": best,
                      "caveat": _caveat(candidate, reference)} for row in result.to_dict("records")]
    if not rows:
        return Table(["problem"], [], "None of the other RESULTS ran a problem of the "
                     "baseline.")
    frame = pd.DataFrame(rows)
    frame["metric"] = frame["metric"].astype(str)
    return table(frame, {
        "problem": "problem", "solver": "solver", "reference": "baseline solver",
        "metric": "metric", "candidate": "mean", "baseline": "baseline mean",
        "improvement": "improvement", "low": "95% CI low", "high": "95% CI high",
        "n_candidate": "runs", "n_baseline": "baseline runs", "verdict": "verdict",
        "caveat": "caveat"},
        caption="Improvement over the baseline's best solver on each problem (positive: "
                "better), with a 95% bootstrap interval over seeds; diverged runs are left "
                "out of the means (see the performance table).",
        css={"verdict": {"better": "better", "worse": "worse", "missing": "missing"}})


def _caveat(candidate: pd.DataFrame, reference: pd.DataFrame) -> str:
    """What makes two sets of runs train differently (empty if nothing)."""
    notes = []
    for column, unit in (("num_epochs", "epochs"), ("batch_size", "batch size")):
        a = sorted(candidate[column].dropna().unique())
        b = sorted(reference[column].dropna().unique())
        if a and b and a != b:
            notes.append(f"{'/'.join(map(str, a))} vs {'/'.join(map(str, b))} {unit}")
    return "; ".join(notes)


def _budget(runs: pd.DataFrame, drawn: list[str], metric: dict[str, Any],
            styles: dict[str, Any]) -> list[Plot]:
    trials = runs.groupby(["problem", "optimizer"])["trial"].nunique()
    tuned = trials[trials > 1]
    if tuned.empty:
        return []
    subset = runs.set_index(["problem", "optimizer"]).loc[tuned.index].reset_index()
    curve = scoring.budget_curve(subset)
    curve = curve[curve["optimizer"].isin(drawn)]
    return [figure(f"{p}: expected best performance after k trials", "budget_plot",
                   curve[curve["problem"] == p], problem=p, metric=metric[p], styles=styles)
            for p in sorted(curve["problem"].unique())]


def _sensitivity(runs: pd.DataFrame, drawn: list[str], metric: dict[str, Any],
                 styles: dict[str, Any]) -> list[Plot]:
    trials = runs.groupby(["problem", "optimizer"])["trial"].nunique()
    if not (trials > 1).any():
        return []
    frame = scoring.sensitivity(runs)
    frame = frame[frame["optimizer"].isin(drawn)]
    counts = frame.groupby("problem")["trial"].nunique()
    return [figure(f"{p}: learning-rate sensitivity", "sensitivity_plot",
                   frame[frame["problem"] == p], problem=p, metric=metric[p], styles=styles)
            for p in sorted(counts[counts > 1].index)]


def published_vs_reproduced(runs: pd.DataFrame, metric: dict[str, Any]) -> pd.DataFrame:
    """Published (imported) against obsbench's own runs of the same problem and optimizer:
    mean, standard deviation and count of the chosen setting's final test values."""
    chosen = runs[runs["selected"].astype(bool)].copy()
    if chosen.empty:
        return pd.DataFrame()
    chosen["value"] = [row[metric[p].column] if p in metric else math.nan
                       for p, row in zip(chosen["problem"], chosen.to_dict("records"),
                                         strict=True)]
    # a published problem matches obsbench's problem of that id, or else obsbench's variants
    # of that kind (quadratic_deep_tf is DeepOBS 1.1's quadratic_deep)
    names = set(chosen.loc[chosen["source"] != "obsbench", "problem"])
    kind = chosen.get("problem_kind", chosen["problem"]).fillna(chosen["problem"])
    own = chosen["source"] == "obsbench"
    chosen["match"] = chosen["problem"].where(~own | chosen["problem"].isin(names), kind)
    stats = (chosen.groupby(["match", "problem", "optimizer_id", "source_name", "source"])
             ["value"].agg(["mean", "std", "count"]).reset_index())
    published = stats[stats["source"] != "obsbench"].drop(columns="problem")
    reproduced = stats[stats["source"] == "obsbench"]
    merged = published.merge(reproduced, on=["match", "optimizer_id"], suffixes=("_p", "_r"))
    if merged.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "problem": merged["problem"], "optimizer": merged["optimizer_id"],
        "published_source": merged["source_name_p"], "published_mean": merged["mean_p"],
        "published_std": merged["std_p"], "published_n": merged["count_p"],
        "reproduced_source": merged["source_name_r"], "reproduced_mean": merged["mean_r"],
        "reproduced_std": merged["std_r"], "reproduced_n": merged["count_r"],
        "gap_in_std": (merged["mean_r"] - merged["mean_p"]) / merged["std_p"],
    }).sort_values(["problem", "optimizer"], ignore_index=True)


def _summary(report: Report, runs: int, perf: pd.DataFrame, ranks: pd.DataFrame,
             baseline: str | None) -> list[str]:
    lines = []
    lines.append(f"{runs} runs from {len(report.sources.rows)} source(s) on "
                 f"{perf['problem'].nunique()} problem(s), {len(ranks)} solver(s).")
    if not ranks.empty:
        lines.append(f"Best mean rank: {ranks.index[0]} ({ranks['mean rank'].iloc[0]:.2f}).")
    if report.scores.rows:
        top = report.scores.rows[0]
        lines.append(f"Highest benchmark score (steps to the target): {top[0].text} "
                     f"({top[1].text}).")
    if report.verdicts is not None and report.verdicts.rows:
        column = report.verdicts.columns.index("verdict")
        counts: dict[str, int] = {}
        for row in report.verdicts.rows:
            counts[row[column].text] = counts.get(row[column].text, 0) + 1
        lines.append(f"Against {baseline}: " + ", ".join(
            f"{n} {v}" for v, n in sorted(counts.items())) + " (problem, optimizer) pairs.")
    return lines


def _regenerate(sources: Sequence[Source]) -> list[str]:
    return [str(s.meta["regenerate"]) for s in sources if s.meta.get("regenerate")]


# ----------------------------------------------------------------------------- render


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["slug"] = lambda s: re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-")
    return env


def render_html(report: Report, *, pdf: bool = False) -> str:
    """The report as one self-contained HTML document; ``pdf``: the variant that WeasyPrint
    renders, with PNG figures and the first :data:`PDF_ROWS` rows of each table."""
    env = environment()
    return env.get_template("report.html.j2").render(
        report=report, pdf=pdf, pdf_rows=PDF_ROWS,
        style=Markup((TEMPLATES / "report.css").read_text()),
        script=Markup((TEMPLATES / "sort.js").read_text()))


def write_pdf(document: str, path: Path) -> None:
    """Render the HTML ``document`` to a PDF at ``path`` with WeasyPrint (scripts do not run,
    so tables keep their order). Only ``data:`` URLs (the figures) are fetched."""
    import logging

    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    HTML(string=document, url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf(path)


def write(report: Report, out: Path, *, pdf: bool = True) -> list[Path]:
    """Write ``out/report.html`` (and ``out/report.pdf``); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.html"]
    tmp = out / ".report.html.tmp"
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(paths[0])
    if pdf:
        pdf_tmp = out / ".report.pdf.tmp"
        write_pdf(render_html(report, pdf=True), pdf_tmp)
        pdf_tmp.replace(out / "report.pdf")
        paths.append(out / "report.pdf")
    return paths



# ----------------------------------------------------------------------------- score tables


def score_tables(sources: Sequence[Source]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The report's numbers as tables, for the DVC pipeline's ``scores`` stage: performance,
    ranking, benchmark score and performance profile (steps to the target), the seed-mean
    test curves of the chosen settings; and the headline metrics (for ``dvc metrics``):
    per problem the best solver's mean final test value, per solver its mean rank and
    benchmark score.
    """
    runs, curves, metric, perf, ranks = _scored(sources, None)
    steps, _ = _times(runs, curves, runs, [])
    bench = (scoring.benchmark_score(steps) if not steps.empty
             else pd.Series(dtype=float, name="score"))
    profile = (scoring.performance_profile(steps) if not steps.empty
               else pd.DataFrame(columns=["solver", "tau", "rho"]))
    chosen = runs[runs["selected"].astype(bool)][["run_id", "problem", "optimizer"]]
    test = curves[curves["split"] == "test"].merge(chosen, on="run_id")
    test = test[test["metric"] == test["problem"].map(lambda p: metric[p].name)]
    mean_curves = (test.groupby(["problem", "optimizer", "epoch"])["value"].mean()
                   .reset_index().rename(columns={"optimizer": "solver"}))
    best: dict[str, Any] = {}
    for problem, rows in perf.groupby("problem"):
        values = rows["final_mean"].dropna()
        if values.empty:
            continue
        array = values.to_numpy(dtype=float)
        top = int(np.argmax(array) if metric[str(problem)].higher_is_better
                  else np.argmin(array))
        best[str(problem)] = {"metric": metric[str(problem)].label,
                              "best_final": float(array[top]),
                              "best_solver": str(scoring.solver_labels(
                                  perf.loc[[values.index[top]]]).iloc[0])}

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    headline = {
        "problems": best,
        "mean_rank": {str(s): finite(v) for s, v in ranks["mean rank"].items()},
        "benchmark_score": {str(s): finite(v) for s, v in bench.items()},
    }
    ranking = ranks.reset_index().rename(columns={"index": "solver"})
    benchmark = bench.rename("score").rename_axis("solver").reset_index()
    return ({"performance": perf, "ranking": ranking, "benchmark": benchmark,
             "profile": profile, "curves": mean_curves}, headline)
