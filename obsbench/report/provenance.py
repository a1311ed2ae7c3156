"""Provenance of a report: what produced it, from which inputs, on which machine.

Everything here is read, never computed from results: the obsbench version and the git
commit of the working tree (with a flag when it has uncommitted changes), the SHA-256 of
every spec file the results name, the digest of ``dvc.lock`` when the report is made inside a
DVC project, the hardware and the versions of the packages that score and draw.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from obsbench.results import sha256_file

PACKAGES = ("obsbench", "torch", "numpy", "pandas", "pyarrow", "matplotlib", "tueplots",
            "jinja2", "weasyprint", "pydantic", "dvc")
"""Packages whose versions the report lists."""
FAMILIES = ("suites", "problems", "optimizers", "tuning", "instruments")


@dataclass(frozen=True)
class SpecFile:
    family: str
    id: str
    path: str
    sha256: str


@dataclass
class Provenance:
    """The facts of the provenance section (all plain strings, escaped by the template)."""

    obsbench: str
    git_commit: str | None
    git_dirty: bool
    dvc_lock: str | None
    """SHA-256 of ``dvc.lock`` where one exists in the working directory."""
    hardware: dict[str, str]
    packages: dict[str, str]
    commands: list[str]
    specs: list[SpecFile] = field(default_factory=list)
    missing_specs: list[str] = field(default_factory=list)
    """Ids the results name whose spec file is not under the spec root."""


def collect(*, commands: list[str], suites: set[str], problems: set[str],
            optimizers: set[str], specs_root: Path, root: Path) -> Provenance:
    """Provenance for results that name these suites, problems and optimizers.

    ``specs_root`` holds the spec files (``<family>/<id>.yaml``); the tuning and instrument
    specs are those the suite files name. ``root`` is the working directory whose git commit
    and ``dvc.lock`` are recorded.
    """
    wanted: dict[str, set[str]] = {"suites": set(suites), "problems": set(problems),
                                   "optimizers": set(optimizers), "tuning": set(),
                                   "instruments": set()}
    for suite in sorted(suites):
        path = specs_root / "suites" / f"{suite}.yaml"
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                continue
            if isinstance(data, dict):
                wanted["tuning"].add(str(data.get("tuning", "one_shot")))
                wanted["instruments"].update(str(i) for i in data.get("instruments") or [])
    specs, missing = [], []
    for family in FAMILIES:
        for spec_id in sorted(wanted[family]):
            path = specs_root / family / f"{spec_id}.yaml"
            if path.is_file():
                specs.append(SpecFile(family, spec_id, str(path), sha256_file(path)))
            else:
                missing.append(f"{family}/{spec_id}")
    commit, dirty = _git(root)
    lock = root / "dvc.lock"
    return Provenance(
        obsbench=_version("obsbench"), git_commit=commit, git_dirty=dirty,
        dvc_lock=sha256_file(lock) if lock.is_file() else None,
        hardware={"platform": platform.platform(), "machine": platform.machine(),
                  "processor": platform.processor() or platform.machine(),
                  "cores": str(os.cpu_count()), "python": platform.python_version()},
        packages={name: _version(name) for name in PACKAGES},
        commands=commands, specs=specs, missing_specs=missing)


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, as ``obsbench ...`` (argv[0] shortened to its name)."""
    args = list(sys.argv if argv is None else argv)
    name = Path(args[0]).name if args else "obsbench"
    name = "obsbench" if name in {"__main__.py", "obsbench"} else name
    return " ".join([name, *(_quote(a) for a in args[1:])])


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:@,+" for c in arg) else repr(arg)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(root: Path) -> tuple[str | None, bool]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, False
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), bool(status and status.strip())
