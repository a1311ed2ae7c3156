"""The catalog: every spec under a spec root (``specs/``), loaded, validated and cross-checked.

A spec root holds one directory per family; a file's stem is its id. Loading a root reports
every problem of every file at once, including references to ids that do not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from obsbench.instruments import InstrumentSpec
from obsbench.optimizers import Import, OptimizerSpec
from obsbench.problems import ProblemSpec
from obsbench.spec import (
    Document,
    Family,
    Issue,
    Spec,
    SpecError,
    choices,
    dotted,
    format_value,
    issues_from_validation,
    parse_spec,
    read_yaml,
)
from obsbench.suite import Benchmark, SuiteSpec
from obsbench.tuning import TuningBase, TuningSpec

FAMILIES: dict[str, Family] = {
    f.dirname: f
    for f in (
        Family("problems", "problem", ProblemSpec),
        Family("optimizers", "optimizer", OptimizerSpec),
        Family("tuning", "tuning", TuningSpec),
        Family("instruments", "instrument", InstrumentSpec),
        Family("suites", "suite", SuiteSpec),
    )
}
SUFFIXES = (".yaml", ".yml")
MAX_TRIALS = 10_000


@dataclass
class Entry:
    spec: Spec
    doc: Document
    display: str


@dataclass
class Catalog:
    """Valid specs by family and id, with the issues found while loading."""

    root: Path
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {name: {} for name in FAMILIES})
    issues: list[Issue] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)
    """``family/id`` -> displayed path, for every spec file that failed to load."""

    def get(self, family: str, spec_id: str) -> Spec:
        """The spec ``spec_id`` of ``family``.

        Raises:
            SpecError: no such spec (with a suggestion).
        """
        entries = self.entries[family]
        if spec_id not in entries:
            noun = FAMILIES[family].noun
            hint = choices(spec_id, sorted(entries), "known")
            raise SpecError([Issue(str(self.root / family), None, (),
                                   f"no {noun} '{spec_id}'{hint}")])
        return entries[spec_id].spec

    def ids(self, family: str) -> list[str]:
        return sorted(self.entries[family])


def family_of(path: Path) -> str | None:
    """The family directory a spec file belongs to (its parent's name), if any."""
    return path.parent.name if path.parent.name in FAMILIES else None


def spec_files(path: Path) -> list[Path]:
    """YAML files under ``path`` (itself if a file), sorted; directories named ``*.yaml`` too,
    so that they are reported instead of silently skipped."""
    if path.is_dir() and path.suffix not in SUFFIXES:
        return sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
    return [path]


def load_catalog(root: Path | str, display_base: Path | None = None) -> Catalog:
    """Load and check every spec under ``root``; problems land in ``catalog.issues``."""
    root = Path(root)
    catalog = Catalog(root)
    for family in FAMILIES.values():
        directory = root / family.dirname
        if not directory.is_dir():
            continue
        seen: dict[str, str] = {}
        for path in spec_files(directory):
            if path.parent != directory:
                continue
            display = _display(path, display_base)
            if path.stem in seen:
                catalog.issues.append(Issue(
                    display, None, (),
                    f"id '{path.stem}' is also defined by {seen[path.stem]}; ids must be unique"))
                continue
            seen[path.stem] = display
            try:
                doc = read_yaml(path, display)
                spec = parse_spec(family, doc, display)
            except SpecError as exc:
                catalog.issues += exc.issues
                catalog.invalid[f"{family.dirname}/{path.stem}"] = display
                continue
            catalog.entries[family.dirname][path.stem] = Entry(spec, doc, display)
    catalog.issues += _cross_check(catalog)
    return catalog


def _display(path: Path, base: Path | None) -> str:
    try:
        return str(path.relative_to(base)) if base else str(path)
    except ValueError:
        return str(path)


def _cross_check(catalog: Catalog) -> list[Issue]:
    issues: list[Issue] = []
    for entry in catalog.entries["suites"].values():
        suite = entry.spec
        assert isinstance(suite, Benchmark)
        broken = False
        for loc, family, ref in suite.references():
            if ref in catalog.entries[family]:
                continue
            broken = True
            noun = FAMILIES[family].noun
            if f"{family}/{ref}" in catalog.invalid:
                message = (f"{noun} '{ref}' is invalid (see the errors of "
                           f"{catalog.invalid[f'{family}/{ref}']})")
            else:
                known = sorted(catalog.entries[family])
                message = f"unknown {noun} '{ref}'{choices(ref, known, 'known')}"
                if loc not in entry.doc.lines:
                    message = (f"not set, and the default {noun} '{ref}' does not exist"
                               f"{choices(ref, known, 'known')}")
            issues.append(Issue(entry.display, entry.doc.line(loc), loc, message))
        if not broken:
            issues += _check_trials(catalog, entry, suite)
            issues += _check_sgd_only(catalog, entry, suite)
    return issues


SGD_ONLY = ("cabs", "early_stopping")
"""Instruments derived for plain SGD (no momentum): refused for suites with other optimizers."""


def _check_sgd_only(catalog: Catalog, entry: Entry, suite: Benchmark) -> list[Issue]:
    issues = []
    for index, name in enumerate(suite.instruments):
        kind = getattr(catalog.get("instruments", name), "kind", None)
        if kind not in SGD_ONLY:
            continue
        others = [o for o in suite.optimizers
                  if getattr(catalog.get("optimizers", o), "kind", None) != "sgd"]
        if others:
            loc = ("instruments", index)
            issues.append(Issue(entry.display, entry.doc.line(loc), loc,
                                f"instrument '{name}' ({kind}) is derived for plain SGD; "
                                f"this suite also runs optimizer '{others[0]}'"))
    return issues


def _check_trials(catalog: Catalog, entry: Entry, suite: Benchmark) -> list[Issue]:
    """Every trial of the suite's tuning must be a valid setting of every optimizer."""
    tuning = catalog.get("tuning", suite.tuning)
    assert isinstance(tuning, TuningBase)
    issues = []
    for index, optimizer_id in enumerate(suite.optimizers):
        optimizer = catalog.get("optimizers", optimizer_id)
        loc = ("optimizers", index)
        space = tuning.effective_space(optimizer.search_space)  # type: ignore[attr-defined]
        if not isinstance(optimizer, Import):
            unknown = [n for n in space if n not in optimizer.hyperparameters()]  # type: ignore[attr-defined]
            if unknown:
                allowed = ", ".join(optimizer.hyperparameters())  # type: ignore[attr-defined]
                issues.append(Issue(
                    entry.display, entry.doc.line(loc), loc,
                    f"tuning '{suite.tuning}' sets '{unknown[0]}', which optimizer "
                    f"'{optimizer_id}' does not have; its hyperparameters: {allowed}"))
                continue
        invalid = (f"tuning '{suite.tuning}' gives optimizer '{optimizer_id}' an invalid "
                   "setting")
        settings = tuning.trials(space)
        if len(settings) > MAX_TRIALS:
            issues.append(Issue(
                entry.display, entry.doc.line(loc), loc,
                f"tuning '{suite.tuning}' gives optimizer '{optimizer_id}' {len(settings)} "
                f"trials (more than {MAX_TRIALS}); lower the grid's points or use random"))
            continue
        for trial in settings:
            try:
                tuned = optimizer.with_hyperparameters(trial)  # type: ignore[attr-defined]
            except ValidationError as exc:
                first = issues_from_validation(exc, type(optimizer), entry.doc, entry.display)[0]
                got = f" (got {format_value(first.value)})" if first.show_value else ""
                issues.append(Issue(entry.display, entry.doc.line(loc), loc,
                                    f"{invalid} of {dotted(first.loc)}: {first.message}{got}"))
                break
            except ValueError as exc:
                issues.append(Issue(entry.display, entry.doc.line(loc), loc, str(exc)))
                break
            problems = tuned.check()
            if problems:
                issues.append(Issue(entry.display, entry.doc.line(loc), loc,
                                    f"{invalid}: {problems[0][1]}"))
                break
    return issues


def validate_paths(paths: Iterable[Path]) -> tuple[int, list[Issue]]:
    """Validate spec files and directories; returns (files checked, issues).

    A file is checked in the context of its spec root (the parent of its family directory),
    so references to other specs are resolved; a directory may be a spec root or a family
    directory.
    """
    issues: list[Issue] = []
    checked = 0
    seen_roots: dict[Path, Catalog] = {}
    for path in paths:
        if not path.exists():
            issues.append(Issue(str(path), None, (), "no such file or directory"))
            continue
        targets = spec_files(path) if path.is_dir() else [path]
        if path.is_dir() and path.suffix not in SUFFIXES and not targets:
            issues.append(Issue(str(path), None, (), "no spec files (*.yaml) found"))
        for target in targets:
            family = family_of(target)
            if family is None:
                issues.append(Issue(
                    str(target), None, (),
                    "not inside a spec family directory; put it in one of: "
                    + ", ".join(f"{name}/" for name in FAMILIES)))
                continue
            root = target.parent.parent.resolve()
            if root not in seen_roots:
                seen_roots[root] = load_catalog(root, Path.cwd())
            catalog = seen_roots[root]
            display = _display(target.resolve(), Path.cwd())
            issues += [i for i in catalog.issues if i.file == display]
            checked += 1
    unique = {str(issue): issue for issue in issues}
    return checked, list(unique.values())
