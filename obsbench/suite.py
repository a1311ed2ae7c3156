"""Suites: the ``suites`` spec family, and their expansion into hashed :class:`RunSpec`.

A suite names problems, optimizers, a tuning spec and instruments by id (file stem).
Running it has two phases: :func:`expand` gives one :class:`RunSpec` per (problem,
optimizer, trial, trial seed); :func:`select` picks each problem and optimizer's best trial
from those records and gives the re-runs of it with more seeds. A run's id is a hash of
everything that determines its result, so the same run reached twice (a re-run with a trial's
seed, or from two suites) is one run, and a changed spec is a new run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from obsbench.instruments import InstrumentSpec
from obsbench.optimizers import OptimizerSpec
from obsbench.problems import ProblemSpec
from obsbench.spec import Loc, NonNegativeInt, PositiveInt, Spec
from obsbench.tuning import Trial, TuningBase

if TYPE_CHECKING:
    from obsbench.catalog import Catalog
    from obsbench.results import RunRecord


class Benchmark(Spec):
    """Every problem x optimizer x tuning trial x seed."""

    kind: Literal["benchmark"]
    problems: list[str] = Field(min_length=1)
    optimizers: list[str] = Field(min_length=1)
    tuning: str = "one_shot"
    seeds: list[NonNegativeInt] | None = Field(
        None, min_length=1, description="Run every trial with exactly these seeds, and skip "
        "the tuning spec's seed policy and re-runs (for quick sweeps).")
    instruments: list[str] = Field(default_factory=list)
    num_epochs: PositiveInt | None = Field(
        None, description="Overrides every problem's number of epochs (for short suites).")

    @field_validator("problems", "optimizers", "seeds", "instruments")
    @classmethod
    def _unique(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"repeated entries: {', '.join(repeated)}")
        return values

    def references(self) -> list[tuple[Loc, str, str]]:
        """``(loc, family directory, id)`` for every spec this suite names."""
        refs: list[tuple[Loc, str, str]] = [(("tuning",), "tuning", self.tuning)]
        for field, family in (("problems", "problems"), ("optimizers", "optimizers"),
                              ("instruments", "instruments")):
            refs += [((field, i), family, name) for i, name in enumerate(getattr(self, field))]
        return refs


SuiteSpec = Annotated[Benchmark, Field(discriminator="kind")]


class RunSpec(Spec):
    """One fully resolved training run."""

    suite: str = Field(description="The suite that asked for it (not part of the id).")
    problem_id: str
    problem: ProblemSpec
    optimizer_id: str
    optimizer: OptimizerSpec
    instruments: list[InstrumentSpec] = Field(default_factory=list)
    seed: NonNegativeInt
    tiny: bool = False
    trial: int | None = Field(None, description="Index of the tuning trial (not part of the id).")

    @property
    def run_id(self) -> str:
        """16 hex digits of a SHA-256 of the resolved specs, seed and variant.

        Only what can change the result counts: not the suite, the trial index or the
        optimizer's search space.
        """
        payload = self.model_dump(mode="json", exclude={
            "suite": True, "trial": True, "optimizer": {"search_space"}})
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolved(suite_id: str, catalog: Catalog) -> tuple[Benchmark, TuningBase, list[Any]]:
    suite = catalog.get("suites", suite_id)
    tuning = catalog.get("tuning", suite.tuning)  # type: ignore[attr-defined]
    assert isinstance(suite, Benchmark) and isinstance(tuning, TuningBase)
    instruments = [catalog.get("instruments", name) for name in suite.instruments]
    return suite, tuning, instruments


def _problem(suite: Benchmark, catalog: Catalog, problem_id: str) -> Any:
    problem = catalog.get("problems", problem_id)
    if suite.num_epochs is not None:
        problem = problem.model_copy(update={"num_epochs": suite.num_epochs})
    return problem


def trials(tuning: TuningBase, optimizer: Any) -> list[Trial]:
    """The trial settings of one optimizer under a tuning spec."""
    return tuning.trials(tuning.effective_space(optimizer.search_space))


def _optimizers(suite_id: str, suite: Benchmark, optimizer: str | None) -> list[str]:
    if optimizer is None:
        return suite.optimizers
    if optimizer not in suite.optimizers:
        raise ValueError(f"optimizer '{optimizer}' is not in suite {suite_id}'s optimizers "
                         f"({', '.join(suite.optimizers)})")
    return [optimizer]


def expand(suite_id: str, catalog: Catalog, tiny: bool = False,
           optimizer: str | None = None) -> list[RunSpec]:
    """The first phase of a suite: every trial of every problem x optimizer (or of the one
    ``optimizer``), with the trial seeds (or the suite's own ``seeds``), in a stable order.

    Raises:
        ValueError: ``optimizer`` is not one of the suite's.
    """
    suite, tuning, instruments = _resolved(suite_id, catalog)
    seeds = suite.seeds if suite.seeds is not None else tuning.trial_seeds()
    optimizer_ids = _optimizers(suite_id, suite, optimizer)
    runs = []
    for problem_id in suite.problems:
        problem = _problem(suite, catalog, problem_id)
        for optimizer_id in optimizer_ids:
            base = catalog.get("optimizers", optimizer_id)
            for index, trial in enumerate(trials(tuning, base)):
                resolved = base.with_hyperparameters(trial) if trial else base  # type: ignore[attr-defined]
                runs += [RunSpec(suite=suite_id, problem_id=problem_id, problem=problem,
                                 optimizer_id=optimizer_id, optimizer=resolved,
                                 instruments=instruments, seed=seed, tiny=tiny, trial=index)
                         for seed in seeds]
    return runs


class Choice(BaseModel):
    """The trial chosen for one problem and optimizer, and why."""

    problem: str
    optimizer: str
    trial: int
    hyperparameters: dict[str, Any]
    score: float
    metric: str
    trials: int


def select(suite_id: str, catalog: Catalog, records: Iterable[RunRecord],
           tiny: bool = False, optimizer: str | None = None
           ) -> tuple[list[Choice], list[RunSpec]]:
    """The second phase: choose each problem x optimizer's best trial from the first phase's
    records, and the re-runs of it (those already run keep their ids and are skipped); only
    ``optimizer``'s where given.

    A suite with its own ``seeds``, or with a single trial, has nothing to choose between
    beyond the defaults; its re-runs use the tuning spec's re-run seeds unless the suite
    fixes the seeds, in which case there are none.
    """
    suite, tuning, _ = _resolved(suite_id, catalog)
    by_id = {r.run_id: r for r in records}
    first = expand(suite_id, catalog, tiny, optimizer)
    choices, reruns = [], []
    for (problem_id, optimizer_id), group in itertools.groupby(
            first, key=lambda r: (r.problem_id, r.optimizer_id)):
        runs = list(group)
        classification = runs[0].problem.classification
        metric = tuning.selection.metric_for(classification)
        scores: dict[int, list[float]] = {}
        for run in runs:
            record = by_id.get(run.run_id)
            curve = (record.curves.get(tuning.selection.split, {}).get(metric, [])
                     if record is not None and record.status == "ok" else [])
            scores.setdefault(run.trial or 0, []).append(tuning.selection.score(curve, metric))
        means = {t: float(np.mean(v)) for t, v in scores.items()}
        best = min(means, key=lambda t: (means[t], t))  # ties: the earlier trial
        chosen = next(r for r in runs if r.trial == best)
        choices.append(Choice(problem=problem_id, optimizer=optimizer_id, trial=best,
                              hyperparameters=chosen.optimizer.hyperparameters(),
                              score=means[best], metric=f"{tuning.selection.split} {metric} "
                              f"({tuning.selection.mode})", trials=len(scores)))
        if suite.seeds is None:
            reruns += [chosen.model_copy(update={"seed": seed})
                       for seed in tuning.rerun_seed_list()]
    return choices, reruns


def plan(suite_id: str, catalog: Catalog, optimizer: str, tiny: bool = False) -> dict[str, Any]:
    """Everything the runs of one optimizer in a suite depend on, as JSON data: the suite's
    settings less its list of optimizers, the resolved tuning spec and the ids of the first
    phase's runs (hashes of the resolved problem, optimizer and instrument specs and seeds).

    The DVC pipeline's per-optimizer run stages depend on this instead of on spec files, so
    an optimizer's runs are redone exactly when a spec they use changes: adding another
    optimizer to the suite, or editing a problem the suite does not use, leaves them alone.
    """
    suite, tuning, _ = _resolved(suite_id, catalog)
    return {"suite": suite_id, "optimizer": optimizer, "tiny": tiny,
            "settings": suite.model_dump(mode="json", exclude={"optimizers"}),
            "tuning": tuning.model_dump(mode="json"),
            "runs": [r.run_id for r in expand(suite_id, catalog, tiny, optimizer)]}
