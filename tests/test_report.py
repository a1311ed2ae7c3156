"""The HTML/PDF report: rendered in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) and converted back to text with ``pdftotext`` (poppler-utils).

README command 2 (and ``.ci/run``) installs both; without them these tests skip locally and
fail under ``CI=true``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obsbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PDFTOTEXT = shutil.which("pdftotext")
SECTIONS = {"summary": "Summary", "sources": "Sources", "performance": "Performance",
            "learning-curves": "Learning curves", "time-to-target": "Time to target",
            "tuning": "Tuning budget and sensitivity", "ranking": "Ranking",
            "provenance": "Provenance"}
PUBLISHED = ROOT.parent / "shared" / "published" / "deepobs-baselines-1.1"


def _need(tool: str | None, name: str) -> None:
    if tool is None:
        message = f"{name} is not installed (README command 2 installs it with apt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the default suite (its tiny variant: same code path, seconds to run),
    against the frozen DeepOBS-protocol baseline of quadratic_deep."""
    tmp = tmp_path_factory.mktemp("report")
    results = tmp / "cpu_default"
    assert main(["run", "cpu_default", "--tiny", "--results", str(results),
                 "--workers", "2"]) == 0
    out = tmp / "out"
    assert main(["report", str(results), "--baseline", "cv_mnist1d_oneshot",
                 "--baselines", str(ROOT / "baselines"), "--specs", str(ROOT / "specs"),
                 "--out", str(out)]) == 0
    return out


def _browse(html: Path, screenshot: Path | None = None) -> dict[str, object]:
    """Open ``html`` in headless Chromium; return console errors, page errors, requests
    after the page itself, the ids and text of the sections, and the screenshot's bytes."""
    from playwright.sync_api import sync_playwright

    found: dict[str, object] = {"console": [], "errors": [], "requests": []}
    url = html.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: found["console"].append(  # type: ignore[union-attr]
            f"{m.type}: {m.text}") if m.type in {"error", "warning"} else None)
        page.on("pageerror", lambda e: found["errors"].append(str(e)))  # type: ignore[union-attr]
        page.on("request", lambda r: found["requests"].append(r.url)  # type: ignore[union-attr]
                if r.url != url else None)
        page.goto(url, wait_until="load")
        found["sections"] = page.eval_on_selector_all("section", "s => s.map(x => x.id)")
        found["headings"] = page.eval_on_selector_all("h2", "s => s.map(x => x.innerText)")
        found["text"] = page.inner_text("body")
        found["svgs"] = page.eval_on_selector_all(
            "figure svg", "s => s.map(x => x.getBoundingClientRect().width)")
        found["pwned"] = page.evaluate("() => window.__pwned === undefined ? null : 1")
        # sorting: click a numeric header twice, read the column back
        table = page.query_selector("#table-performance")
        if table is not None:
            headers = page.eval_on_selector_all("#table-performance th", "s => s.map(x => "
                                                "x.innerText)")
            column = headers.index("runs")
            header = page.query_selector_all("#table-performance th")[column]
            header.click()
            found["ascending"] = page.eval_on_selector_all(
                f"#table-performance tbody tr td:nth-child({column + 1})",
                "s => s.map(x => parseFloat(x.dataset.sort))")
            header.click()
            found["descending"] = page.eval_on_selector_all(
                f"#table-performance tbody tr td:nth-child({column + 1})",
                "s => s.map(x => parseFloat(x.dataset.sort))")
        found["png"] = page.screenshot(full_page=False)
        if screenshot is not None:
            screenshot.write_bytes(found["png"])  # type: ignore[arg-type]
        browser.close()
    return found


