"""Submission bundles: ``obsbench submit`` writes one, ``obsbench verify`` accepts it honest
and rejects it tampered, each rejection in one line with exit code 2."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from obsbench import submission
from obsbench.cli import main
from obsbench.report import load_source
from obsbench.submission import checksums, read_manifest, write_manifest

SPECS = {
    "problems/quadratic_deep": "kind: quadratic_deep\n",
    "optimizers/sgd": "kind: sgd\nlr: 0.01\n",
    "optimizers/adam": "kind: adam\n",
    "optimizers/mine": "kind: import\ntarget: torch.optim.SGD\nlr: 0.02\n",
    "tuning/one_shot": "kind: one_shot\n",
    "suites/tiny": ("kind: benchmark\nproblems: [quadratic_deep]\noptimizers: [sgd, adam]\n"
                    "seeds: [42, 43]\nnum_epochs: 2\n"),
    "suites/custom": ("kind: benchmark\nproblems: [quadratic_deep]\noptimizers: [mine]\n"
                      "seeds: [42]\nnum_epochs: 2\n"),
}


def _write_specs(root: Path) -> Path:
    for name, text in SPECS.items():
        path = root / "specs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "specs"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An honest bundle of sgd in suite ``tiny`` (2 runs), and one of an import optimizer."""
    root = tmp_path_factory.mktemp("submission")
    specs = _write_specs(root)
    out = {"root": root, "specs": specs}
    for suite, optimizer in (("tiny", "sgd"), ("custom", "mine")):
        results = root / "results" / suite
        assert main(["run", suite, "--specs", str(specs), "--results", str(results),
                     "--tiny"]) == 0
        bundle = root / "submissions" / f"{optimizer}-{suite}"
        assert main(["submit", optimizer, "--specs", str(specs), "--results", str(results),
                     "--out", str(bundle)]) == 0
        out[suite] = bundle
    return out


