"""The demos of docs/instruments.md run as written and show what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs/instruments.md").read_text(), re.S)


def _run(index: int, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"docs/instruments.md block {index}", "exec"), namespace)
    return namespace


def test_unscaled_inputs_show_in_the_gradient_histogram_at_step_0(monkeypatch):
    edge = _run(0, monkeypatch)["edge_fraction"]
    assert edge[1.0] < 0.01 < 0.1 < edge[255.0]


def test_well_tuned_sgd_overshoots(monkeypatch):
    ns = _run(1, monkeypatch)
    results, best = ns["results"], ns["best"]
    assert results[best][1] > 0  # the best run's median alpha
    assert results[min(results)][1] < 0  # the smallest learning rate creeps
    assert len(BLOCKS) == 2
