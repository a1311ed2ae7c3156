"""Learning-rate schedules: formulas, key values, validation, the published Crowded Valley
factor lists, and the runner applying the factor to the learning rate actually used."""

from __future__ import annotations

import bisect
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from obsbench.catalog import load_catalog
from obsbench.optimizers import SGD, Adam
from obsbench.optimizers.schedules import (
    Constant,
    Cosine,
    CosineWR,
    ScheduleBase,
    Trapezoidal,
    WarmupCosine,
)
from obsbench.problems import QuadraticDeep
from obsbench.problems.quadratic import deep_spectrum_hessian, noise_data
from obsbench.runner import run
from obsbench.suite import RunSpec
from tests.conftest import PUBLISHED, SpecWriter

CROWDED_VALLEY = PUBLISHED / "crowded-valley-sample"
TOTALS = [1, 2, 3, 7, 10, 50, 100, 101, 350, 1000]


def close(a: float, b: float, rel: float = 1e-12) -> bool:
    """Equal to ``rel`` relative; exact where the reference is 0 (up to 1e-15 absolute)."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


# ---------------------------------------------------------------- float64 transcriptions
# Written independently of obsbench (numpy, knot tables, explicit restart lists).


def ref_cosine(t: int, total: int) -> float:
    return float((1.0 + np.cos(np.float64(np.pi) * t / total)) / 2.0)


def ref_cosine_wr(t: int, period: int, mult: int) -> float:
    restarts = [0]
    length = period
    while restarts[-1] <= t:
        restarts.append(restarts[-1] + length)
        length *= mult
    i = bisect.bisect_right(restarts, t) - 1
    cycle = restarts[i + 1] - restarts[i]
    return float((1.0 + np.cos(np.pi * (t - restarts[i]) / cycle)) / 2.0)


def ref_trapezoidal(t: int, total: int, warmup: float, decay: float, start: float) -> float:
    xs: list[float] = [0.0]
    ys: list[float] = [start if warmup > 0 else 1.0]
    if warmup > 0:
        xs.append(warmup * total)
        ys.append(1.0)
    xs.append(total - decay * total)
    ys.append(1.0)
    if decay > 0:
        xs.append(float(total))
        ys.append(0.0)
    return float(np.interp(np.float64(t), np.array(xs), np.array(ys)))


def ref_warmup_cosine(t: int, total: int, warmup: float, start: float, final: float) -> float:
    w = np.float64(warmup) * total
    if t < w:
        return float(np.float64(start) + (1 - start) * (t / w))
    return float(final + (1 - final) * (1 + np.cos(np.pi * (t - w) / (total - w))) / 2)


# ------------------------------------------------------------------------------ formulas


def test_constant_is_one() -> None:
    schedule = Constant(kind="constant")
    assert all(schedule.factor(t, 7) == 1.0 for t in range(8))


def test_cosine_matches_its_transcription() -> None:
    schedule = Cosine(kind="cosine")
    for total in TOTALS:
        for t in range(total + 1):
            assert close(schedule.factor(t, total), ref_cosine(t, total)), (t, total)


def test_cosine_key_values() -> None:
    schedule = Cosine(kind="cosine")
    for total in (2, 10, 100, 350):
        assert schedule.factor(0, total) == 1.0
        assert schedule.factor(total // 2, total) == pytest.approx(0.5, abs=1e-15)
        assert schedule.factor(total, total) == 0.0
        values = [schedule.factor(t, total) for t in range(total + 1)]
        assert all(a > b for a, b in itertools.pairwise(values))  # strictly down


@pytest.mark.parametrize(("period", "mult"), [(10, 2), (1, 1), (7, 1), (3, 3), (5, 2)])
def test_cosine_wr_matches_its_transcription(period: int, mult: int) -> None:
    schedule = CosineWR(kind="cosine_wr", period=period, mult=mult)
    for t in range(400):
        assert close(schedule.factor(t, 100), ref_cosine_wr(t, period, mult)), t


def test_cosine_wr_restarts_at_10_30_70_with_period_10_doubling() -> None:
    schedule = CosineWR(kind="cosine_wr")
    assert (schedule.period, schedule.mult) == (10, 2)
    values = [schedule.factor(t, 100) for t in range(151)]
    assert [t for t, v in enumerate(values) if v == 1.0] == [0, 10, 30, 70, 150]
    for start, length in [(0, 10), (10, 20), (30, 40), (70, 80)]:
        assert values[start + length // 2] == pytest.approx(0.5, abs=1e-15)
        cycle = values[start:start + length]
        assert all(a > b for a, b in itertools.pairwise(cycle))
        assert cycle[-1] == pytest.approx(ref_cosine(length - 1, length), rel=1e-12)
    # the schedule does not depend on the run length
    assert [schedule.factor(t, 1000) for t in range(101)] == values[:101]


@pytest.mark.parametrize(("warmup", "decay", "start"), [
    (0.1, 0.2, 0.0), (0.0, 0.2, 0.0), (0.1, 0.0, 0.0), (0.0, 0.0, 0.0), (0.3, 0.7, 0.0),
    (0.05, 0.5, 0.25), (1.0, 0.0, 0.1), (0.0, 1.0, 0.0), (0.37, 0.29, 0.5)])
def test_trapezoidal_matches_its_transcription(warmup: float, decay: float,
                                               start: float) -> None:
    schedule = Trapezoidal(kind="trapezoidal", warmup=warmup, decay=decay, start_factor=start)
    for total in TOTALS:
        for t in range(total + 1):
            expected = ref_trapezoidal(t, total, warmup, decay, start)
            assert close(schedule.factor(t, total), expected), (t, total)


def test_trapezoidal_key_values() -> None:
    schedule = Trapezoidal(kind="trapezoidal", warmup=0.1, decay=0.2)
    values = [schedule.factor(t, 100) for t in range(101)]
    assert values[0] == 0.0 and values[5] == pytest.approx(0.5)
    assert values[10:81] == [1.0] * 71
    assert values[90] == pytest.approx(0.5) and values[100] == 0.0
    # per-step warm-up from a start factor
    ramp = Trapezoidal(kind="trapezoidal", warmup=0.5, decay=0.5, start_factor=0.2)
    assert [ramp.factor(t, 4) for t in range(5)] == pytest.approx([0.2, 0.6, 1.0, 0.5, 0.0])


@pytest.mark.parametrize(("warmup", "start", "final"), [
    (0.1, 0.0, 0.0), (0.0, 0.0, 0.0), (0.05, 0.1, 0.1), (0.5, 0.3, 0.0), (0.9, 0.0, 0.5),
    (0.0, 0.0, 1.0)])
def test_warmup_cosine_matches_its_transcription(warmup: float, start: float,
                                                 final: float) -> None:
    schedule = WarmupCosine(kind="warmup_cosine", warmup=warmup, start_factor=start,
                            final_factor=final)
    for total in TOTALS:
        for t in range(total + 1):
            expected = ref_warmup_cosine(t, total, warmup, start, final)
            assert close(schedule.factor(t, total), expected), (t, total)


def test_warmup_cosine_key_values() -> None:
    schedule = WarmupCosine(kind="warmup_cosine", warmup=0.1, final_factor=0.1)
    assert schedule.factor(0, 100) == 0.0
    assert schedule.factor(10, 100) == 1.0
    assert schedule.factor(55, 100) == pytest.approx(0.55)
    assert schedule.factor(100, 100) == pytest.approx(0.1, rel=1e-15)
    plain = WarmupCosine(kind="warmup_cosine", warmup=0.0)
    cosine = Cosine(kind="cosine")
    assert [plain.factor(t, 37) for t in range(38)] == [cosine.factor(t, 37) for t in range(38)]


@pytest.mark.parametrize("schedule", [
    Cosine(kind="cosine"), Trapezoidal(kind="trapezoidal", warmup=0.1, decay=0.3),
    WarmupCosine(kind="warmup_cosine", warmup=0.2, final_factor=0.05)])
def test_after_the_end_the_factor_stays_at_its_final_value(schedule: ScheduleBase) -> None:
    assert schedule.factor(11, 10) == schedule.factor(500, 10) == schedule.factor(10, 10)


@pytest.mark.parametrize("schedule", [
    Constant(kind="constant"), Cosine(kind="cosine"), CosineWR(kind="cosine_wr"),
    Trapezoidal(kind="trapezoidal", warmup=0.1, decay=0.3),
    WarmupCosine(kind="warmup_cosine", warmup=0.2)])
def test_factors_lie_in_the_unit_interval(schedule: ScheduleBase) -> None:
    for total in (1, 3, 10, 99):
        for t in range(2 * total):
            assert 0.0 <= schedule.factor(t, total) <= 1.0


@pytest.mark.parametrize("schedule", [
    Cosine(kind="cosine"), CosineWR(kind="cosine_wr"),
    Trapezoidal(kind="trapezoidal", warmup=0.1, decay=0.3),
    WarmupCosine(kind="warmup_cosine", warmup=0.2)])
def test_negative_t_or_empty_run_is_an_error(schedule: ScheduleBase) -> None:
    with pytest.raises(ValueError, match=r"t must not be negative \(got -1\)"):
        schedule.factor(-1, 10)
    with pytest.raises(ValueError, match=r"at least one epoch or step \(got total=0\)"):
        schedule.factor(0, 0)


# ---------------------------------------------------------------------------- validation


def _sgd(schedule: dict[str, Any]) -> SGD:
    return SGD.model_validate({"kind": "sgd", "lr": 0.1, "schedule": schedule})


@pytest.mark.parametrize("schedule", [
    {"kind": "cosine"}, {"kind": "cosine", "unit": "step"},
    {"kind": "cosine_wr", "period": 3, "mult": 1},
    {"kind": "trapezoidal", "warmup": 0.3, "decay": 0.7},
    {"kind": "trapezoidal", "warmup": 0, "decay": 0, "start_factor": 1},
    {"kind": "trapezoidal", "warmup": 0.7, "decay": 0.3},  # 0.7 + 0.3 rounds above 1
    {"kind": "warmup_cosine", "warmup": 0.0, "final_factor": 1.0}])
def test_valid_schedules(schedule: dict[str, Any]) -> None:
    spec = _sgd(schedule)
    assert spec.schedule.kind == schedule["kind"]
    assert spec.hyperparameters() == {"lr": 0.1, "weight_decay": 0.0}


@pytest.mark.parametrize(("schedule", "field", "message"), [
    ({"kind": "trapezoidal", "warmup": 0.6, "decay": 0.5}, "trapezoidal",
     "warmup + decay must be at most 1, the whole run (got 0.6 + 0.5 = 1.1)"),
    ({"kind": "trapezoidal", "warmup": 1.5, "decay": 0}, "warmup",
     "less than or equal to 1"),
    ({"kind": "trapezoidal", "warmup": 0.1, "decay": -0.1}, "decay",
     "greater than or equal to 0"),
    ({"kind": "trapezoidal", "warmup": 0.1}, "decay", "Field required"),
    ({"kind": "trapezoidal", "warmup": 0.1, "decay": 0.1, "start_factor": 2}, "start_factor",
     "less than or equal to 1"),
    ({"kind": "trapezoidal", "warmup": True, "decay": 0.1}, "warmup", "not a boolean"),
    ({"kind": "warmup_cosine", "warmup": 1}, "warmup", "less than 1"),
    ({"kind": "warmup_cosine", "warmup": 0.1, "final_factor": -0.5}, "final_factor",
     "greater than or equal to 0"),
    ({"kind": "warmup_cosine", "warmup": float("nan")}, "warmup", "finite number"),
    ({"kind": "cosine_wr", "period": 0}, "period", "greater than 0"),
    ({"kind": "cosine_wr", "mult": 1.5}, "mult", "valid integer"),
    ({"kind": "cosine", "warmup": 0.1}, "warmup", "Extra inputs are not permitted"),
    ({"kind": "cosine", "unit": "steps"}, "unit", "'epoch' or 'step'"),
    ({"kind": "cosin"}, "schedule", "'cosine', 'cosine_wr', 'trapezoidal', 'warmup_cosine'"),
])
def test_invalid_schedules_say_what_is_wrong(schedule: dict[str, Any], field: str,
                                             message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _sgd(schedule)
    errors = info.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"][0] == "schedule" and errors[0]["loc"][-1] == field
    assert message in errors[0]["msg"]


def test_schedules_load_from_yaml(spec_root: SpecWriter) -> None:
    root = spec_root({
        "optimizers/cos": "kind: sgd\nlr: 0.1\nschedule: {kind: cosine}\n",
        "optimizers/wsd": ("kind: adam\nschedule:\n  kind: trapezoidal\n  warmup: 0.05\n"
                           "  decay: 0.2\n  unit: step\n"),
        "optimizers/bad": ("kind: sgd\nschedule:\n  kind: trapezoidal\n  warmup: 0.6\n"
                           "  decay: 0.6\n"),
    })
    catalog = load_catalog(root)
    cos, wsd = catalog.get("optimizers", "cos"), catalog.get("optimizers", "wsd")
    assert isinstance(cos, SGD) and cos.schedule == Cosine(kind="cosine")
    assert isinstance(wsd, Adam) and wsd.schedule == Trapezoidal(
        kind="trapezoidal", warmup=0.05, decay=0.2, unit="step")
    assert len(catalog.issues) == 1
    issue = catalog.issues[0]
    assert issue.file.endswith("bad.yaml") and issue.line == 2
    assert issue.message == "warmup + decay must be at most 1, the whole run (got 0.6 + 0.6 = 1.2)"


# ------------------------------------------------------------ published Crowded Valley data


def _published_files() -> list[Any]:
    if not CROWDED_VALLEY.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no published Crowded Valley sample at {CROWDED_VALLEY}"))]
    files = sorted(p for p in CROWDED_VALLEY.rglob("*.json")
                   if p.relative_to(CROWDED_VALLEY).parts[1] in {"cosine", "cosine_wr"})
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no cosine or cosine_wr runs under {CROWDED_VALLEY}"))]
    return [pytest.param(p, id=p.relative_to(CROWDED_VALLEY).parts[1] + "/" + p.stem)
            for p in files]


@pytest.mark.parametrize("path", _published_files())
def test_published_crowded_valley_factors(path: Path) -> None:
    """obsbench's factor equals the published one at every epoch 0..E (E itself included)."""
    record = json.loads(path.read_text())
    epochs: list[int] = record["training_params"]["lr_sched_epochs"]
    factors: list[float] = record["training_params"]["lr_sched_factors"]
    total: int = record["num_epochs"]
    assert len(epochs) == len(factors) > 0 and epochs == sorted(epochs)
    kind = path.relative_to(CROWDED_VALLEY).parts[1]
    schedule: ScheduleBase = Cosine(kind="cosine") if kind == "cosine" else CosineWR(
        kind="cosine_wr")
    for epoch in range(total + 1):
        # DeepOBS: factor i applies from epoch lr_sched_epochs[i] on; before the first, 1
        i = bisect.bisect_right(epochs, epoch) - 1
        published = 1.0 if i < 0 else float(factors[i])
        assert close(schedule.factor(epoch, total), published), (epoch, published)