def test_default_report_renders_in_chromium(default_report: Path) -> None:
    _need(CHROMIUM, "chromium")
    html = default_report / "report.html"
    seen = _browse(html)
    assert seen["console"] == [] and seen["errors"] == []
    assert seen["requests"] == [], "the report must not request anything"
    for section in SECTIONS:
        assert section in seen["sections"]  # type: ignore[operator]
    assert "verdicts" in seen["sections"]  # type: ignore[operator]
    assert len(seen["svgs"]) >= 5 and min(seen["svgs"]) > 100  # type: ignore[arg-type]
    ascending, descending = seen["ascending"], seen["descending"]
    assert ascending == sorted(ascending) and descending == sorted(descending, reverse=True)  # type: ignore[type-var]
    assert len(set(ascending)) > 1  # type: ignore[arg-type]

    from matplotlib.image import imread

    pixels = imread(io.BytesIO(seen["png"]), format="png")[..., :3]  # type: ignore[arg-type]
    ink = (pixels.mean(axis=2) < 0.9).mean()
    assert ink > 0.01, f"the screenshot is blank ({ink:.2%} of pixels not white)"
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 10


def test_pdf_has_the_same_sections(default_report: Path) -> None:
    _need(PDFTOTEXT, "pdftotext (poppler-utils)")
    pdf = default_report / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run([PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    html = (default_report / "report.html").read_text()
    for heading in [*SECTIONS.values(), "Verdicts against cv_mnist1d_oneshot"]:
        assert heading in text, heading
        assert f">{heading}</h2>" in html
    assert "git commit" in text and "sha256" in text


def test_report_is_reproducible(default_report: Path, tmp_path: Path) -> None:
    """The same inputs give the same HTML bytes (fixed SVG ids, no dates)."""
    results = default_report.parent / "cpu_default"
    assert main(["report", str(results), "--baseline", "cv_mnist1d_oneshot",
                 "--baselines", str(ROOT / "baselines"), "--specs", str(ROOT / "specs"),
                 "--out", str(tmp_path), "--no-pdf"]) == 0
    first = (default_report / "report.html").read_text()
    second = (tmp_path / "report.html").read_text()
    # the provenance's command line names the output folder; everything else is identical
    assert first.replace(str(default_report), "OUT") == second.replace(str(tmp_path), "OUT")


def test_spec_names_are_escaped(tmp_path: Path) -> None:
    _need(CHROMIUM, "chromium")
    evil = "<script>window.__pwned=1</script>sgd"
    source = tmp_path / "evil"
    source.mkdir()
    runs = pd.read_parquet(ROOT / "baselines" / "deepobs_quadratic" / "runs.parquet")
    runs["optimizer"] = runs["optimizer"].replace({"sgd": evil})
    runs.to_parquet(source / "runs.parquet")
    shutil.copy(ROOT / "baselines" / "deepobs_quadratic" / "curves.parquet", source)
    out = tmp_path / "out"
    assert main(["report", str(source), "--out", str(out), "--no-pdf"]) == 0
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;sgd" in html
    assert "<script>window.__pwned" not in html
    seen = _browse(out / "report.html")
    assert seen["pwned"] is None
    assert evil in seen["text"]  # type: ignore[operator]
    assert seen["errors"] == [] and seen["requests"] == []


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason=f"{PUBLISHED} (shared published data) "
                    "is absent")
def test_protocol_report_shows_published_and_obsbench_side_by_side(tmp_path: Path) -> None:
    imported = tmp_path / "deepobs-1.1"
    assert main(["import", "deepobs", str(PUBLISHED / "quadratic_deep"), "--out",
                 str(imported)]) == 0
    out = tmp_path / "out"
    assert main(["report", str(ROOT / "baselines" / "deepobs_quadratic"), str(imported),
                 "--out", str(out), "--no-pdf"]) == 0
    html = (out / "report.html").read_text()
    assert 'id="published"' in html
    tables = pd.read_html(io.StringIO(html), attrs={"id": "table-published"})
    published = tables[0]
    assert sorted(published["optimizer"]) == ["adam", "momentum", "sgd"]
    # the reproduced DeepOBS protocol lands within two published standard deviations
    assert (published["gap / std"].abs() < 2).all(), published


@pytest.mark.parametrize(("args", "message"), [
    (["report", "no/such/dir"], "no/such/dir: no such results directory"),
    (["report", "{baselines}/deepobs_quadratic", "--baseline", "nope"],
     "--baseline: 'nope' is neither a RESULTS folder nor a baseline"),
    (["report", "{tmp}"], "neither run records (*.json) nor tables (runs.parquet)"),
])
def test_report_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(baselines=ROOT / "baselines", tmp=tmp_path) for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
