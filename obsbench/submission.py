"""Submissions: a bundle of one optimizer's runs in one suite, and its verification.

A bundle is a directory::

    manifest.json            format, versions, optimizer, suite, and every file's sha256
    environment.json         where the runs ran (and where the bundle was made)
    specs/<family>/<id>.yaml the optimizer, the suite (narrowed to that optimizer) and every
                             problem, tuning and instrument spec the suite names
    runs/<run_id>.json       the run records of the optimizer in the suite
    runs/selection.json      its tuning choices (so that runs/ is a results folder)

:func:`submit` writes one from a finished ``obsbench run``; :func:`verify` checks one without
trusting it: file layout (no absolute paths, ``..``, links or oversize files), checksums,
spec validity, that every record is the run its specs define (run id = hash of the resolved
spec), that each record agrees with itself, and then re-runs a random sample of the runs and
compares the per-epoch curves within a tolerance.

Why a tolerance: on CPU a run is deterministic (same spec, same bits), but only on the same
kind of machine with the same number of threads; another CPU, thread count or BLAS sums in
another order and moves the last digits. ``rtol = 1e-5`` allows that rounding drift, which
stays many orders of magnitude below any difference between optimizers or settings.

Nothing here imports a submitter's code unless ``trust`` is given: a ``kind: import``
optimizer is refused from the raw YAML and JSON, before any spec or record is parsed (parsing
an ``import`` spec imports its target).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

import obsbench
from obsbench.results import sha256_file

FORMAT = 1
"""Version of the bundle layout; :func:`verify` accepts this one only."""
MANIFEST = "manifest.json"
ENVIRONMENT = "environment.json"
MAX_FILE_BYTES = 64 * 2**20
"""Largest file a bundle may hold (64 MiB): a run record is kilobytes to a few megabytes."""
RTOL = 1e-5
ATOL = 1e-8
DEFAULT_SAMPLE = 2
FINISHED = ("ok", "diverged")
_DRIVE = re.compile(r"^[A-Za-z]:")
_RUN_FILE = re.compile(r"^runs/([0-9a-f]{16}|selection)\.json$")
_SPEC_FILE = re.compile(r"^specs/(problems|optimizers|tuning|instruments|suites)/"
                        r"[A-Za-z0-9_.-]+\.ya?ml$")


class SubmissionError(Exception):
    """A bundle cannot be written, or fails verification: one line naming the file or field."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str
    bytes: int