# ----------------------------------------------------------------- through the runner


def _expected_losses(lr: float, factors: list[float]) -> list[float]:
    """Full-batch SGD on quadratic_deep in float64: the loss before each step."""
    hessian = np.asarray(deep_spectrum_hessian(), dtype=np.float32).astype(np.float64)
    data = noise_data(42).numpy().astype(np.float64)
    mean = data.mean(axis=0)
    theta = np.ones(hessian.shape[0])
    losses = []
    for factor in factors:
        diff = theta - data
        losses.append(float(0.5 * np.mean(np.sum((diff @ hessian) * diff, axis=1))))
        grad = 0.5 * (hessian + hessian.T) @ (theta - mean)
        theta = theta - lr * factor * grad
    diff = theta - data
    losses.append(float(0.5 * np.mean(np.sum((diff @ hessian) * diff, axis=1))))
    return losses


@pytest.mark.parametrize(("schedule", "factors"), [
    (Cosine(kind="cosine"), [ref_cosine(e, 5) for e in range(5)]),
    (Cosine(kind="cosine", unit="step"), [ref_cosine(e, 5) for e in range(5)]),
    (Trapezoidal(kind="trapezoidal", warmup=0.4, decay=0.4),
     [0.0, 0.5, 1.0, 1.0, 0.5]),
], ids=["cosine-epoch", "cosine-step", "trapezoidal"])
def test_runner_uses_lr_times_factor(schedule: ScheduleBase, factors: list[float]) -> None:
    """Full batch (batch size = the 1000 training points), so each epoch is one SGD step
    on the same gradient whatever the batch order: the loss before step e pins down the
    learning rate of every earlier step, ``theta <- theta - lr * factor(e) * grad``."""
    lr = 0.02
    spec = RunSpec.model_validate({
        "suite": "test", "problem_id": "q", "optimizer_id": "o", "seed": 0, "tiny": False,
        "problem": QuadraticDeep(kind="quadratic_deep", batch_size=1000, num_epochs=5),
        "optimizer": SGD(kind="sgd", lr=lr, schedule=schedule)})
    record = run(spec)
    assert record.status == "ok", record.error
    assert record.timings.steps == 5
    expected = _expected_losses(lr, factors)
    assert record.minibatch_losses == pytest.approx(expected[:5], rel=1e-5)
    assert record.curves["train"]["loss"] == pytest.approx(expected, rel=1e-5)
    # the check tells the schedule apart from the constant rate and from an off-by-one
    for wrong in ([1.0] * 5, [*factors[1:], 0.0], [1.0, *factors[:-1]]):
        if wrong != factors:
            assert _expected_losses(lr, wrong) != pytest.approx(expected, rel=1e-3)
