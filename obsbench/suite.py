"""Suites: the ``suites`` spec family, and their expansion into hashed :class:`RunSpec`.

A suite names problems, optimizers, a tuning spec and instruments by id (file stem), plus
the seeds. Expanding it gives one :class:`RunSpec` per (problem, optimizer, trial, seed);
a run's id is a hash of everything that determines its result, so the same run reached
from two suites is one run, and a changed spec is a new run.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator

from obsbench.instruments import InstrumentSpec
from obsbench.optimizers import OptimizerSpec
from obsbench.problems import ProblemSpec
from obsbench.spec import Loc, NonNegativeInt, PositiveInt, Spec

if TYPE_CHECKING:
    from obsbench.catalog import Catalog


class Benchmark(Spec):
    """Every problem x optimizer x tuning trial x seed."""

    kind: Literal["benchmark"]
    problems: list[str] = Field(min_length=1)
    optimizers: list[str] = Field(min_length=1)
    tuning: str = "one_shot"
    seeds: list[NonNegativeInt] = Field(default=[42], min_length=1)
    instruments: list[str] = Field(default_factory=list)
    num_epochs: PositiveInt | None = Field(
        None, description="Overrides every problem's number of epochs (for short suites).")

    @field_validator("problems", "optimizers", "seeds", "instruments")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
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

    @property
    def run_id(self) -> str:
        """16 hex digits of a SHA-256 of the resolved specs, seed and variant."""
        payload = self.model_dump(mode="json", exclude={"suite"})
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def expand(suite_id: str, catalog: Catalog, tiny: bool = False) -> list[RunSpec]:
    """All runs of a suite, in a stable order (problem, optimizer, trial, seed)."""
    suite = catalog.get("suites", suite_id)
    assert isinstance(suite, Benchmark)
    tuning = catalog.get("tuning", suite.tuning)
    instruments = [catalog.get("instruments", name) for name in suite.instruments]
    runs = []
    for problem_id in suite.problems:
        problem = catalog.get("problems", problem_id)
        if suite.num_epochs is not None:
            problem = problem.model_copy(update={"num_epochs": suite.num_epochs})
        for optimizer_id in suite.optimizers:
            base = catalog.get("optimizers", optimizer_id)
            for trial in tuning.trials():  # type: ignore[attr-defined]
                optimizer = base.with_hyperparameters(trial) if trial else base  # type: ignore[attr-defined]
                for seed in suite.seeds:
                    runs.append(RunSpec(
                        suite=suite_id, problem_id=problem_id, problem=problem,
                        optimizer_id=optimizer_id, optimizer=optimizer,
                        instruments=instruments, seed=seed, tiny=tiny))
    return runs