class Manifest(BaseModel):
    """``manifest.json``: what the bundle is, and a checksum of every other file in it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    obsbench: str
    optimizer: str
    suite: str
    tiny: bool
    created: str
    environment: dict[str, Any]
    files: list[FileEntry]


@dataclass(frozen=True)
class Submitted:
    path: Path
    runs: int
    specs: int


@dataclass
class Verification:
    """The outcome of a successful :func:`verify`."""

    optimizer: str
    suite: str
    runs: int
    rerun: list[str]
    rtol: float
    atol: float
    trusted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return (f"verified: {self.runs} runs, checksums ok, specs valid, {len(self.rerun)} of "
                f"{self.runs} re-run within rtol {self.rtol:g}")


def checksums(bundle: Path) -> list[FileEntry]:
    """A :class:`FileEntry` for every file of ``bundle`` but the manifest, sorted by path."""
    entries = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        if rel != MANIFEST:
            entries.append(FileEntry(path=rel, sha256=sha256_file(path),
                                     bytes=path.stat().st_size))
    return entries


def write_manifest(bundle: Path, manifest: Manifest) -> None:
    (bundle / MANIFEST).write_text(manifest.model_dump_json(indent=1) + "\n")


def read_manifest(bundle: Path) -> Manifest:
    """Parse ``bundle/manifest.json`` (no other check).

    Raises:
        SubmissionError: missing, unreadable or not the schema.
    """
    path = bundle / MANIFEST
    if not path.is_file():
        raise SubmissionError(f"{MANIFEST}: missing; {bundle} is not a submission bundle")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise SubmissionError(f"{MANIFEST}: {where}: {error['msg']}") from None
    except OSError as exc:
        raise SubmissionError(f"{MANIFEST}: cannot read: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------ submit


def _expected(suite_id: str, optimizer: str, catalog: Any, records: list[Any],
              tiny: bool) -> tuple[list[Any], list[Any]]:
    """The RunSpecs of ``optimizer`` in the suite (first phase and re-runs of the chosen
    trial), and its tuning choices."""
    from obsbench.suite import expand, select

    first = [r for r in expand(suite_id, catalog, tiny) if r.optimizer_id == optimizer]
    choices, reruns = select(suite_id, catalog, records, tiny)
    unique = {r.run_id: r for r in [*first, *(r for r in reruns if r.optimizer_id == optimizer)]}
    return list(unique.values()), [c for c in choices if c.optimizer == optimizer]


def submit(optimizer: str, *, specs: Path, results: Path | None = None,
           suite: str | None = None, out: Path | None = None) -> Submitted:
    """Write the bundle of ``optimizer``'s runs in ``suite`` (records in ``results``).

    ``results`` defaults to ``results/<suite>``; ``suite`` to the one suite the records of
    ``optimizer`` in ``results`` name; ``out`` to ``submissions/<optimizer>-<suite>``.

    Raises:
        SubmissionError: unknown optimizer or suite, missing runs, or an existing ``out``.
        SpecError: the specs of the suite are invalid.
    """
    from obsbench.catalog import load_catalog
    from obsbench.results import RecordError, read_records, write_selection
    from obsbench.runner import environment
    from obsbench.spec import SpecError
    from obsbench.suite import Benchmark

    if results is None:
        if suite is None:
            raise SubmissionError("give --suite or --results: which runs to submit")
        results = Path("results") / suite
    if not results.is_dir():
        raise SubmissionError(f"{results}: no such results directory (set --results)")
    try:
        records = [r for r in read_records(results) if r.spec.optimizer_id == optimizer]
    except RecordError as exc:
        raise SubmissionError(str(exc)) from None
    if not records:
        raise SubmissionError(f"{results}: no runs of optimizer '{optimizer}'")
    if suite is None:
        named = sorted({r.spec.suite for r in records})
        if len(named) != 1:
            raise SubmissionError(f"{results}: runs of '{optimizer}' from {len(named)} suites "
                                  f"({', '.join(named)}); choose one with --suite")
        suite = named[0]
    tinies = {r.spec.tiny for r in records}
    if len(tinies) != 1:
        raise SubmissionError(f"{results}: runs of '{optimizer}' both tiny and full; submit "
                              "from a folder of one kind")
    tiny = tinies.pop()

    catalog = load_catalog(specs)
    spec = catalog.get("suites", suite)
    assert isinstance(spec, Benchmark)
    involved = {catalog.entries["suites"][suite].display} | {
        catalog.invalid[key] for _, family, ref in spec.references()
        if (key := f"{family}/{ref}") in catalog.invalid}
    relevant = [i for i in catalog.issues if i.file in involved]
    if relevant:
        raise SpecError(relevant)
    if optimizer not in spec.optimizers:
        raise SubmissionError(f"suite '{suite}' does not run optimizer '{optimizer}' "
                              f"(its optimizers: {', '.join(spec.optimizers)})")

    by_id = {r.run_id: r for r in records}
    expected, choices = _expected(suite, optimizer, catalog, records, tiny)
    missing = [r for r in expected
               if r.run_id not in by_id or by_id[r.run_id].status not in FINISHED]
    if missing:
        raise SubmissionError(
            f"{len(missing)} of {len(expected)} runs of '{optimizer}' in suite '{suite}' are "
            f"missing or failed in {results}/; run `obsbench run {suite}"
            f"{' --tiny' if tiny else ''}` to finish them")
    chosen = [by_id[r.run_id] for r in expected]

    out = out or Path("submissions") / f"{optimizer}-{suite}"
    if out.exists():
        raise SubmissionError(f"{out}: exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        narrowed = dict(yaml.safe_load(catalog.entries["suites"][suite].doc.path.read_text()))
        narrowed["optimizers"] = [optimizer]
        (tmp / "specs" / "suites").mkdir(parents=True)
        (tmp / "specs" / "suites" / f"{suite}.yaml").write_text(
            f"# suite '{suite}' narrowed to optimizer '{optimizer}' by obsbench submit\n"
            + yaml.safe_dump(narrowed, sort_keys=False))
        copied = 1
        for _, family, ref in Benchmark.model_validate(
                {**spec.model_dump(), "optimizers": [optimizer]}).references():
            source = catalog.entries[family][ref].doc.path
            target = tmp / "specs" / family / f"{ref}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied += 1
        (tmp / "runs").mkdir()
        for record in chosen:
            (tmp / "runs" / f"{record.run_id}.json").write_text(
                record.model_dump_json(indent=1))
        write_selection(tmp / "runs", choices)  # a bundle's runs/ is a results folder
        here = environment(_cpu()).model_dump()
        runs_env = Counter(json.dumps(r.environment.model_dump(), sort_keys=True)
                           for r in chosen)
        (tmp / ENVIRONMENT).write_text(json.dumps({
            "submitted_from": here,
            "runs": [{"count": n, **json.loads(e)} for e, n in runs_env.most_common()],
        }, indent=1) + "\n")
        write_manifest(tmp, Manifest(
            format=FORMAT, obsbench=obsbench.__version__, optimizer=optimizer, suite=suite,
            tiny=tiny, created=datetime.now(UTC).isoformat(timespec="seconds"),
            environment=here, files=checksums(tmp)))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Submitted(out, len(chosen), copied)


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


# ------------------------------------------------------------------------------ verify


def _walk(bundle: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``bundle`` as (posix path, lstat), links not followed."""
    for parent, dirs, files in os.walk(bundle, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(parent) / name
            yield path.relative_to(bundle).as_posix(), path.lstat()


def _check_files(bundle: Path) -> set[str]:
    """The bundle's regular files; refuses links, special files and oversize files."""
    found = set()
    for rel, info in _walk(bundle):
        if stat.S_ISLNK(info.st_mode):
            raise SubmissionError(f"{rel}: a symbolic link; a bundle holds regular files only")
        if stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{rel}: not a regular file; a bundle holds regular files "
                                  "only")
        if info.st_size > MAX_FILE_BYTES:
            raise SubmissionError(f"{rel}: {info.st_size} bytes, over the limit of "
                                  f"{MAX_FILE_BYTES // 2**20} MiB per file")
        found.add(rel)
    return found


