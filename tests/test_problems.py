"""Problems: every kind builds and trains; definitions match DeepOBS and MNIST-1D exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from obsbench.catalog import FAMILIES, Catalog
from obsbench.problems import MNIST1D, QuadraticDeep, TwoD
from obsbench.problems import mnist1d as mnist1d_module
from obsbench.problems.quadratic import _haar_rotation, deep_spectrum_hessian
from obsbench.runner import evaluate, run
from obsbench.suite import RunSpec
from tests.conftest import SPECS

PROBLEM_IDS = sorted(p.stem for p in (SPECS / "problems").glob("*.yaml"))


def test_every_problem_kind_has_a_shipped_spec(catalog: Catalog) -> None:
    shipped = {catalog.get("problems", i).kind for i in catalog.ids("problems")}  # type: ignore[attr-defined]
    assert shipped == set(FAMILIES["problems"].members)


@pytest.mark.parametrize("problem_id", PROBLEM_IDS)
def test_problem_builds_and_trains(catalog: Catalog, problem_id: str) -> None:
    """Conformance: the tiny variant trains a few steps with finite, logged losses."""
    problem_spec = catalog.get("problems", problem_id)
    spec = RunSpec(suite="test", problem_id=problem_id, problem=problem_spec,
                   optimizer_id="adam", optimizer=catalog.get("optimizers", "adam"), seed=0,
                   tiny=True)
    record = run(spec)
    assert record.status == "ok", record.error
    epochs = problem_spec.sizes(True)[1]  # type: ignore[attr-defined]
    assert record.timings.steps > 0
    assert all(math.isfinite(v) for v in record.minibatch_losses)
    metrics = {"loss", "accuracy"} if problem_id.startswith("mnist1d") else {"loss"}
    assert set(record.curves) == {"train", "valid", "test"}
    for split in record.curves.values():
        assert set(split) == metrics
        assert all(len(values) == epochs + 1 for values in split.values())


def test_quadratic_deep_initial_test_loss_is_the_published_value() -> None:
    """DeepOBS 1.1 and Crowded Valley report 353.44676... at epoch 0 (fixed data, theta=1)."""
    problem = QuadraticDeep(kind="quadratic_deep").build()
    problem.model.eval()
    loss = evaluate(problem, problem.splits["test"])["loss"]
    assert round(loss, 4) == 353.4468


def test_quadratic_deep_test_loss_float64_oracle() -> None:
    """A float64 brute force over the same 896 test points (7 full batches of 128)."""
    hessian = deep_spectrum_hessian()
    x = np.random.RandomState(43).normal(0.0, 0.6, (1000, 100)).astype(np.float32)
    diff = (1.0 - x[:896]).astype(np.float64)
    oracle = np.mean([0.5 * d @ hessian @ d for d in diff])
    problem = QuadraticDeep(kind="quadratic_deep").build()
    assert evaluate(problem, problem.splits["test"])["loss"] == pytest.approx(oracle, rel=1e-6)
    assert oracle == pytest.approx(353.44676426478793, abs=5e-4)


def test_quadratic_deep_spectrum_and_rotation() -> None:
    rng = np.random.RandomState(42)
    expected = np.sort(np.concatenate([rng.uniform(0, 1, 90), rng.uniform(30, 60, 10)]))
    rotation = _haar_rotation(100, rng)
    assert np.allclose(rotation @ rotation.T, np.eye(100), atol=1e-10)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    hessian = deep_spectrum_hessian()
    assert np.allclose(hessian, hessian.T, atol=1e-12)
    assert np.allclose(np.linalg.eigvalsh(hessian), expected, atol=1e-9)


@pytest.mark.parametrize(("function", "start", "f"), [
    ("rosenbrock", (-0.5, 1.5), lambda u, v: (1 - u) ** 2 + 100 * (v - u**2) ** 2),
    ("beale", (-4.5, 4.5), lambda u, v: (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2
     + (2.625 - u + u * v**3) ** 2),
    ("branin", (2.5, 12.5), lambda u, v: (v - 5.1 / (4 * math.pi**2) * u**2 + 5 / math.pi * u
                                          - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(u)
     + 10),
])
def test_two_d_test_loss_is_the_deterministic_function(function, start, f) -> None:  # type: ignore[no-untyped-def]
    problem = TwoD(kind="two_d", function=function).build()
    assert (problem.model.u.item(), problem.model.v.item()) == start
    assert evaluate(problem, problem.splits["test"])["loss"] == pytest.approx(f(*start), rel=1e-6)
    # the noise is N(0, 1) from RandomState(42): x then y, 10,000 draws each
    rng = np.random.RandomState(42)
    x, y = rng.normal(0, 1, 10_000), rng.normal(0, 1, 10_000)
    assert torch.equal(problem.train.x, torch.from_numpy(np.float32(np.stack([x, y], 1))))


@pytest.mark.parametrize(("model", "parameters"), [
    ("logreg", 40 * 10 + 10),
    ("mlp", (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)),
    ("cnn", (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)),
    ("gru", 2 * 3 * (6 * 1 + 6 * 6 + 6 + 6) + (2 * 6 * 40 * 10 + 10)),
])
def test_mnist1d_models_match_the_reference_sizes(model: str, parameters: int) -> None:
    problem = MNIST1D(kind="mnist1d", model=model).build(tiny=True)
    assert sum(p.numel() for p in problem.model.parameters()) == parameters
    assert problem.model(problem.train.x[:3]).shape == (3, 10)


def test_mnist1d_splits_are_deterministic_and_disjoint() -> None:
    first = MNIST1D(kind="mnist1d", model="logreg").build()
    mnist1d_module.dataset.cache_clear()
    second = MNIST1D(kind="mnist1d", model="logreg").build()
    for name in ("train_eval", "valid", "test"):
        assert torch.equal(first.splits[name].x, second.splits[name].x)
    sizes = {name: len(split) for name, split in first.splits.items()}
    assert sizes == {"train_eval": 500, "valid": 500, "test": 1000}
    assert len(first.train) == 3500
    rows = {tuple(r) for r in first.train.x.tolist()}
    assert not rows & {tuple(r) for r in first.splits["valid"].x.tolist()}
    assert not {tuple(r) for r in first.splits["valid"].x.tolist()} & {
        tuple(r) for r in first.splits["test"].x.tolist()}
    assert {tuple(r) for r in first.splits["train_eval"].x.tolist()} <= rows
    assert torch.bincount(first.train.y).min() > 300  # 10 balanced classes


def test_mnist1d_generation_leaves_global_numpy_state_alone() -> None:
    np.random.seed(7)
    expected = np.random.RandomState(7).rand()
    mnist1d_module.generate()
    assert np.random.rand() == expected


def test_mnist1d_disk_cache_gives_the_generated_bits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mnist1d_module.CACHE_ENV, str(tmp_path))
    fresh = mnist1d_module.generate()
    for _ in range(2):  # the first call writes the cache, the second reads it
        mnist1d_module.dataset.cache_clear()
        cached = mnist1d_module.dataset()
        assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]
        for key in mnist1d_module.KEYS:
            assert np.array_equal(cached[key], fresh[key])
            assert cached[key].dtype == fresh[key].dtype
    next(tmp_path.iterdir()).write_bytes(b"truncated")  # a corrupt cache is regenerated
    mnist1d_module.dataset.cache_clear()
    assert np.array_equal(mnist1d_module.dataset()["x"], fresh["x"])
    mnist1d_module.dataset.cache_clear()


def test_deepobs_default_batch_size_and_epochs(catalog: Catalog) -> None:
    """DeepOBS's config sets quadratic_deep to batch 128, 100 epochs."""
    spec = catalog.get("problems", "quadratic_deep")
    assert (spec.batch_size, spec.num_epochs) == (128, 100)  # type: ignore[attr-defined]
