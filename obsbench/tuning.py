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

from obsbench.space import Dimension, IntUniform, SearchSpace
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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Random(_Sampled):
    """Random search exactly as DeepOBS 1.2's tuner drew it for Crowded Valley.

    numpy's legacy ``RandomState(sample_seed)`` is seeded once; trials are drawn one after
    another, each trial's hyperparameters in the order of the search space; an integer
    dimension takes ``randint(low, high + 1)``, any other one ``random_sample()`` mapped
    through the dimension (a log-uniform one as ``10 ** U(log10 low, log10 high)``). With
    ``sample_seed: 42`` and the optimizers' default search spaces this regenerates the
    published Crowded Valley samples (see ``obsbench.optimizers.crowded_valley``).
    """

    kind: Literal["random"]

    def trials(self, space: SearchSpace) -> list[Trial]:
        state = np.random.RandomState(self.sample_seed)
        return [{name: _plain(_draw(state, dim)) for name, dim in space.items()}
                for _ in range(self.budget)]


def _draw(state: np.random.RandomState, dimension: Dimension) -> Any:
    if isinstance(dimension, IntUniform):
        return int(state.randint(dimension.low, dimension.high + 1))
    return dimension.at(float(state.random_sample()))


class QuasiRandom(_Sampled):
    """A scrambled Halton sequence (scipy's, seeded with ``sample_seed``), as AlgoPerf."""

    kind: Literal["quasi_random"]

    def trials(self, space: SearchSpace) -> list[Trial]:
        from scipy.stats import qmc

        keys = list(space)
        if not keys:
            return [{} for _ in range(self.budget)]
        points = qmc.Halton(d=len(keys), scramble=True, seed=self.sample_seed).random(self.budget)
        return [{k: _plain(space[k].at(float(u))) for k, u in zip(keys, row, strict=True)}
                for row in points]


TuningSpec = Annotated[OneShot | Grid | Random | QuasiRandom, Field(discriminator="kind")]