def _check_path(index: int, path: str) -> None:
    where = f"{MANIFEST}: files[{index}].path '{path}'"
    if path.startswith("/") or _DRIVE.match(path):
        raise SubmissionError(f"{where}: an absolute path; bundle paths are relative")
    if "\\" in path:
        raise SubmissionError(f"{where}: has a backslash; bundle paths use '/'")
    parts = PurePosixPath(path).parts
    if ".." in parts:
        raise SubmissionError(f"{where}: has a '..' component; bundle paths stay inside it")
    if path != PurePosixPath(path).as_posix() or "." in path.split("/") or "" in path.split("/"):
        raise SubmissionError(f"{where}: not a normalised path")
    if not (path == ENVIRONMENT or _RUN_FILE.match(path) or _SPEC_FILE.match(path)):
        raise SubmissionError(f"{where}: not a bundle file (environment.json, "
                              "specs/<family>/<id>.yaml or runs/<run id>.json)")


def _imports(data: Any) -> str | None:
    """The target of the first ``kind: import`` anywhere in ``data``, if any."""
    if isinstance(data, dict):
        if data.get("kind") == "import":
            return str(data.get("target", "?"))
        values: Any = data.values()
    elif isinstance(data, list):
        values = data
    else:
        return None
    for value in values:
        found = _imports(value)
        if found is not None:
            return found
    return None


def _refuse_imports(bundle: Path, files: list[str]) -> None:
    """Refuse user code before anything parses a spec (which would import it)."""
    for rel in files:
        text = (bundle / rel).read_text(encoding="utf-8", errors="replace")
        try:
            data = yaml.safe_load(text) if rel.endswith((".yaml", ".yml")) else json.loads(text)
        except (yaml.YAMLError, ValueError):
            continue  # malformed: the spec or record check reports it, without importing
        target = _imports(data)
        if target is not None:
            raise SubmissionError(f"{rel}: kind: import runs the submitter's code ('{target}'); "
                                  "pass --trust to allow it")


