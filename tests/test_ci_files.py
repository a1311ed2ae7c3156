"""CI for users: the GitHub Actions workflow and the pre-commit hooks run `obsbench validate`
and reject a bad spec. pre-commit itself runs here (offline: the hooks are `language:
system` or only validated, never installed)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BAD_LR = "kind: adam\nlr: -0.001\n"


def _run(*command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PRE_COMMIT_HOME": str(home), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _pre_commit() -> str:
    found = shutil.which("pre-commit", path=str(BIN))
    if found is None:
        pytest.skip("pre-commit is not installed (README command 2 installs it)")
    return found


def test_pre_commit_files_are_valid(tmp_path: Path) -> None:
    tool = _pre_commit()
    for check, name in (("validate-manifest", ".pre-commit-hooks.yaml"),
                        ("validate-config", ".pre-commit-config.yaml")):
        done = _run(tool, check, name, cwd=ROOT, home=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    hook = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]
    assert hook["id"] == "obsbench-validate"
    assert re.search(hook["files"], "specs/optimizers/adam.yaml")
    assert not re.search(hook["files"], "obsbench/cli.py")


def test_pre_commit_hook_rejects_a_bad_spec(tmp_path: Path) -> None:
    """This repository's `obsbench-validate` hook, run by pre-commit in a scratch repository:
    it passes on the shipped specs and fails, naming the file and field, on a bad one."""
    tool = _pre_commit()
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "specs", work / "specs")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for r in config["repos"] for h in r["hooks"] if h["id"] == "obsbench-validate"]
    (work / ".pre-commit-config.yaml").write_text(yaml.safe_dump(
        {"repos": [{"repo": "local", "hooks": hooks}]}))
    home = tmp_path / "cache"
    for command in (("git", "init", "-q"), ("git", "add", "-A")):
        assert _run(*command, cwd=work, home=home).returncode == 0
    ok = _run(tool, "run", "obsbench-validate", "--all-files", cwd=work, home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (work / "specs" / "optimizers" / "adam.yaml").write_text(BAD_LR)
    _run("git", "add", "-A", cwd=work, home=home)
    bad = _run(tool, "run", "obsbench-validate", "--all-files", cwd=work, home=home)
    assert bad.returncode != 0
    assert "specs/optimizers/adam.yaml:2: lr: input should be greater than 0" in bad.stdout


def test_workflow_runs_validate_on_pull_requests(tmp_path: Path) -> None:
    """The workflow's validate step, run as the runner would, accepts the shipped specs and
    rejects a bad spec with one line and exit code 2."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "validate.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "pull_request" in triggers
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = [s["run"] for s in steps if "obsbench validate" in s.get("run", "")]
    assert len(runs) == 1
    command = shlex.split(runs[0])
    work = tmp_path / "checkout"
    shutil.copytree(ROOT / "specs", work / "specs")
    ok = _run(*command, cwd=work, home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    (work / "specs" / "optimizers" / "adam.yaml").write_text(BAD_LR)
    bad = _run(*command, cwd=work, home=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert ("specs/optimizers/adam.yaml:2: lr: input should be greater than 0 (got -0.001)"
            in lines)
    # the suites that name adam say so too, one line each, then a count
    assert all("adam" in line and line.startswith("specs/") for line in lines[:-1])
    assert lines[-1].startswith(f"{len(lines) - 1} problem(s)")
