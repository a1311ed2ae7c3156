"""Shared fixtures: the shipped spec catalog and small spec roots written per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from obsbench.catalog import Catalog, load_catalog

# One thread per test process: the tiny problems gain nothing from more, and idle OpenMP
# threads spinning on a shared 2-core machine slow everything else down.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
SHARED = REPO.parent / "shared"
PUBLISHED = SHARED / "published"
"""Published runs (DeepOBS 1.1 baselines, a Crowded Valley sample); tests skip without them."""


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The specs shipped in ``specs/`` (they must load without issues)."""
    loaded = load_catalog(SPECS)
    assert not loaded.issues, "\n".join(str(i) for i in loaded.issues)
    return loaded


SpecWriter = Callable[[dict[str, str]], Path]


@pytest.fixture
def spec_root(tmp_path: Path) -> SpecWriter:
    """Write ``{"family/id": yaml text}`` into a fresh spec root and return the root."""

    def write(files: dict[str, str]) -> Path:
        root = tmp_path / "specs"
        for name, text in files.items():
            path = root / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    return write
