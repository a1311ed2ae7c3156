"""Tuning: samplers, budgets as prefixes, selection on validation, and the two-phase protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from obsbench.catalog import FAMILIES, Catalog
from obsbench.cli import main
from obsbench.results import read_records, read_selection, read_table
from obsbench.space import LogUniform
from obsbench.tuning import Grid, OneShot, QuasiRandom, Random, Selection
from tests.conftest import SpecWriter

SPACE = {
    "lr": LogUniform(kind="log_uniform", low=1e-4, high=1.0),
    "momentum": LogUniform(kind="log_uniform", low=1e-4, high=0.999),
}


@pytest.mark.parametrize("sampler", [Random, QuasiRandom])
def test_a_smaller_budget_is_a_prefix_of_a_larger_one(sampler: type[Random]) -> None:
    small = sampler(kind=sampler.model_fields["kind"].annotation.__args__[0], budget=25)
    large = sampler(kind=small.kind, budget=75)
    assert small.trials(SPACE) == large.trials(SPACE)[:25]
    assert len({json.dumps(t, sort_keys=True) for t in large.trials(SPACE)}) == 75
    other_seed = sampler(kind=small.kind, budget=25, sample_seed=7)
    assert other_seed.trials(SPACE) != small.trials(SPACE)


def test_shipped_crowded_valley_budgets_are_prefixes(catalog: Catalog) -> None:
    """cv_small (25) and cv_medium (50) are the first trials of cv_large (75), for every
    shipped optimizer's own search space."""
    sizes = {"cv_small": 25, "cv_medium": 50, "cv_large": 75}
    for optimizer_id in catalog.ids("optimizers"):
        space = catalog.get("optimizers", optimizer_id).search_space  # type: ignore[attr-defined]
        large = catalog.get("tuning", "cv_large").trials(space)  # type: ignore[attr-defined]
        for name, size in sizes.items():
            trials = catalog.get("tuning", name).trials(space)  # type: ignore[attr-defined]
            assert len(trials) == (size if space else 0) or not space
            assert trials == large[: len(trials)]


def test_random_draws_fill_the_space() -> None:
    trials = Random(kind="random", budget=400).trials(SPACE)
    logs = [math.log10(t["lr"]) for t in trials]
    assert -4 <= min(logs) < -3.8 and -0.2 < max(logs) <= 0
    assert 0.4 < sum(1 for x in logs if x < -2) / len(logs) < 0.6  # log-uniform: half below 1e-2


def test_deepobs_grid_is_the_published_learning_rates(catalog: Catalog) -> None:
    grid = catalog.get("tuning", "deepobs_lr_grid")
    trials = grid.trials(grid.effective_space({}))  # type: ignore[attr-defined]
    assert len(trials) == 36
    for k, trial in enumerate(trials):
        assert trial["lr"] == pytest.approx(10 ** (-5 + k / 5), rel=1e-12)


def test_grid_combines_dimensions_and_shorthand_lists() -> None:
    grid = Grid.model_validate({"kind": "grid", "space": {"lr": [0.1, 0.01], "eps": [1, 2, 3]}})
    trials = grid.trials(grid.effective_space({}))
    assert len(trials) == 6 and trials[0] == {"eps": 1, "lr": 0.1}


def test_selection_refuses_the_test_split() -> None:
    with pytest.raises(ValidationError, match="selecting on the test split leaks"):
        Selection(split="test")  # type: ignore[arg-type]


def test_selection_scores_final_or_best_lower_is_better() -> None:
    final, best = Selection(mode="final"), Selection(mode="best")
    assert final.score([3.0, 1.0, 2.0], "loss") == 2.0
    assert best.score([3.0, 1.0, 2.0], "loss") == 1.0
    assert best.score([0.1, 0.9, 0.5], "accuracy") == -0.9
    assert final.score([0.1, float("nan")], "loss") == math.inf
    assert Selection().metric_for(classification=True) == "accuracy"
    assert Selection().metric_for(classification=False) == "loss"


def test_one_shot_has_one_trial_and_ten_rerun_seeds(catalog: Catalog) -> None:
    one_shot = catalog.get("tuning", "one_shot")
    assert isinstance(one_shot, OneShot)
    assert one_shot.trials({}) == [{}]
    assert one_shot.trial_seeds() == [42]
    assert one_shot.rerun_seed_list() == list(range(42, 52))


def test_every_tuning_kind_has_a_shipped_spec(catalog: Catalog) -> None:
    shipped = {catalog.get("tuning", i).kind for i in catalog.ids("tuning")}  # type: ignore[attr-defined]
    assert shipped == set(FAMILIES["tuning"].members)


def test_protocol_tunes_on_validation_then_reruns_the_choice(
        spec_root: SpecWriter, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = spec_root({
        "problems/quad": "kind: quadratic_deep\nnum_epochs: 3\n",
        "optimizers/sgd": "kind: sgd\n",
        "tuning/lr3": ("kind: grid\nspace: {lr: [1.0e-4, 0.01, 1.0e+3]}\nseed: 5\n"
                       "rerun_seeds: 3\n"),
        "suites/tune": "kind: benchmark\nproblems: [quad]\noptimizers: [sgd]\ntuning: lr3\n",
    })
    results = tmp_path / "results"
    argv = ["run", "tune", "--specs", str(root), "--results", str(results), "--tiny"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tune: 3 runs (2 ok, 1 diverged" in out
    assert "tune re-runs: 3 runs (2 ok, 0 diverged, 0 failed, 1 skipped)" in out

    records = {r.run_id: r for r in read_records(results)}
    trials = [r for r in records.values() if r.spec.seed == 5]
    valid = {r.spec.optimizer.lr: r.curves["valid"]["loss"][-1]  # type: ignore[union-attr]
             for r in trials if r.status == "ok"}
    [choice] = read_selection(results)
    assert choice.hyperparameters["lr"] == min(valid, key=valid.__getitem__) == 0.01
    assert choice.score == pytest.approx(valid[0.01])
    reruns = sorted(r.spec.seed for r in records.values() if r.spec.optimizer.lr == 0.01)  # type: ignore[union-attr]
    assert reruns == [5, 6, 7]  # the trial's own seed 5 is not run twice
    assert len(records) == 5

    assert main(["table", str(results), "--out", str(tmp_path / "runs.csv")]) == 0
    runs = read_table(tmp_path / "runs.csv")
    assert sorted(runs.loc[runs["selected"], "seed"]) == [5, 6, 7]
    assert set(runs["trial"]) == {0, 1, 2}

    capsys.readouterr()
    assert main(argv) == 0  # resuming a finished protocol runs nothing
    out = capsys.readouterr().out
    assert "0 ok, 0 diverged, 0 failed, 3 skipped" in out
