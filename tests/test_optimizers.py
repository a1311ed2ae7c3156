"""Optimizers: every registered kind builds from its spec, trains, checkpoints, and keeps the
published defaults and search spaces."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

from obsbench.catalog import FAMILIES, Catalog
from obsbench.optimizers import (
    CROWDED_VALLEY_ARXIV_V1,
    CROWDED_VALLEY_ICML_2021,
    Import,
    OptimizerSpecBase,
)
from obsbench.runner import run
from obsbench.space import Choice, Fixed, IntUniform, LogUniform, Uniform
from obsbench.suite import RunSpec
from obsbench.tuning import Random
from tests.conftest import SPECS

KINDS = sorted(FAMILIES["optimizers"].members)
"""Every registered kind: a new kind is tested without editing this file."""
TUNABLE = [k for k in KINDS if k != "import"]
IMPORT = Import(kind="import", target="torch.optim.SGD", lr=0.01, kwargs={"momentum": 0.5})


def spec_of(catalog: Catalog, kind: str) -> Any:
    """The shipped spec named after ``kind`` (``specs/optimizers/<kind>.yaml``)."""
    return IMPORT if kind == "import" else catalog.get("optimizers", kind)


def test_every_kind_ships_a_spec_named_after_it(catalog: Catalog) -> None:
    stems = {p.stem for p in (SPECS / "optimizers").glob("*.yaml")}
    assert set(TUNABLE) <= stems
    for kind in TUNABLE:
        assert catalog.get("optimizers", kind).kind == kind  # type: ignore[attr-defined]


# A small problem with a matrix and a vector, so that matrix methods (Muon, SOAP, Shampoo,
# ND-Adam) take their matrix path: f = 0.5 sum c (W - W*)^2 + 0.5 sum c (b - b*)^2.
TARGET_W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
TARGET_B = torch.tensor([0.5, -0.5, 1.0, 0.0])
CURVATURE_W = torch.linspace(0.1, 1.0, 12).reshape(4, 3)
CURVATURE_B = torch.linspace(0.2, 0.8, 4)


def fresh_params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.full((4, 3), 0.5)), torch.nn.Parameter(torch.zeros(4))]


def objective(params: list[torch.Tensor]) -> torch.Tensor:
    w, b = params
    return (0.5 * (CURVATURE_W * (w - TARGET_W) ** 2).sum()
            + 0.5 * (CURVATURE_B * (b - TARGET_B) ** 2).sum())


def take_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    optimizer.zero_grad()
    objective(params).backward()  # type: ignore[arg-type]
    optimizer.step()


def mode(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Schedule-free optimizers switch iterates with ``train()``/``eval()``, as the runner does."""
    switch = getattr(optimizer, name, None)
    if callable(switch):
        switch()


@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_lowers_a_quadratic(catalog: Catalog, kind: str) -> None:
    """Conformance: built from its spec, 100 steps lower the quadratic."""
    params = fresh_params()
    optimizer = spec_of(catalog, kind).build(params)
    assert isinstance(optimizer, torch.optim.Optimizer)
    start = objective(params).item()  # type: ignore[arg-type]
    mode(optimizer, "train")
    for _ in range(100):
        take_step(optimizer, params)
    mode(optimizer, "eval")
    end = objective(params).item()  # type: ignore[arg-type]
    assert math.isfinite(end) and end < start


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips(catalog: Catalog, kind: str) -> None:
    """A fresh optimizer loaded from a checkpoint takes exactly the step the original takes."""
    spec = spec_of(catalog, kind)
    params = fresh_params()
    optimizer = spec.build(params)
    mode(optimizer, "train")
    for _ in range(4):  # the 5th step is Lookahead's first slow step (k = 5)
        take_step(optimizer, params)
    saved = copy.deepcopy(optimizer.state_dict())
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = spec.build(clones)
    restored.load_state_dict(saved)
    mode(restored, "train")
    take_step(optimizer, params)
    take_step(restored, clones)
    for original, copied in zip(params, clones, strict=True):
        assert torch.equal(original, copied)


@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_trains_a_problem(catalog: Catalog, kind: str) -> None:
    """Conformance: a few epochs on the tiny quadratic_deep through the runner.

    The shipped defaults need not suit this problem (schedule-free SGD's lr 1.0 overshoots
    its curvature of up to 60): a run must not fail, and a diverging one is reported so.
    """
    problem = catalog.get("problems", "quadratic_deep").model_copy(update={"num_epochs": 3})
    record = run(RunSpec(suite="test", problem_id="quadratic_deep", problem=problem,  # type: ignore[arg-type]
                         optimizer_id=kind, optimizer=spec_of(catalog, kind), seed=1, tiny=True))
    assert record.status in {"ok", "diverged"}, record.error
    losses = record.curves["train"]["loss"]
    assert len(losses) >= 2 and math.isfinite(losses[0])


