"""Optimizers: every kind builds from its spec, trains, and keeps the published defaults."""

from __future__ import annotations

import pytest
import torch

from obsbench.catalog import FAMILIES, Catalog
from obsbench.optimizers import Import
from obsbench.runner import run
from obsbench.suite import RunSpec
from tests.conftest import SPECS

OPTIMIZER_IDS = sorted(p.stem for p in (SPECS / "optimizers").glob("*.yaml"))
IMPORT = Import(kind="import", target="torch.optim.SGD", lr=0.01, kwargs={"momentum": 0.5})


def test_every_optimizer_kind_is_covered(catalog: Catalog) -> None:
    shipped = {catalog.get("optimizers", i).kind for i in OPTIMIZER_IDS}  # type: ignore[attr-defined]
    assert shipped | {"import"} == set(FAMILIES["optimizers"].members)


def _optimizers(catalog: Catalog) -> list[tuple[str, object]]:
    return [(i, catalog.get("optimizers", i)) for i in OPTIMIZER_IDS] + [("import", IMPORT)]


@pytest.mark.parametrize("optimizer_id", [*OPTIMIZER_IDS, "import"])
def test_optimizer_lowers_a_quadratic(catalog: Catalog, optimizer_id: str) -> None:
    """Conformance: built from its spec, 200 steps lower f(x) = 0.5 x^T diag(1..10) x."""
    spec = IMPORT if optimizer_id == "import" else catalog.get("optimizers", optimizer_id)
    x = torch.nn.Parameter(torch.ones(10))
    curvature = torch.arange(1.0, 11.0)
    optimizer = spec.build([x])  # type: ignore[attr-defined]
    assert isinstance(optimizer, torch.optim.Optimizer)

    def f() -> torch.Tensor:
        return 0.5 * (curvature * x * x).sum()

    start = f().item()
    for _ in range(200):
        optimizer.zero_grad()
        f().backward()
        optimizer.step()
    assert f().item() < start


@pytest.mark.parametrize("optimizer_id", [*OPTIMIZER_IDS, "import"])
def test_optimizer_trains_a_problem(catalog: Catalog, optimizer_id: str) -> None:
    """Conformance: a few steps on the tiny quadratic_deep through the runner."""
    spec = IMPORT if optimizer_id == "import" else catalog.get("optimizers", optimizer_id)
    record = run(RunSpec(suite="test", problem_id="quadratic_deep",
                         problem=catalog.get("problems", "quadratic_deep"),
                         optimizer_id=optimizer_id, optimizer=spec, seed=1, tiny=True))
    assert record.status == "ok", record.error
    assert record.curves["train"]["loss"][-1] < record.curves["train"]["loss"][0]


# One-shot defaults of Crowded Valley (TensorFlow defaults, read from the published run
# folders; Schmidt, Schneider & Hennig, ICML 2021).
CROWDED_VALLEY_DEFAULTS = {
    "sgd": {"lr": 1e-2},
    "momentum": {"lr": 1e-2, "momentum": 0.99},
    "nag": {"lr": 1e-2, "momentum": 0.99},
    "rmsprop": {"lr": 1e-3, "decay": 0.9, "momentum": 0.0, "eps": 1e-10, "centered": False},
    "adagrad": {"lr": 1e-2, "initial_accumulator_value": 0.1},
    "adadelta": {"lr": 1e-3, "rho": 0.95, "eps": 1e-8},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "amsgrad": {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "nadam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
    "radam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
}


@pytest.mark.parametrize("kind", sorted(CROWDED_VALLEY_DEFAULTS))
def test_defaults_are_the_crowded_valley_one_shot_setting(catalog: Catalog, kind: str) -> None:
    cls = FAMILIES["optimizers"].members[kind]
    defaults = cls.model_validate({"kind": kind}).hyperparameters()  # type: ignore[attr-defined]
    for name, value in CROWDED_VALLEY_DEFAULTS[kind].items():
        assert defaults[name] == value, name
    # and the shipped spec of the same name says the same
    shipped = catalog.get("optimizers", kind).hyperparameters()  # type: ignore[attr-defined]
    assert {k: shipped[k] for k in CROWDED_VALLEY_DEFAULTS[kind]} == CROWDED_VALLEY_DEFAULTS[kind]


def test_torch_receives_the_spec_values() -> None:
    spec = FAMILIES["optimizers"].members["rmsprop"].model_validate(
        {"kind": "rmsprop", "lr": 0.5, "decay": 0.8, "momentum": 0.1, "eps": 1e-3})
    group = spec.build([torch.nn.Parameter(torch.ones(1))]).param_groups[0]  # type: ignore[attr-defined]
    assert (group["lr"], group["alpha"], group["momentum"], group["eps"]) == (0.5, 0.8, 0.1, 1e-3)
    nag = FAMILIES["optimizers"].members["nag"].model_validate({"kind": "nag"})
    assert nag.build([torch.nn.Parameter(torch.ones(1))]).param_groups[0]["nesterov"] is True  # type: ignore[attr-defined]


def test_import_hyperparameters_merge_into_kwargs() -> None:
    tuned = IMPORT.with_hyperparameters({"lr": 0.1, "dampening": 0.2})
    assert tuned.hyperparameters() == {"lr": 0.1, "momentum": 0.5, "dampening": 0.2}
