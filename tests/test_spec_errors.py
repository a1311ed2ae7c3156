"""The corpus of invalid specs in ``tests/invalid_specs``: every file gets its exact message.

``tests/invalid_specs`` is a spec root. Each invalid file states the lines that
``obsbench validate`` must print for it in leading ``# expect:`` comments (paths relative to
the corpus root, where the tests run); the ``ok_*`` specs are valid and exist so that the
suites' dangling references dangle for the reason each file names. Two entries cannot carry
comments, so their expectations are in :data:`UNCOMMENTED`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from obsbench.catalog import FAMILIES
from obsbench.cli import main

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "invalid_specs"
EXPECT = "# expect: "

UNCOMMENTED: dict[str, list[str]] = {
    # A truly 0-byte file.
    "problems/empty.yaml": ["problems/empty.yaml: empty file; expected a problem spec"],
    # A directory where a spec file is expected (kept in git by a .gitkeep inside).
    "optimizers/folder.yaml": ["optimizers/folder.yaml: is a directory, expected a YAML file"],
}
LINE = re.compile(r"^[^:]+\.ya?ml:(\d+:)? \S")
SUMMARY = re.compile(r"^(\d+) problem\(s\) in (\d+) file\(s\); (\d+) file\(s\) checked$")


def corpus_entries() -> list[str]:
    """Every spec file (or ``*.yaml`` directory) of the corpus, relative to its root."""
    return sorted(p.relative_to(CORPUS).as_posix() for family in FAMILIES
                  for p in (CORPUS / family).iterdir() if p.suffix in {".yaml", ".yml"})


def expectations(name: str) -> list[str]:
    """The lines ``obsbench validate`` must print for one corpus entry, in order."""
    if name in UNCOMMENTED:
        return UNCOMMENTED[name]
    text = (CORPUS / name).read_bytes().decode("utf-8", errors="replace")
    return [line[len(EXPECT):] for line in text.splitlines() if line.startswith(EXPECT)]


VALID = [n for n in corpus_entries() if Path(n).name.startswith("ok_") and not expectations(n)]
INVALID = {n: expectations(n) for n in corpus_entries() if n not in VALID}


@pytest.fixture
def in_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the corpus root, with ``tests.corpus_helpers`` importable."""
    monkeypatch.chdir(CORPUS)
    monkeypatch.syspath_prepend(str(REPO))


def test_corpus_has_at_least_30_invalid_files() -> None:
    assert len(INVALID) >= 30


def test_every_corpus_file_states_its_errors() -> None:
    """Every file not named ``ok_*`` states what it expects."""
    assert [n for n, lines in INVALID.items() if not lines] == []
    assert (CORPUS / "problems/empty.yaml").read_bytes() == b""
    assert (CORPUS / "optimizers/folder.yaml").is_dir()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_spec_gives_its_expected_lines(
        name: str, in_corpus: None, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", name])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2
    assert out == ""
    *lines, summary = err.splitlines()
    assert lines == INVALID[name]
    assert SUMMARY.match(summary), summary
    assert summary == f"{len(lines)} problem(s) in 1 file(s); 1 file(s) checked"


def test_valid_corpus_specs_validate(in_corpus: None, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", *VALID])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out == f"{len(VALID)} spec file(s) valid\n"


def test_whole_corpus_through_the_console_script() -> None:
    """One process over the whole corpus: every expected line, nothing else, no traceback."""
    script = Path(sys.executable).with_name("obsbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "obsbench.cli"]
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([*command, "validate", "."], cwd=CORPUS, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": pythonpath})
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2, proc.stderr
    *lines, summary = proc.stderr.splitlines()
    assert [line for line in lines if not LINE.match(line)] == []
    expected = [line for name in sorted(INVALID) for line in INVALID[name]]
    assert sorted(lines) == sorted(expected)
    assert summary == (f"{len(expected)} problem(s) in {len(INVALID)} file(s); "
                       f"{len(INVALID) + len(VALID)} file(s) checked")


def test_shipped_specs_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(REPO / "specs")])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert re.fullmatch(r"\d+ spec file\(s\) valid\n", out)


def test_path_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "specs/optimizers/adam.yaml"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [
        "specs/optimizers/adam.yaml: no such file or directory",
        "1 problem(s) in 1 file(s); 0 file(s) checked",
    ]


def test_file_outside_a_family_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "adam.yaml").write_text("kind: adam\nlr: 0.001\n")
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "adam.yaml"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [
        "adam.yaml: not inside a spec family directory; put it in one of: problems/, "
        "optimizers/, tuning/, instruments/, suites/",
        "1 problem(s) in 1 file(s); 0 file(s) checked",
    ]


def test_directory_without_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a spec\n")
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "."])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [
        ".: no spec files (*.yaml) found",
        "1 problem(s) in 1 file(s); 0 file(s) checked",
    ]