# ------------------------------------------------------------------ search spaces


def contains(dimension: Any, value: Any) -> bool:
    if isinstance(dimension, LogUniform | Uniform | IntUniform):
        return bool(dimension.low <= value <= dimension.high)
    if isinstance(dimension, Choice):
        return value in dimension.values
    assert isinstance(dimension, Fixed)
    return bool(value == dimension.value)


@pytest.mark.parametrize("kind", TUNABLE)
def test_default_search_space_points_are_valid_settings(kind: str) -> None:
    spec = FAMILIES["optimizers"].members[kind].model_validate({"kind": kind})
    assert isinstance(spec, OptimizerSpecBase)
    assert spec.search_space, f"{kind} has no default search space"
    for u in (0.0, 0.37, 0.5, 0.999999):
        setting = {name: dim.at(u) for name, dim in spec.search_space.items()}
        tuned = spec.with_hyperparameters(setting)
        assert {k: tuned.hyperparameters()[k] for k in setting} == setting
        tuned.build(fresh_params())  # the library accepts the values too


@pytest.mark.parametrize("kind", TUNABLE)
def test_defaults_lie_in_the_default_search_space(catalog: Catalog, kind: str) -> None:
    for spec in (FAMILIES["optimizers"].members[kind].model_validate({"kind": kind}),
                 catalog.get("optimizers", kind)):
        assert isinstance(spec, OptimizerSpecBase)
        values = spec.hyperparameters()
        for name, dimension in spec.search_space.items():
            assert contains(dimension, values[name]), (name, values[name], dimension)


# Hyperparameter samples of Crowded Valley's random search, read from the folder names of
# SirRob1997/Crowded-Valley---Results (results/large_budget/*/quadratic_deep and
# .../cosine/cifar100_allcnnc, results_main/... for AdaBelief; Adam, NAG and Momentum also in
# shared/published/crowded-valley-sample).
PUBLISHED_SAMPLES: dict[str, list[dict[str, float]]] = {
    "sgd": [{"lr": 3.148911648e-03}, {"lr": 8.4718014188e-02}, {"lr": 7.2866537375e-01}],
    "adagrad": [{"lr": 1.0842262717e-03}, {"lr": 4.3379206975e-01}, {"lr": 6.2451395747e-01}],
    "momentum": [{"lr": 5.7279044708e-01, "momentum": 4.8359527765e-01},
                 {"lr": 7.5568101413e-01, "momentum": 2.1154290797e-01},
                 {"lr": 1.5375920235e-02, "momentum": 3.5856126103e-03}],
    "nag": [{"lr": 1.2329098365e-02, "momentum": 1.9170041589e-02}],
    "rmsprop": [{"lr": 3.148911648e-03, "decay": 7.1144760093e-01},
                {"lr": 1.7654048052e-03, "decay": 3.6324869567e-02},
                {"lr": 2.0651425579e-01, "decay": 1.17560109e-02}],
    "adadelta": [{"lr": 7.5568101413e-01, "rho": 2.1154290797e-01},
                 {"lr": 1.2087541473e-04, "rho": 8.1232450856e-01}],
    "adam": [{"lr": 1.1040511903e-02, "beta1": 6.6751530104e-01, "beta2": 8.4047875565e-01},
             {"lr": 8.8623265086e-01, "beta1": 8.5332331198e-01, "beta2": 8.3612286844e-01}],
    "amsgrad": [{"lr": 3.148911648e-03, "beta1": 9.6550871691e-01, "beta2": 9.412726841e-01},
                {"lr": 3.5868164986e-03, "beta1": 6.0333619283e-01, "beta2": 9.6171924653e-01}],
    "nadam": [{"lr": 2.7012557725e-04, "beta1": 5.1103032267e-01, "beta2": 9.2149824486e-01},
              {"lr": 2.4637685959e-02, "beta1": 9.4642834528e-01, "beta2": 8.1589988454e-01}],
    "radam": [{"lr": 1.3783578295e-03, "beta1": 5.1296426284e-01, "beta2": 9.1601939955e-01},
              {"lr": 2.8478585169e-03, "beta1": 9.7968969662e-01, "beta2": 9.9071169689e-01}],
    "adabelief": [{"lr": 6.7965780908e-02, "beta1": 5.0720915219e-01, "beta2": 9.9235532264e-01},
                  {"lr": 2.7155819553e-03, "beta1": 5.4178473347e-01, "beta2": 9.6908882933e-01}],
    "adabound": [{"lr": 4.2702329684e-02, "final_lr": 3.4187309241e-02, "beta1": 5.3352629051e-01,
                  "beta2": 8.6810757037e-01, "gamma": 6.2460736813e-04},
                 {"lr": 5.1674258133e-01, "final_lr": 1.4310968188e-02, "beta1": 9.7621941124e-01,
                  "beta2": 9.9096979934e-01, "gamma": 3.6226665947e-02}],
    "amsbound": [{"lr": 4.6735189996e-03, "final_lr": 3.9762069535e-03, "beta1": 5.4328527403e-01,
                  "beta2": 8.6232253491e-01, "gamma": 6.7410742656e-02},
                 {"lr": 9.46146906e-04, "final_lr": 4.2281996631e-01, "beta1": 6.5637704307e-01,
                  "beta2": 9.7533931637e-01, "gamma": 7.8237664553e-03}],
    "lookahead_momentum": [
        {"lr": 3.148911648e-03, "momentum": 7.1144760093e-01, "k": 11, "alpha": 1.3145103232e-01},
        {"lr": 1.6626592254e-02, "momentum": 3.8810723164e-02, "k": 2, "alpha": 9.6608379873e-01},
        {"lr": 2.7541439213e-02, "momentum": 3.1592553907e-01, "k": 3, "alpha": 4.3379206975e-01}],
    "lookahead_radam": [
        {"lr": 1.5977662355e-03, "beta1": 6.0899609435e-01, "beta2": 8.0660049429e-01, "k": 17,
         "alpha": 8.0623161326e-01},
        {"lr": 1.6172900811e-01, "beta1": 5.2651128849e-01, "beta2": 9.961046851e-01, "k": 1,
         "alpha": 6.2353771357e-04}],
}


