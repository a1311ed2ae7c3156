"""The ``obsbench`` command: thin, and the only place that prints and exits.

Exit codes: 0 success, 1 some runs failed, 2 invalid input (specs, paths, arguments),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from obsbench import __version__
from obsbench.spec import Issue, SpecError

if TYPE_CHECKING:
    from obsbench.suite import RunSpec

EXIT_INVALID = 2


class UserError(Exception):
    """A mistake of the user's: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="obsbench", description=(
        "Benchmark and debug deep-learning optimizers: validate YAML specs, run suites of "
        "training runs, tabulate their results and report them against baselines."))
    parser.add_argument("--version", action="version", version=f"obsbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    p = commands.add_parser("validate", help="check spec files and their cross-references",
                            description="Check spec files and their cross-references. Errors "
                            "go to stderr, one line each; exit 0 if all are valid, 2 if not.")
    p.add_argument("paths", nargs="*", type=Path, default=[Path("specs")], metavar="PATH",
                   help="spec files, family directories or spec roots (default: specs/)")
    p.add_argument("--pipeline", type=Path, metavar="PARAMS",
                   help="also check a DVC params file (params.yaml): its suite must list "
                   "exactly the optimizers in its `optimizers`")

    p = commands.add_parser("schema", help="write the JSON Schema of every spec family",
                            description="Write the JSON Schema of every spec family, for "
                            "editors that validate and complete YAML.")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write DIR/<family>.schema.json (default: print one JSON object)")

    p = commands.add_parser("run", help="run a suite of training runs",
                            description="Run every training run of a suite in a local process "
                            "pool. A run whose record exists is skipped, so an interrupted "
                            "sweep resumes where it stopped.")
    p.add_argument("suite", metavar="SUITE", help="suite id (in --specs) or path to its file")
    p.add_argument("--specs", type=Path, default=Path("specs"), metavar="DIR",
                   help="spec root for suite ids (default: specs/)")
    p.add_argument("--results", type=Path, metavar="DIR",
                   help="where run records go (default: results/<suite>)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="parallel runs; each gets cores/N threads (default: 1)")
    p.add_argument("--tiny", action="store_true",
                   help="use every problem's tiny variant (few samples, 2 epochs)")
    p.add_argument("--optimizer", metavar="NAME",
                   help="run only this optimizer's runs of the suite (one of its optimizers)")
    p.add_argument("--plan", type=Path, metavar="DIR",
                   help="run nothing: write DIR/<optimizer>.json, what each optimizer's runs "
                   "depend on (the suite's settings, the tuning spec, the run ids), for the "
                   "DVC pipeline's per-optimizer stages")

    p = commands.add_parser("table", help="write a tidy results table",
                            description="Read the run records in DIR and write one tidy "
                            "table: runs (one row per run), curves (run_id, epoch, split, "
                            "metric, value) or instruments (run_id, step, quantity, layer, "
                            "value). The format follows the suffix: .parquet or .csv.")
    p.add_argument("directory", nargs="+", type=Path, metavar="DIR",
                   help="a directory of run records, or of folders of run records (one per "
                   "optimizer, as the DVC pipeline writes them)")
    p.add_argument("--table", choices=["runs", "curves", "instruments"], default="runs",
                   help="which table (default: runs)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="output file, .parquet or .csv (default: DIR/<table>.parquet)")

    p = commands.add_parser("scores", help="write score tables and DVC metrics",
                            description="Score the runs in RESULTS (run records or "
                            "runs.parquet/curves.parquet, as `obsbench report` reads them) and "
                            "write DIR/performance.csv (final and best test performance per "
                            "problem and solver), ranking.csv, benchmark.csv (AlgoPerf's "
                            "benchmark score), profile.csv (performance profiles), curves.csv "
                            "(seed-mean test curves of the chosen settings) and metrics.json "
                            "(for `dvc metrics`).")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results folders (run records or runs.parquet/curves.parquet)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")

    p = commands.add_parser("import", help="import published results (DeepOBS, Crowded Valley)",
                            description="Import published optimizer-benchmark runs into "
                            "obsbench's tables (runs.parquet, curves.parquet: the schema of "
                            "`obsbench table`), so that they are compared with obsbench's own "
                            "runs by the same code: obsbench import FORMAT PATH [--out DIR].")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT",
                               parser_class=_Parser)
    f = formats.add_parser("deepobs", help="DeepOBS 1.1 baselines, DeepOBS 1.2 and Crowded "
                           "Valley run files",
                           description="Import every DeepOBS run file (random_seed__*.json) "
                           "under PATH: DeepOBS 1.1 (the published baselines) and DeepOBS 1.2 "
                           "(including the Crowded Valley results, whose budget and schedule "
                           "folders are recorded). Writes DIR/runs.parquet and "
                           "DIR/curves.parquet; a file that cannot be read is skipped and "
                           "reported. Re-importing gives the same run ids.")
    f.add_argument("path", type=Path, metavar="PATH", help="folder holding the run files, at "
                   "any depth")
    f.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: results/imported/<name of PATH>)")
    f.add_argument("--minibatch", action="store_true",
                   help="also write DIR/minibatch.parquet (run_id, index, value): the logged "
                   "minibatch training losses, each once")

    p = commands.add_parser("baselines", help="list obsbench's baselines, or freeze one",
                            description="List the baselines in --dir (obsbench's own results "
                            "of its protocol suites: tables, specs, hardware), or freeze a "
                            "suite's finished run records into one.")
    p.add_argument("--dir", type=Path, default=Path("baselines"), metavar="DIR",
                   help="where baselines live (default: baselines/)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    f = actions.add_parser("freeze", help="write baselines/<SUITE>/ from run records",
                           description="Write DIR/<SUITE>/ (runs.parquet, curves.parquet of "
                           "the chosen settings, selection.json, meta.json) from the records "
                           "of a finished `obsbench run SUITE`.")
    f.add_argument("suite", metavar="SUITE", help="suite id (in --specs)")
    f.add_argument("--specs", type=Path, default=Path("specs"), metavar="DIR",
                   help="spec root (default: specs/)")
    f.add_argument("--results", type=Path, metavar="DIR",
                   help="the suite's run records (default: results/<SUITE>)")

    p = commands.add_parser("report", help="score results and write the HTML and PDF report",
                            description="Score one or more RESULTS folders (run records of "
                            "`obsbench run`, or tables: a baseline, `obsbench import` output) and "
                            "write a self-contained HTML report and a PDF of it (whose tables "
                            "show their first 100 rows): "
                            "performance, learning curves, time to target with performance "
                            "profiles and benchmark scores, tuning budget and sensitivity, "
                            "ranking, published vs reproduced, provenance.")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results folders (run records or runs.parquet/curves.parquet)")
    p.add_argument("--baseline", metavar="NAME",
                   help="compare the others with this one: the name of a RESULTS folder, or "
                   "of a baseline in --baselines (added to the RESULTS)")
    p.add_argument("--baselines", type=Path, default=Path("baselines"), metavar="DIR",
                   help="where --baseline looks for baselines (default: baselines/)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder for report.html and report.pdf (default: "
                   "reports/<first RESULTS name>[-vs-<baseline>])")
    p.add_argument("--specs", type=Path, default=Path("specs"), metavar="DIR",
                   help="spec root whose files the provenance hashes (default: specs/)")
    p.add_argument("--title", help="report title (default: from the RESULTS names)")
    p.add_argument("--no-pdf", action="store_true", help="write the HTML file only")

    p = commands.add_parser("submit", help="bundle an optimizer's runs for submission",
                            description="Write a submission bundle: the optimizer's run records "
                            "in a suite, the specs they need, the environment and a manifest "
                            "of sha256 checksums. Every run of the optimizer in the suite must "
                            "have finished.")
    p.add_argument("optimizer", metavar="OPTIMIZER", help="optimizer id")
    p.add_argument("--suite", metavar="SUITE",
                   help="suite id (default: the one suite the records in --results name)")
    p.add_argument("--results", type=Path, metavar="DIR",
                   help="the suite's run records (default: results/<SUITE>)")
    p.add_argument("--specs", type=Path, default=Path("specs"), metavar="DIR",
                   help="spec root (default: specs/)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="bundle folder, must not exist (default: "
                   "submissions/<OPTIMIZER>-<SUITE>)")

    p = commands.add_parser("verify", help="check a submission bundle and re-run a sample",
                            description="Check a submission bundle without trusting it: "
                            "layout (no absolute paths, '..', links or files over 64 MiB), "
                            "manifest schema and checksums, spec validity, that each record is "
                            "the run its specs define; then re-run a random sample of its runs "
                            "and compare their curves within a tolerance. Prints one verdict "
                            "line; exit 0 if verified, 2 if not.")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle folder")
    p.add_argument("--trust", action="store_true",
                   help="allow `kind: import` optimizers (imports and runs their code)")
    p.add_argument("--sample", default="2", metavar="N|all",
                   help="how many runs to re-run, or 'all' (default: 2)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the sample's random choice (default: 0)")
    p.add_argument("--rtol", type=float, default=1e-5, metavar="R",
                   help="relative tolerance of re-run curves (default: 1e-05; absolute 1e-08)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="parallel re-runs (default: 1)")

    p = commands.add_parser("inspect", help="draw a run's Cockpit-style dashboard",
                            description="Draw the Cockpit-style dashboard of one run (step "
                            "size, gradients and curvature instruments, learning rate, "
                            "performance) into an image. The format follows the suffix: "
                            ".png, .svg or .pdf.")
    p.add_argument("run", metavar="RUN", help="a run record file, or a run id in --results")
    p.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                   help="where to look up a run id, subdirectories included "
                   "(default: results/)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="output image (default: <run_id>-dashboard.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"validate": _validate, "schema": _schema, "run": _run, "table": _table,
               "import": _import, "baselines": _baselines, "inspect": _inspect,
               "submit": _submit, "verify": _verify,
               "report": _report, "scores": _scores}
    try:
        return handler[args.command](args)
    except SpecError as exc:
        _print_issues(exc.issues)
        return EXIT_INVALID
    except UserError as exc:
        print(f"obsbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print(f"obsbench {args.command}: interrupted", file=sys.stderr)
        return 130


def _print_issues(issues: Sequence[Issue]) -> None:
    for issue in issues:
        print(issue, file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    from obsbench.catalog import validate_paths

    checked, issues = validate_paths(args.paths)
    if args.pipeline is not None and not issues:
        issues = _pipeline_issues(args.pipeline, args.paths)
    if issues:
        _print_issues(issues)
        files = len({i.file for i in issues})
        print(f"{len(issues)} problem(s) in {files} file(s); {checked} file(s) checked",
              file=sys.stderr)
        return EXIT_INVALID
    print(f"{checked} spec file(s) valid")
    return 0


def _pipeline_issues(params: Path, paths: Sequence[Path]) -> list[Issue]:
    """Problems of a DVC params file: its ``suite`` must list exactly its ``optimizers``
    (the pipeline runs one stage per entry of the latter)."""
    import yaml

    from obsbench.catalog import load_catalog
    from obsbench.suite import Benchmark

    try:
        doc = yaml.safe_load(params.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--pipeline: cannot read {params}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("suite"), str) \
            or not isinstance(doc.get("optimizers"), list):
        raise UserError(f"--pipeline: {params} needs `suite` (a suite id) and `optimizers` "
                        "(a list of optimizer ids)")
    root = next((p for p in paths if (p / "suites").is_dir()), Path("specs"))
    catalog = load_catalog(root)
    suite = catalog.get("suites", doc["suite"])  # raises with a suggestion if unknown
    assert isinstance(suite, Benchmark)
    shown = catalog.entries["suites"][doc["suite"]].display
    wanted = [str(o) for o in doc["optimizers"]]
    issues = [Issue(str(params), None, ("optimizers",), f"'{name}' is not in suite "
                    f"{doc['suite']}'s optimizers ({shown}); list it in both")
              for name in wanted if name not in suite.optimizers]
    issues += [Issue(shown, None, ("optimizers",), f"'{name}' is not in {params}'s "
                     "optimizers, so `dvc repro` would not run it; list it in both")
               for name in suite.optimizers if name not in wanted]
    return issues


def _schema(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter

    from obsbench.catalog import FAMILIES

    schemas = {name: TypeAdapter(f.union).json_schema() for name, f in FAMILIES.items()}
    if args.out is None:
        print(json.dumps(schemas, indent=1))
        return 0
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out}: exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"obsbench {FAMILIES[name].noun} spec"
        (args.out / f"{name}.schema.json").write_text(json.dumps(schema, indent=1) + "\n")
    print(f"wrote {len(schemas)} schemas to {args.out}/")
    return 0


def _resolve_suite(suite: str, specs: Path) -> tuple[Path, str]:
    """(spec root, suite id) for a suite given by id or by path."""
    path = Path(suite)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise UserError(f"{suite}: no such suite file")
        if path.parent.name != "suites":
            raise UserError(f"{suite}: a suite file must be in a suites/ directory")
        return path.parent.parent, path.stem
    if not specs.is_dir():
        raise UserError(f"{specs}: spec root not found (set --specs)")
    return specs, suite


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UserError(f"--workers: must be at least 1 (got {args.workers})")
    from obsbench.catalog import load_catalog
    from obsbench.results import RecordError, read_records, write_selection
    from obsbench.suite import Benchmark, expand, plan, select

    root, suite_id = _resolve_suite(args.suite, args.specs)
    catalog = load_catalog(root)
    if f"suites/{suite_id}" in catalog.invalid:
        shown = catalog.invalid[f"suites/{suite_id}"]
        raise SpecError([i for i in catalog.issues if i.file == shown])
    suite = catalog.get("suites", suite_id)  # raises with a suggestion if unknown
    assert isinstance(suite, Benchmark)
    # only problems in the suite's own file and the specs it uses stop it
    involved = {catalog.entries["suites"][suite_id].display}
    involved |= {catalog.invalid[key] for _, family, ref in suite.references()
                 if (key := f"{family}/{ref}") in catalog.invalid}
    relevant = [i for i in catalog.issues if i.file in involved]
    if relevant:
        raise SpecError(relevant)
    only: str | None = args.optimizer
    if only is not None and only not in suite.optimizers:
        raise UserError(f"--optimizer: '{only}' is not in suite {suite_id}'s optimizers "
                        f"({', '.join(suite.optimizers)}); add it to "
                        f"{catalog.entries['suites'][suite_id].display}")
    if args.plan is not None:
        args.plan.mkdir(parents=True, exist_ok=True)
        for name in [only] if only else suite.optimizers:
            payload = plan(suite_id, catalog, name, tiny=args.tiny)
            (args.plan / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote the plans of {1 if only else len(suite.optimizers)} optimizer(s) "
              f"to {args.plan}/")
        return 0
    results = args.results or Path("results") / suite_id
    workers = _workers(args.workers)
    name = f"{suite_id} {only}" if only else suite_id
    code = _sweep(expand(suite_id, catalog, tiny=args.tiny, optimizer=only), results, workers,
                  name)
    if code == 130:
        return code
    # second phase: choose each problem and optimizer's best trial, then re-run it
    try:
        choices, reruns = select(suite_id, catalog, read_records(results), tiny=args.tiny,
                                 optimizer=only)
    except RecordError as exc:
        raise UserError(str(exc)) from None
    write_selection(results, choices)
    if reruns:
        rerun_code = _sweep(reruns, results, workers, f"{name} re-runs")
        code = rerun_code if rerun_code else code
    return code


def _workers(requested: int) -> int:
    """At most one worker per core: more would only oversubscribe the machine."""
    from obsbench.executors import available_cores

    cores = available_cores()
    if requested > cores:
        print(f"obsbench run: note: {requested} workers requested but {cores} cores "
              f"available; using {cores}", file=sys.stderr)
    return min(requested, cores)


def _sweep(runs: list[RunSpec], results: Path, workers: int, name: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obsbench.executors import run_local

    counts: Counter[str] = Counter()
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[summary]}"))
    unique = len({r.run_id for r in runs})
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task(name, total=unique, summary="")
        try:
            for outcome in run_local(runs, results, workers):
                counts[outcome.status] += 1
                summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                progress.update(task, advance=1, summary=summary)
        except KeyboardInterrupt:
            done = sum(counts.values())
            print(f"obsbench run: interrupted after {done} of {unique} runs; run the same "
                  "command again to resume", file=sys.stderr)
            return 130
    summary = ", ".join(f"{counts[k]} {k}" for k in ("ok", "diverged", "failed", "skipped"))
    print(f"{name}: {unique} runs ({summary}) in {results}/")
    if counts["failed"]:
        print(f"obsbench run: {counts['failed']} run(s) failed; their records in {results}/ "
              "give the error", file=sys.stderr)
        return 1
    return 0


def _table(args: argparse.Namespace) -> int:
    import pandas as pd

    from obsbench.results import RecordError, build_table, read_records, record_paths, write_table

    directories: list[Path] = args.directory
    out: Path = args.out or directories[0] / f"{args.table}.parquet"
    if out.suffix not in {".parquet", ".csv"}:
        raise UserError(f"--out: unknown table format '{out.suffix}' ({out}); "
                        "use .parquet or .csv")
    folders: list[Path] = []  # each with its own selection.json
    for directory in directories:
        if not directory.is_dir():
            raise UserError(f"{directory}: not a directory of run records")
        found = ([directory] if record_paths(directory) else
                 sorted(d for d in directory.iterdir() if d.is_dir() and record_paths(d)))
        if not found:
            raise UserError(f"{directory}: no run records (*.json) found, nor folders of them")
        folders += found
    try:
        frames = [build_table(args.table, list(read_records(d)), d) for d in folders]
    except RecordError as exc:
        raise UserError(str(exc)) from None
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if len(frames) > 1 and args.table == "runs":
        frame = frame.sort_values(["suite", "problem", "optimizer", "seed", "run_id"],
                                  ignore_index=True)
    write_table(frame, out)
    print(f"wrote {args.table} table ({len(frame)} rows) to {out}")
    return 0


def _scores(args: argparse.Namespace) -> int:
    from obsbench import report

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    try:
        tables, headline = report.score_tables([report.load_source(p) for p in args.results])
    except report.ReportError as exc:
        raise UserError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(headline, indent=1, sort_keys=True) + "\n")
    print(f"wrote {', '.join(tables)} (.csv) and metrics.json to {out}/")
    return 0


SKIPPED_SHOWN = 5
"""How many skipped files ``obsbench import`` names, one line each."""


def _import(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obsbench.importers import curves_table, minibatch_table, runs_table
    from obsbench.importers.deepobs import RUN_FILE, import_deepobs, run_files
    from obsbench.results import write_table

    root: Path = args.path
    if not root.exists():
        raise UserError(f"{root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory; give the folder that holds the run files")
    files = run_files(root)
    if not files:
        raise UserError(f"{root}: no DeepOBS run files ({RUN_FILE}) found")
    name = root.resolve().name
    out: Path = args.out or Path("results") / "imported" / name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # a bar only on a terminal: in logs the summary line says it all
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"import {name}", total=len(files))
        result = import_deepobs(root, files=files, suite=name, keep_minibatch=args.minibatch,
                                on_file=lambda _: progress.advance(task))
    for error in result.skipped[:SKIPPED_SHOWN]:
        print(f"obsbench import: skipped {error}", file=sys.stderr)
    if len(result.skipped) > SKIPPED_SHOWN:
        print(f"obsbench import: skipped {len(result.skipped) - SKIPPED_SHOWN} more file(s)",
              file=sys.stderr)
    if not result.runs:
        raise UserError(f"{root}: none of the {len(files)} run files could be read")
    try:
        write_table(runs_table(result.runs), out / "runs.parquet")
        write_table(curves_table(result.runs), out / "curves.parquet")
        if args.minibatch:
            write_table(minibatch_table(result.runs), out / "minibatch.parquet")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the tables: {exc.strerror or exc}") from None
    status = Counter(r.status for r in result.runs)
    by_status = ", ".join(f"{status[s]} {s}" for s in ("ok", "diverged", "failed") if status[s])
    inconsistent = sum(not r.consistent for r in result.runs)
    print(f"{name}: imported {len(result.runs)} runs ({by_status}), {inconsistent} "
          f"inconsistent, {len(result.skipped)} file(s) skipped as unreadable; tables in {out}/")
    return 0


def _baselines(args: argparse.Namespace) -> int:
    from obsbench import baselines

    if args.action == "freeze":
        from obsbench.catalog import load_catalog

        catalog = load_catalog(args.specs)
        if catalog.issues:
            raise SpecError(catalog.issues)
        catalog.get("suites", args.suite)
        results = args.results or Path("results") / args.suite
        if not results.is_dir():
            raise UserError(f"{results}: no run records; run `obsbench run {args.suite}` first")
        command = f"obsbench run {args.suite} && obsbench baselines freeze {args.suite}"
        try:
            frozen = baselines.freeze(args.suite, catalog, results, args.dir, command)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(f"froze {frozen.name}: {frozen.runs} runs into {frozen.path}/")
        return 0
    found = baselines.available(args.dir)
    if not found:
        print(f"no baselines in {args.dir}/")
        return 0
    print(f"{'baseline':<28} {'runs':>6}  {'problems':<40} {'optimizers':>10}  obsbench  created")
    for b in found:
        problems = ", ".join(b.meta.get("problems", []))
        problems = problems if len(problems) <= 40 else problems[:37] + "..."
        print(f"{b.name:<28} {b.runs:>6}  {problems:<40} {len(b.meta.get('optimizers', [])):>10}"
              f"  {b.meta.get('obsbench', '?'):<8}  {b.meta.get('created', '?')[:10]}")
    return 0


DASHBOARD_FORMATS = {".png", ".svg", ".pdf"}


def _inspect(args: argparse.Namespace) -> int:
    out: Path | None = args.out
    if out is not None and out.suffix.lower() not in DASHBOARD_FORMATS:
        suffix = f"'{out.suffix}'" if out.suffix else "(no suffix)"
        raise UserError(f"--out: unknown image format {suffix} ({out}); "
                        "use .png, .svg or .pdf")
    from obsbench.results import RECORD_NAME, RecordError, read_record

    path = Path(args.run)
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: not a record file")
    if not path.exists():
        if not RECORD_NAME.match(f"{args.run}.json"):
            raise UserError(f"{args.run}: no such record file, nor a run id (16 hex digits)")
        if not args.results.is_dir():
            raise UserError(f"{args.results}: no such results directory to look up run "
                            f"{args.run} in (set --results)")
        found = sorted(args.results.rglob(f"{args.run}.json"))
        if not found:
            raise UserError(f"{args.run}: no record of this run id in {args.results}/")
        path = found[0]
    try:
        record = read_record(path)
    except RecordError as exc:
        raise UserError(str(exc)) from None
    from obsbench.plots import dashboard

    out = out or Path(f"{record.run_id}-dashboard.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        dashboard(record).savefig(out, format=out.suffix.lower()[1:])
    except OSError as exc:
        raise UserError(f"{out}: cannot write the dashboard: {exc.strerror or exc}") from None
    print(f"wrote dashboard of {record.run_id} to {out}")
    return 0



def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from obsbench import report
    from obsbench.report.provenance import command_line

    paths: list[Path] = list(args.results)
    names = [p.resolve().name for p in paths]
    baseline: str | None = args.baseline
    if baseline is not None and baseline not in names:
        folder = args.baselines / baseline
        if not (folder / "runs.parquet").is_file():
            raise UserError(f"--baseline: '{baseline}' is neither a RESULTS folder nor a "
                            f"baseline in {args.baselines}/")
        paths.append(folder)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out: {args.out} exists and is not a directory")
    out: Path = args.out or Path("reports") / (
        names[0] + (f"-vs-{baseline}" if baseline and baseline != names[0] else ""))
    console = Console(stderr=True)
    with console.status("reading results", spinner="line") as status:
        try:
            sources = [report.load_source(p) for p in paths]
            status.update("scoring and drawing")
            built = report.build(sources, baseline=baseline, commands=[command_line()],
                                 specs_root=args.specs, title=args.title)
            status.update("rendering HTML" + ("" if args.no_pdf else " and PDF"))
            written = report.write(built, out, pdf=not args.no_pdf)
        except report.ReportError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from obsbench.submission import SubmissionError, submit

    try:
        done = submit(args.optimizer, specs=args.specs, results=args.results, suite=args.suite,
                      out=args.out)
    except SubmissionError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {done.path}/: {done.runs} runs, {done.specs} specs")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obsbench.submission import SubmissionError, verify

    sample: int | None
    if args.sample == "all":
        sample = None
    else:
        try:
            sample = int(args.sample)
        except ValueError:
            sample = -1
        if sample < 0:
            raise UserError(f"--sample: a number of runs or 'all' (got '{args.sample}')")
    if not args.rtol >= 0:
        raise UserError(f"--rtol: must be at least 0 (got {args.rtol})")
    if args.workers < 1:
        raise UserError(f"--workers: must be at least 1 (got {args.workers})")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("re-running", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = verify(args.bundle, trust=args.trust, sample=sample, seed=args.seed,
                            rtol=args.rtol, workers=args.workers, progress=progress)
        except SubmissionError as exc:
            raise UserError(str(exc)) from None
    print(result.verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