def verify(bundle: Path, *, trust: bool = False, sample: int | None = DEFAULT_SAMPLE,
           seed: int = 0, rtol: float = RTOL, atol: float = ATOL, workers: int = 1,
           progress: Callable[[int, int], None] | None = None) -> Verification:
    """Check ``bundle`` and re-run ``sample`` of its runs (None: all).

    Args:
        trust: allow ``kind: import`` specs (their code is imported and run).
        sample: how many runs to re-run, drawn with ``numpy.random.default_rng(seed)``.
        progress: called with (runs done, runs to re-run) as re-runs finish.

    Raises:
        SubmissionError: the first problem found, in one line.
    """
    if not bundle.is_dir():
        raise SubmissionError(f"{bundle}: not a directory")
    present = _check_files(bundle)
    manifest = read_manifest(bundle)
    if manifest.format != FORMAT:
        raise SubmissionError(f"{MANIFEST}: format {manifest.format}; this obsbench reads "
                              f"format {FORMAT}")
    listed: dict[str, FileEntry] = {}
    for index, entry in enumerate(manifest.files):
        _check_path(index, entry.path)
        if entry.path in listed:
            raise SubmissionError(f"{MANIFEST}: files[{index}].path '{entry.path}': listed "
                                  "twice")
        listed[entry.path] = entry
    for path, entry in listed.items():
        if path not in present:
            raise SubmissionError(f"{path}: listed in {MANIFEST} but missing")
        actual = bundle / path
        if sha256_file(actual) != entry.sha256:
            raise SubmissionError(f"{path}: sha256 mismatch with {MANIFEST}")
        if actual.stat().st_size != entry.bytes:
            raise SubmissionError(f"{path}: {actual.stat().st_size} bytes, but {MANIFEST} says "
                                  f"{entry.bytes}")
    unlisted = sorted(present - set(listed) - {MANIFEST})
    if unlisted:
        raise SubmissionError(f"{unlisted[0]}: not listed in {MANIFEST}")

    if not trust:  # specs first, so that the refusal names the spec
        _refuse_imports(bundle, sorted(listed, key=lambda p: (not p.startswith("specs/"), p)))

    records = _check_specs_and_records(bundle, manifest)
    result = Verification(manifest.optimizer, manifest.suite, len(records), [], rtol, atol,
                          trusted=trust)
    ids = sorted(records)
    count = len(ids) if sample is None else max(0, min(sample, len(ids)))
    rng = np.random.default_rng(seed)
    result.rerun = sorted(ids[i] for i in rng.choice(len(ids), size=count, replace=False))
    if result.rerun:
        _rerun([records[i] for i in result.rerun], rtol, atol, workers, progress)
    return result


def _check_specs_and_records(bundle: Path, manifest: Manifest) -> dict[str, Any]:
    """Validate the specs, then every record against them; returns records by run id."""
    from obsbench.catalog import load_catalog
    from obsbench.results import (
        SELECTION,
        RecordError,
        read_record,
        read_selection,
        record_paths,
    )
    from obsbench.spec import SpecError
    from obsbench.suite import Benchmark

    catalog = load_catalog(bundle / "specs", display_base=bundle)
    if catalog.issues:
        more = f" (and {len(catalog.issues) - 1} more)" if len(catalog.issues) > 1 else ""
        raise SubmissionError(f"invalid spec: {catalog.issues[0]}{more}")
    try:
        suite = catalog.get("suites", manifest.suite)
        catalog.get("optimizers", manifest.optimizer)
    except SpecError as exc:
        raise SubmissionError(f"{MANIFEST}: {exc.issues[0].message}") from None
    assert isinstance(suite, Benchmark)
    if manifest.optimizer not in suite.optimizers:
        raise SubmissionError(f"specs/suites/{manifest.suite}.yaml: does not run optimizer "
                              f"'{manifest.optimizer}'")

    records = {}
    for path in record_paths(bundle / "runs"):
        rel = f"runs/{path.name}"
        try:
            record = read_record(path)
        except RecordError as exc:
            raise SubmissionError(f"{rel}: {str(exc).split(': ', 1)[1]}") from None
        if record.run_id != path.stem:
            raise SubmissionError(f"{rel}: run_id '{record.run_id}' differs from its file name")
        if record.spec.run_id != record.run_id:
            raise SubmissionError(f"{rel}: run_id does not match its spec (the hash of the "
                                  f"spec is {record.spec.run_id}); the spec was changed")
        if record.spec.optimizer_id != manifest.optimizer:
            raise SubmissionError(f"{rel}: a run of optimizer '{record.spec.optimizer_id}', "
                                  f"not '{manifest.optimizer}'")
        problem = _inconsistent(record)
        if problem:
            raise SubmissionError(f"{rel}: {problem}")
        records[record.run_id] = record
    if not records:
        raise SubmissionError("runs/: no run records")

    runs, choices = _expected(manifest.suite, manifest.optimizer, catalog,
                              list(records.values()), manifest.tiny)
    expected = {r.run_id: r for r in runs}
    for run_id in sorted(records):
        if run_id not in expected:
            raise SubmissionError(
                f"runs/{run_id}.json: not a run of suite '{manifest.suite}' as the bundle's "
                "specs define it (a spec or hyperparameter differs)")
    for run_id in sorted(expected):
        if run_id not in records:
            raise SubmissionError(f"runs/{run_id}.json: a run of the suite, missing from the "
                                  "bundle")
    try:
        stated = read_selection(bundle / "runs")
    except (ValueError, TypeError) as exc:
        raise SubmissionError(f"runs/{SELECTION}: not a list of tuning choices: "
                              f"{str(exc).splitlines()[0]}") from None
    if stated != choices:
        raise SubmissionError(f"runs/{SELECTION}: differs from the tuning choices its records "
                              "give")
    return records


