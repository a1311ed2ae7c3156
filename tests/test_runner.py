"""The training loop: determinism, evaluation protocol, divergence, failures, instruments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from obsbench.catalog import Catalog
from obsbench.instruments import PRESETS, Distance, GradNorm, Preset
from obsbench.optimizers import SGD, Import
from obsbench.plots import dashboard
from obsbench.problems import MNIST1D, TwoD
from obsbench.results import build_table, read_record, write_record
from obsbench.runner import run
from obsbench.spec import Spec
from obsbench.suite import RunSpec


def _spec(catalog: Catalog, problem: str | Spec = "mnist1d_mlp",
          optimizer: str | Spec = "adam", **kwargs: object) -> RunSpec:
    """A tiny run; ``problem`` and ``optimizer`` are shipped ids or spec objects."""
    fields: dict[str, object] = {
        "suite": "test", "problem_id": "p", "optimizer_id": "o", "seed": 3, "tiny": True,
        "problem": catalog.get("problems", problem) if isinstance(problem, str) else problem,
        "optimizer": (catalog.get("optimizers", optimizer) if isinstance(optimizer, str)
                      else optimizer)}
    fields.update(kwargs)
    return RunSpec.model_validate(fields)


def test_same_spec_and_seed_give_the_same_bits(catalog: Catalog) -> None:
    spec = _spec(catalog)
    first, second = run(spec), run(spec)
    assert first.status == second.status == "ok"
    assert first.minibatch_losses == second.minibatch_losses
    assert first.curves == second.curves
    other = run(spec.model_copy(update={"seed": 4}))
    assert other.minibatch_losses != first.minibatch_losses


def test_evaluation_at_epoch_zero_and_after_every_epoch(catalog: Catalog) -> None:
    problem = MNIST1D(kind="mnist1d", model="logreg", num_epochs=3, batch_size=100)
    record = run(_spec(catalog, problem=problem, tiny=False))
    assert record.status == "ok"
    for split in ("train", "valid", "test"):
        assert len(record.curves[split]["loss"]) == 4
        assert len(record.curves[split]["accuracy"]) == 4
    # logistic regression starts at chance: weights are random but small
    assert 0.0 < record.curves["test"]["accuracy"][0] < 0.3
    assert record.timings.steps == 3 * (3500 // 100)
    assert len(record.minibatch_losses) == record.timings.steps
    assert len(record.timings.epoch_train_s) == 3
    assert record.timings.train_s > 0 and record.timings.eval_s > 0
    assert math.isclose(sum(record.timings.epoch_train_s), record.timings.train_s)


def test_reported_losses_include_the_l2_penalty(catalog: Catalog) -> None:
    plain = MNIST1D(kind="mnist1d", model="mlp", num_epochs=1)
    penalised = plain.model_copy(update={"l2_reg": 0.5})
    a = run(_spec(catalog, problem=plain))
    b = run(_spec(catalog, problem=penalised))
    torch.manual_seed(3)  # the runner seeds the model init the same way
    model = plain.build(tiny=True).model
    weights = sum(float(p.detach().pow(2).sum()) for p in model.parameters() if p.dim() > 1)
    expected = a.curves["test"]["loss"][0] + 0.5 * 0.5 * weights
    assert math.isclose(b.curves["test"]["loss"][0], expected, rel_tol=1e-5)


def test_non_finite_loss_marks_the_run_diverged(catalog: Catalog) -> None:
    spec = _spec(catalog, problem=TwoD(kind="two_d", function="rosenbrock"),
                 optimizer=SGD(kind="sgd", lr=10.0))
    record = run(spec)
    assert record.status == "diverged"
    assert record.diverged_step is not None and record.diverged_step >= 1
    assert not math.isfinite(record.minibatch_losses[-1])
    assert record.timings.steps == record.diverged_step
    assert record.error is None


def test_an_exception_marks_the_run_failed_with_its_message(catalog: Catalog) -> None:
    broken = Import(kind="import", target="tests.user_optimizers.Broken", kwargs={"fail_at": 2})
    record = run(_spec(catalog, optimizer=broken))
    assert record.status == "failed"
    assert record.error == "RuntimeError: step 2: shape mismatch in the preconditioner"


def test_a_users_optimizer_runs_through_kind_import(catalog: Catalog) -> None:
    sign = Import(kind="import", target="tests.user_optimizers.SignSGD", lr=1e-3)
    record = run(_spec(catalog, optimizer=sign))
    assert record.status == "ok"
    assert record.curves["train"]["loss"][-1] < record.curves["train"]["loss"][0]


def test_instruments_measure_without_changing_training(catalog: Catalog) -> None:
    plain = _spec(catalog)
    measured = _spec(catalog, instruments=[GradNorm(kind="grad_norm", every=2),
                                           Distance(kind="distance", every=3)])
    a, b = run(plain), run(measured)
    assert a.minibatch_losses == b.minibatch_losses
    assert a.curves == b.curves
    steps = b.timings.steps
    grad_steps = sorted({v.step for v in b.instruments if v.quantity == "grad_norm"})
    assert grad_steps == list(range(0, steps, 2))
    distances = {v.step: v.value for v in b.instruments
                 if v.quantity == "distance" and v.layer == "total"}
    assert distances[0] == 0.0 and distances[3] > 0.0
    # the total is the norm of the per-layer norms
    at_zero = [v for v in b.instruments if v.quantity == "grad_norm" and v.step == 0]
    layers = [v.value for v in at_zero if v.layer != "total"]
    total = next(v.value for v in at_zero if v.layer == "total")
    assert math.isclose(total, math.sqrt(sum(x * x for x in layers)), rel_tol=1e-6)


def test_full_preset_run_completes_and_its_dashboard_renders(catalog: Catalog,
                                                            tmp_path: Path) -> None:
    full = Preset(kind="preset", name="full", every=8)
    plain, measured = run(_spec(catalog)), run(_spec(catalog, instruments=[full]))
    assert measured.status == "ok", measured.error
    assert measured.minibatch_losses == plain.minibatch_losses
    assert measured.curves == plain.curves
    tracked = {v.quantity for v in measured.instruments}
    assert tracked == set(PRESETS["full"])
    assert {v.step for v in measured.instruments} == set(range(0, measured.timings.steps, 8))
    assert 0 < measured.timings.instruments_s < measured.timings.train_s
    # the record round-trips with its histograms, and the dashboard draws from it
    path = write_record(tmp_path, measured)
    again = read_record(path)
    assert again.instruments == measured.instruments
    table = build_table("instruments", [again])
    hist = table[(table.quantity == "grad_hist_1d") & (table.step == 0)].iloc[0]
    counts = json.loads(hist["hist"])["counts"]
    assert sum(counts) == hist["value"] > 0
    figure = dashboard(again)
    titles = {ax.get_title() for ax in figure.axes}
    assert {"Alpha distribution", "Hessian max eigenvalue", "Gradient element histogram"} <= titles
    figure.savefig(tmp_path / "dashboard.png")
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_records_round_trip_with_non_finite_values(catalog: Catalog, tmp_path: Path) -> None:
    record = run(_spec(catalog, problem=TwoD(kind="two_d", function="rosenbrock"),
                       optimizer=SGD(kind="sgd", lr=10.0)))
    path = write_record(tmp_path, record)
    loaded = read_record(path)
    assert loaded.status == "diverged"
    assert len(loaded.minibatch_losses) == len(record.minibatch_losses)
    assert not math.isfinite(loaded.minibatch_losses[-1])
    assert loaded.spec.run_id == record.run_id
    assert [p.name for p in tmp_path.iterdir()] == [f"{record.run_id}.json"]


def test_shuffle_once_replays_one_order_every_epoch(catalog: Catalog) -> None:
    """With a learning rate too small to move the parameters, a minibatch loss depends only
    on the batch: ``once`` repeats the epoch's losses, ``every_epoch`` does not."""
    frozen = SGD(kind="sgd", lr=1e-30)
    losses = {}
    for shuffle in ("once", "every_epoch"):
        problem = catalog.get("problems", "quadratic_deep").model_copy(
            update={"shuffle": shuffle})
        record = run(_spec(catalog, problem=problem, optimizer=frozen))  # tiny: 2 epochs
        steps = len(record.minibatch_losses) // 2
        losses[shuffle] = [record.minibatch_losses[e * steps:(e + 1) * steps] for e in range(2)]
    assert losses["once"][0] == losses["once"][1]
    assert losses["every_epoch"][0] != losses["every_epoch"][1]
    assert losses["once"][0] == losses["every_epoch"][0]  # the first epoch is the same
