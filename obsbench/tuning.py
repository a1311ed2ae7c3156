"""Tuning: the ``tuning`` spec family, the benchmarking protocol of DeepOBS and Crowded Valley.

A tuning spec says how to search an optimizer's hyperparameters on a problem and how to
report the result:

1. **Trials.** A sampler draws settings from the search space (the tuning spec's ``space``,
   else the optimizer spec's own ``search_space``; hyperparameters outside it keep the
   optimizer spec's values): ``one_shot`` (the spec's values only, Crowded Valley's
   one-shot budget), ``grid`` (every combination; continuous dimensions get ``points``
   values, ends included), ``random`` (``budget`` independent draws), ``quasi_random``
   (``budget`` points of a scrambled Halton sequence, as AlgoPerf's quasi-random search).
   Random and quasi-random draws come from a generator seeded with ``sample_seed``, one trial
   after another, so a smaller budget is a prefix of a larger one and the same settings recur
   across problems (as in Crowded Valley, whose random search used seed 42).
2. **Seeds.** Each trial runs with ``seeds_per_trial`` seeds starting at ``seed``.
3. **Selection.** The best trial by the ``selection`` rule: the mean over its seeds of the
   final (or best over epochs) value of a validation metric. Runs that diverged or failed
   rank last. Selecting on the test split is refused.
4. **Re-runs.** The chosen setting runs with ``rerun_seeds`` seeds starting at ``seed`` (10
   in both studies); seeds it already ran with are not run again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from obsbench.space import Dimension, SearchSpace
from obsbench.spec import NonNegativeInt, PositiveInt, Spec

Trial = dict[str, Any]
"""Hyperparameter name -> value: the settings a trial changes."""


class Selection(Spec):
    """How the best trial is chosen: a validation metric, its final or best value."""

    split: Literal["valid", "train"] = Field(
        "valid", description="The split whose metric decides; never 'test'.")
    metric: Literal["auto", "loss", "accuracy"] = Field(
        "auto", description="auto: accuracy for classification problems, else loss.")
    mode: Literal["final", "best"] = Field(
        "final", description="The value after the last epoch, or the best over epochs.")

    @field_validator("split", mode="before")
    @classmethod
    def _never_test(cls, split: Any) -> Any:
        if split == "test":
            raise ValueError(
                "selecting on the test split leaks the test set into tuning (as DeepOBS 1.1's "
                "baselines did); select on 'valid' and report test")
        return split

    def metric_for(self, classification: bool) -> str:
        if self.metric == "auto":
            return "accuracy" if classification else "loss"
        return self.metric

    def score(self, curves: Sequence[float], metric: str) -> float:
        """A trial's score from one run's curve, oriented so that lower is better."""
        oriented = np.asarray(curves, dtype=float) * (-1.0 if metric == "accuracy" else 1.0)
        if oriented.size == 0 or not np.isfinite(oriented).all():
            return math.inf
        return float(oriented[-1] if self.mode == "final" else oriented.min())


class TuningBase(Spec):
    seed: NonNegativeInt = Field(42, description="First seed; trial and re-run seeds count up.")
    seeds_per_trial: PositiveInt = Field(1, description="Seeds each trial runs with.")
    rerun_seeds: PositiveInt = Field(10, description="Seeds the chosen setting runs with.")
    selection: Selection = Field(default_factory=lambda: Selection())

    def trial_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds_per_trial))

    def rerun_seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.rerun_seeds))

    def trials(self, space: SearchSpace) -> list[Trial]:
        """The settings to try, given the search space."""
        raise NotImplementedError

    def effective_space(self, optimizer_space: SearchSpace) -> SearchSpace:
        """The space to search: the optimizer spec's own (see :class:`_Searched`)."""
        return dict(optimizer_space)


class OneShot(TuningBase):
    """No search: the optimizer spec's values (Crowded Valley's one-shot budget)."""

    kind: Literal["one_shot"]

    def trials(self, space: SearchSpace) -> list[Trial]:
        return [{}]


class _Searched(TuningBase):
    space: SearchSpace | None = Field(
        None, min_length=1,
        description="Replaces the optimizer spec's search_space when given.")

    def effective_space(self, optimizer_space: SearchSpace) -> SearchSpace:
        return dict(self.space) if self.space is not None else dict(optimizer_space)


class Grid(_Searched):
    """Every combination of grid values, in order (the last hyperparameter fastest).

    DeepOBS 1.1's protocol is a grid of 36 log-spaced learning rates from 1e-5 to 1e2.
    """

    kind: Literal["grid"]
    points: PositiveInt = Field(10, description="Values per continuous dimension.")

    def trials(self, space: SearchSpace) -> list[Trial]:
        keys = sorted(space)
        grids = [space[k].grid(self.points) for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grids)]


class _Sampled(_Searched):
    budget: PositiveInt = Field(description="Number of trials (Crowded Valley: 25, 50, 75).")
    sample_seed: NonNegativeInt = Field(42, description="Seed of the sample stream.")

    def unit_points(self, count: int, dims: int) -> np.ndarray:
        """``(count, dims)`` points in the unit cube; row i never depends on ``count``."""
        raise NotImplementedError

    def trials(self, space: SearchSpace) -> list[Trial]:
        keys = sorted(space)
        points = self.unit_points(self.budget, len(keys))
        return [{k: _at(space[k], float(u)) for k, u in zip(keys, row, strict=True)}
                for row in points]


def _at(dimension: Dimension, u: float) -> Any:
    value = dimension.at(u)
    return value.item() if isinstance(value, np.generic) else value


class Random(_Sampled):
    """Independent uniform draws, one trial after another, from ``PCG64(sample_seed)``."""

    kind: Literal["random"]

    def unit_points(self, count: int, dims: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(self.sample_seed))
        return np.array([rng.random(dims) for _ in range(count)]).reshape(count, dims)


class QuasiRandom(_Sampled):
    """A scrambled Halton sequence (scipy's, seeded with ``sample_seed``), as AlgoPerf."""

    kind: Literal["quasi_random"]

    def unit_points(self, count: int, dims: int) -> np.ndarray:
        from scipy.stats import qmc

        if dims == 0:
            return np.zeros((count, 0))
        return qmc.Halton(d=dims, scramble=True, seed=self.sample_seed).random(count)


TuningSpec = Annotated[OneShot | Grid | Random | QuasiRandom, Field(discriminator="kind")]