def _inconsistent(record: Any) -> str | None:
    """Why a record disagrees with itself, if it does."""
    if record.status not in FINISHED:
        return f"status '{record.status}'; a bundle holds finished runs only"
    lengths = {len(v) for metrics in record.curves.values() for v in metrics.values()}
    if not record.curves or len(lengths) != 1:
        return "curves of different lengths (or none)"
    losses, steps = len(record.minibatch_losses), record.timings.steps
    if record.status == "ok":
        _, epochs = record.spec.problem.sizes(record.spec.tiny)
        if lengths != {epochs + 1}:
            return (f"curves hold {lengths.pop()} evaluations, but the spec asks for "
                    f"{epochs} epochs (+1 at the start)")
        if losses != steps:
            return f"{losses} minibatch losses but timings.steps = {steps}"
    elif record.diverged_step != losses - 1:
        return f"diverged_step {record.diverged_step} but {losses} minibatch losses"
    return None


def _rerun(records: list[Any], rtol: float, atol: float, workers: int,
           progress: Callable[[int, int], None] | None) -> None:
    from obsbench.executors import available_cores, run_local
    from obsbench.results import read_record, record_path

    if progress:
        progress(0, len(records))
    workers = max(1, min(workers, available_cores()))
    if workers == 1:  # in this process, with every core's threads, as `obsbench run` does
        for done, old in enumerate(records, start=1):
            _compare(old, _run_here(old.spec), rtol, atol)
            if progress:
                progress(done, len(records))
        return
    by_id = {r.run_id: r for r in records}
    with tempfile.TemporaryDirectory(prefix="obsbench-verify-") as tmp:
        directory = Path(tmp)
        outcomes = run_local([r.spec for r in records], directory, workers)
        for done, outcome in enumerate(outcomes, start=1):
            fresh = read_record(record_path(directory, outcome.run_id))
            _compare(by_id[outcome.run_id], fresh, rtol, atol)
            if progress:
                progress(done, len(records))


def _run_here(spec: Any) -> Any:
    import torch

    from obsbench.executors import threads_per_worker
    from obsbench.runner import run

    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(1))
    try:
        return run(spec)
    finally:
        torch.set_num_threads(threads)


def _compare(old: Any, new: Any, rtol: float, atol: float) -> None:
    where = f"re-run of {old.run_id}"
    if new.status != old.status:
        detail = f" ({new.error})" if new.error else ""
        raise SubmissionError(f"{where}: status '{new.status}'{detail}, the bundle says "
                              f"'{old.status}'")
    for split, metrics in sorted(old.curves.items()):
        for metric, values in sorted(metrics.items()):
            fresh = new.curves.get(split, {}).get(metric)
            if fresh is None or len(fresh) != len(values):
                raise SubmissionError(f"{where}: {split} {metric}: "
                                      f"{0 if fresh is None else len(fresh)} evaluations, the "
                                      f"bundle has {len(values)}")
            a, b = np.asarray(values, dtype=float), np.asarray(fresh, dtype=float)
            bad = np.flatnonzero(~np.isclose(b, a, rtol=rtol, atol=atol, equal_nan=True))
            if bad.size:
                e = int(bad[0])
                raise SubmissionError(
                    f"{where}: {split} {metric} at epoch {e}: bundle {a[e]!r}, re-run "
                    f"{b[e]!r} (beyond rtol {rtol:g}, atol {atol:g})")