def crowded_valley_stream(spec: OptimizerSpecBase, trials: int = 75) -> list[dict[str, Any]]:
    """The study's random search as obsbench's ``random`` sampler draws it: ``RandomState(42)``,
    one trial after another, each hyperparameter in search-space order."""
    return Random(kind="random", budget=trials, sample_seed=42).trials(spec.search_space)


@pytest.mark.parametrize("kind", sorted(PUBLISHED_SAMPLES))
def test_published_samples_are_draws_of_the_default_search_space(kind: str) -> None:
    """Confirms the search spaces: regenerating the study's stream finds its samples (to
    1e-3: the betas' bounds were written as rounded exponents)."""
    spec = FAMILIES["optimizers"].members[kind].model_validate({"kind": kind})
    assert isinstance(spec, OptimizerSpecBase)
    stream = crowded_valley_stream(spec)
    for sample in PUBLISHED_SAMPLES[kind]:
        assert set(sample) == set(spec.search_space)
        assert any(all(math.isclose(trial[k], v, rel_tol=1e-3) for k, v in sample.items())
                   for trial in stream), sample


def test_crowded_valley_versions() -> None:
    assert len(CROWDED_VALLEY_ARXIV_V1) == 14 == len(set(CROWDED_VALLEY_ARXIV_V1))
    assert set(CROWDED_VALLEY_ICML_2021) - set(CROWDED_VALLEY_ARXIV_V1) == {"adabelief"}
    assert len(CROWDED_VALLEY_ICML_2021) == 15
    assert set(CROWDED_VALLEY_ICML_2021) <= set(KINDS)


# One-shot defaults of Crowded Valley (TensorFlow defaults, read from the published run
# folders; Schmidt, Schneider & Hennig, ICML 2021).
CROWDED_VALLEY_DEFAULTS: dict[str, dict[str, Any]] = {
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
    "adabound": {"lr": 1e-3, "final_lr": 0.1, "gamma": 1e-3, "beta1": 0.9, "beta2": 0.999,
                 "eps": 1e-8},
    "amsbound": {"lr": 1e-3, "final_lr": 0.1, "gamma": 1e-3, "beta1": 0.9, "beta2": 0.999,
                 "eps": 1e-8},
    "lookahead_momentum": {"lr": 1e-2, "momentum": 0.99, "alpha": 0.5, "k": 5},
    "lookahead_radam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "alpha": 0.5,
                        "k": 5},
    "adabelief": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-14},
    "ndadam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
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


# ------------------------------------------------------------------ implementations