@pytest.fixture
def bundle(made: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the honest sgd bundle, to tamper with."""
    return Path(shutil.copytree(made["tiny"], tmp_path / "bundle"))


def _rehash(bundle: Path) -> None:
    """What a careful forger does: update the manifest's checksums to the changed files."""
    manifest = read_manifest(bundle)
    manifest.files = checksums(bundle)
    write_manifest(bundle, manifest)


def _record(bundle: Path) -> Path:
    return sorted((bundle / "runs").glob("[0-9a-f]*.json"))[0]


def _verify(capsys: pytest.CaptureFixture[str], bundle: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", str(bundle), *args])
    captured = capsys.readouterr()
    return code, (captured.out if code == 0 else captured.err).strip()


def test_submit_writes_a_bundle_with_a_manifest_of_checksums(made: dict[str, Path]) -> None:
    bundle = made["tiny"]
    manifest = read_manifest(bundle)
    assert (manifest.optimizer, manifest.suite, manifest.tiny) == ("sgd", "tiny", True)
    listed = {f.path for f in manifest.files}
    assert listed == {f.path for f in checksums(bundle)}
    assert {"environment.json", "runs/selection.json", "specs/optimizers/sgd.yaml",
            "specs/problems/quadratic_deep.yaml", "specs/tuning/one_shot.yaml",
            "specs/suites/tiny.yaml"} < listed
    assert "specs/optimizers/adam.yaml" not in listed  # the suite is narrowed to sgd
    assert len([p for p in listed if p.startswith("runs/") and "selection" not in p]) == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_verify_accepts_an_honest_bundle_re_running_every_run(
        made: dict[str, Path], capsys: pytest.CaptureFixture[str], workers: str) -> None:
    code, line = _verify(capsys, made["tiny"], "--sample", "all", "--workers", workers)
    assert code == 0
    assert line == ("verified: 2 runs, checksums ok, specs valid, 2 of 2 re-run within "
                    "rtol 1e-05")


def test_submit_refuses_incomplete_runs(made: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    results = Path(shutil.copytree(made["root"] / "results" / "tiny", tmp_path / "results"))
    sgd = [p for p in results.glob("*.json") if '"optimizer_id": "sgd"' in p.read_text()]
    sgd[0].unlink()
    assert main(["submit", "sgd", "--specs", str(made["specs"]), "--results", str(results),
                 "--suite", "tiny", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("obsbench submit: error: 1 of 2 runs of 'sgd' in suite 'tiny' are "
                          "missing or failed")
    assert not (tmp_path / "b").exists()


def _change_value(bundle: Path) -> None:
    path = _record(bundle)
    data = json.loads(path.read_text())
    data["curves"]["test"]["loss"][-1] *= 1 + 1e-3
    path.write_text(json.dumps(data, indent=1))


def _drop_run(bundle: Path) -> None:
    _record(bundle).unlink()


def _edit_spec(bundle: Path) -> None:
    path = bundle / "specs" / "problems" / "quadratic_deep.yaml"
    path.write_text(path.read_text() + "# harmless?\n")


def _manifest_entry(path: str) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        manifest = read_manifest(bundle)
        manifest.files.append(submission.FileEntry(path=path, sha256="0" * 64, bytes=1))
        write_manifest(bundle, manifest)
    return tamper


def _link(bundle: Path) -> None:
    (bundle / "runs" / "shadow.json").symlink_to(_record(bundle))


def _extra(bundle: Path) -> None:
    (bundle / "specs" / "optimizers" / "extra.yaml").write_text("kind: adam\n")


def _bad_schema(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    del data["suite"]
    (bundle / "manifest.json").write_text(json.dumps(data))


def _invalid_spec(bundle: Path) -> None:
    (bundle / "specs" / "optimizers" / "sgd.yaml").write_text("kind: sgd\nlr: -0.01\n")
    _rehash(bundle)


def _changed_hyperparameter(bundle: Path) -> None:
    (bundle / "specs" / "optimizers" / "sgd.yaml").write_text("kind: sgd\nlr: 0.02\n")
    _rehash(bundle)


def _changed_record_spec(bundle: Path) -> None:
    path = _record(bundle)
    data = json.loads(path.read_text())
    data["spec"]["optimizer"]["lr"] = 0.02
    path.write_text(json.dumps(data, indent=1))
    _rehash(bundle)


def _inconsistent(bundle: Path) -> None:
    path = _record(bundle)
    data = json.loads(path.read_text())
    data["curves"]["test"]["loss"].pop()
    path.write_text(json.dumps(data, indent=1))
    _rehash(bundle)


REJECTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "changed result value": (_change_value, r"runs/[0-9a-f]{16}\.json: sha256 mismatch with "
                             r"manifest\.json"),
    "missing file": (_drop_run, r"runs/[0-9a-f]{16}\.json: listed in manifest\.json but "
                     "missing"),
    "checksum mismatch": (_edit_spec, r"specs/problems/quadratic_deep\.yaml: sha256 mismatch"),
    "path traversal": (_manifest_entry("runs/../../outside.json"),
                       r"manifest\.json: files\[\d+\]\.path 'runs/\.\./\.\./outside\.json': has "
                       r"a '\.\.' component"),
    "absolute path": (_manifest_entry("/etc/passwd"), r"files\[\d+\]\.path '/etc/passwd': an "
                      "absolute path"),
    "drive": (_manifest_entry("C:/x.json"), r"'C:/x\.json': an absolute path"),
    "backslash": (_manifest_entry("runs\\x.json"), "has a backslash"),
    "link": (_link, r"runs/shadow\.json: a symbolic link"),
    "unlisted file": (_extra, r"specs/optimizers/extra\.yaml: not listed in manifest\.json"),
    "manifest schema": (_bad_schema, r"manifest\.json: suite: Field required"),
    "invalid spec": (_invalid_spec, r"invalid spec: specs/optimizers/sgd\.yaml:2: lr: "
                     r"input should be greater than 0"),
    "changed hyperparameter": (_changed_hyperparameter, r"runs/[0-9a-f]{16}\.json: not a run "
                               r"of suite 'tiny' as the bundle's specs define it"),
    "record spec changed": (_changed_record_spec, r"runs/[0-9a-f]{16}\.json: run_id does not "
                            "match its spec"),
    "inconsistent record": (_inconsistent, r"runs/[0-9a-f]{16}\.json: curves of different "
                            "lengths"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_verify_rejects_a_tampered_bundle_in_one_line(
        case: str, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper, expected = REJECTIONS[case]
    tamper(bundle)
    code, line = _verify(capsys, bundle, "--sample", "all")
    assert code == 2
    assert "\n" not in line
    assert line.startswith("obsbench verify: error: ")
    assert re.search(expected, line), line


def test_verify_refuses_oversize_files(bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(submission, "MAX_FILE_BYTES", 1000)
    code, line = _verify(capsys, bundle, "--sample", "0")
    assert code == 2
    assert "bytes, over the limit of 0 MiB per file" in line


def test_a_re_run_that_disagrees_beyond_tolerance_fails(
        bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _change_value(bundle)
    _rehash(bundle)  # the checksums pass: only the re-run can tell
    code, line = _verify(capsys, bundle, "--sample", "0")
    assert code == 0  # nothing re-run, nothing caught: why verify re-runs a sample
    code, line = _verify(capsys, bundle, "--sample", "all")
    assert code == 2
    assert "\n" not in line
    run_id = _record(bundle).stem
    assert line.startswith(f"obsbench verify: error: re-run of {run_id}: test loss at epoch 2: "
                           "bundle ")
    assert "(beyond rtol 1e-05, atol 1e-08)" in line
    # a loose enough tolerance accepts the same change
    code, line = _verify(capsys, bundle, "--sample", "all", "--rtol", "1e-2")
    assert code == 0


def test_import_optimizers_need_trust(made: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from obsbench.optimizers import base

    imported: list[str] = []
    original = base.resolve_target
    monkeypatch.setattr(base, "resolve_target",
                        lambda target: imported.append(target) or original(target))
    code, line = _verify(capsys, made["custom"], "--sample", "all")
    assert code == 2
    assert line == ("obsbench verify: error: specs/optimizers/mine.yaml: kind: import runs "
                    "the submitter's code ('torch.optim.SGD'); pass --trust to allow it")
    assert imported == []  # refused before anything imported the target
    code, line = _verify(capsys, made["custom"], "--sample", "all", "--trust")
    assert code == 0, line
    assert line.startswith("verified: 1 runs")


def test_verify_sample_is_seeded(made: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                 ) -> None:
    assert submission.verify(made["tiny"], sample=0).rerun == []
    code, line = _verify(capsys, made["tiny"], "--sample", "many")
    assert code == 2
    assert "--sample: a number of runs or 'all' (got 'many')" in line


def test_the_report_reads_a_bundle_as_a_submission(made: dict[str, Path]) -> None:
    source = load_source(made["tiny"])
    assert source.kind == "submission"
    assert set(source.runs["optimizer"]) == {"sgd"}
    assert len(source.runs) == 2 and source.runs["selected"].all()
    assert source.meta["submission"]["optimizer"] == "sgd"
    assert len(source.meta["submission"]["manifest_sha256"]) == 64