def test_ndadam_follows_the_paper() -> None:
    """Float64 oracle: Algorithm 1 of Zhang et al. (2017), transcribed row by row."""
    torch.manual_seed(0)
    w0, b0 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    grads = [(torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64))
             for _ in range(5)]
    lr, ratio, beta1, beta2, eps = 1e-3, 50.0, 0.9, 0.999, 1e-8
    spec = FAMILIES["optimizers"].members["ndadam"].model_validate({"kind": "ndadam"})
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    optimizer = spec.build([w, b])  # type: ignore[attr-defined]
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        optimizer.step()

    # the paper: unit weight vectors (rows), one second moment per vector
    rows = [w0[i].numpy() / np.linalg.norm(w0[i].numpy()) for i in range(3)]
    m_rows, v_rows = [np.zeros(4) for _ in range(3)], [0.0] * 3
    bias, m_b, v_b = b0.numpy().copy(), np.zeros(3), np.zeros(3)
    for t, (gw, gb) in enumerate(grads, start=1):
        for i in range(3):
            g = gw[i].numpy()
            g_bar = g - np.dot(g, rows[i]) * rows[i]
            m_rows[i] = beta1 * m_rows[i] + (1 - beta1) * g_bar
            v_rows[i] = beta2 * v_rows[i] + (1 - beta2) * np.dot(g_bar, g_bar)
            m_hat, v_hat = m_rows[i] / (1 - beta1**t), v_rows[i] / (1 - beta2**t)
            stepped = rows[i] - ratio * lr * m_hat / (np.sqrt(v_hat) + eps)
            rows[i] = stepped / np.linalg.norm(stepped)
        g = gb.numpy()
        m_b = beta1 * m_b + (1 - beta1) * g
        v_b = beta2 * v_b + (1 - beta2) * g * g
        bias = bias - lr * (m_b / (1 - beta1**t)) / (np.sqrt(v_b / (1 - beta2**t)) + eps)
    np.testing.assert_allclose(w.detach().numpy(), np.stack(rows), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.detach().numpy(), bias, rtol=1e-12, atol=1e-14)


def test_ndadam_without_unit_norm_is_adam() -> None:
    spec = FAMILIES["optimizers"].members["ndadam"].model_validate(
        {"kind": "ndadam", "unit_norm": "none"})
    params, reference = fresh_params(), fresh_params()
    ours = spec.build(params)  # type: ignore[attr-defined]
    adam = torch.optim.Adam(reference, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        take_step(ours, params)
        take_step(adam, reference)
    for p, q in zip(params, reference, strict=True):
        torch.testing.assert_close(p, q)


def test_muon_orthogonalises_matrices_only() -> None:
    spec = FAMILIES["optimizers"].members["muon"].model_validate({"kind": "muon"})
    matrix, kernel, bias = (torch.nn.Parameter(torch.ones(4, 3)),
                            torch.nn.Parameter(torch.ones(2, 1, 3, 3)),
                            torch.nn.Parameter(torch.ones(4)))
    groups = spec.build([matrix, kernel, bias]).param_groups  # type: ignore[attr-defined]
    assert [(g["use_muon"], len(g["params"]), g["lr"]) for g in groups] == [
        (True, 1, 2e-2), (False, 2, 3e-4)]
    flattened = spec.with_hyperparameters({"flatten_kernels": True})  # type: ignore[attr-defined]
    groups = flattened.build([matrix, kernel, bias]).param_groups
    assert [(g["use_muon"], len(g["params"])) for g in groups] == [(True, 2), (False, 1)]


def test_torch_receives_the_spec_values() -> None:
    spec = FAMILIES["optimizers"].members["rmsprop"].model_validate(
        {"kind": "rmsprop", "lr": 0.5, "decay": 0.8, "momentum": 0.1, "eps": 1e-3})
    group = spec.build([torch.nn.Parameter(torch.ones(1))]).param_groups[0]  # type: ignore[attr-defined]
    assert (group["lr"], group["alpha"], group["momentum"], group["eps"]) == (0.5, 0.8, 0.1, 1e-3)
    nag = FAMILIES["optimizers"].members["nag"].model_validate({"kind": "nag"})
    assert nag.build([torch.nn.Parameter(torch.ones(1))]).param_groups[0]["nesterov"] is True  # type: ignore[attr-defined]
    amsbound = FAMILIES["optimizers"].members["amsbound"].model_validate({"kind": "amsbound"})
    group = amsbound.build([torch.nn.Parameter(torch.ones(1))]).param_groups[0]  # type: ignore[attr-defined]
    assert (group["ams_bound"], group["final_lr"], group["gamma"]) == (True, 0.1, 1e-3)
    lookahead = FAMILIES["optimizers"].members["lookahead_momentum"].model_validate(
        {"kind": "lookahead_momentum", "k": 7, "alpha": 0.25})
    built = lookahead.build([torch.nn.Parameter(torch.ones(1))])  # type: ignore[attr-defined]
    assert (built.k, built.alpha, built.param_groups[0]["momentum"]) == (7, 0.25, 0.99)


def test_import_hyperparameters_merge_into_kwargs() -> None:
    tuned = IMPORT.with_hyperparameters({"lr": 0.1, "dampening": 0.2})
    assert tuned.hyperparameters() == {"lr": 0.1, "momentum": 0.5, "dampening": 0.2}
