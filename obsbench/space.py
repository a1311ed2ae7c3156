"""Search spaces: one dimension per hyperparameter.

A dimension maps a point ``u`` of the unit interval to a value, so that every sampler (grid,
random, quasi-random) works on the unit cube and the same sample stream gives the same
settings whatever the space. Dimensions are specs, written in YAML as::

    lr: {kind: log_uniform, low: 1.0e-4, high: 1.0}
    momentum: {kind: uniform, low: 0.5, high: 0.999}
    k: {kind: int_uniform, low: 1, high: 20}
    nesterov: {kind: choice, values: [true, false]}
    eps: {kind: fixed, value: 1.0e-8}
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from obsbench.spec import PositiveFloat, Spec


class DimensionBase(Spec):
    def at(self, u: float) -> Any:
        """The value at ``u`` in [0, 1)."""
        raise NotImplementedError

    def grid(self, points: int) -> list[Any]:
        """``points`` values spanning the dimension, ends included (finite ones: all)."""
        raise NotImplementedError


class _Interval(DimensionBase):
    """A continuous dimension from ``low`` to ``high``."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Interval:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class LogUniform(_Interval):
    """``10 ** U(log10 low, log10 high)`` (DeepOBS's form); a grid is log-spaced, ends
    included."""

    kind: Literal["log_uniform"]
    low: PositiveFloat
    high: PositiveFloat

    def at(self, u: float) -> float:
        low, high = math.log10(self.low), math.log10(self.high)
        return float(10 ** (low + (high - low) * u))

    def grid(self, points: int) -> list[float]:
        if points == 1:
            return [self.low]
        lo, hi = math.log10(self.low), math.log10(self.high)
        return [10 ** (lo + (hi - lo) * k / (points - 1)) for k in range(points)]


class Uniform(_Interval):
    """``U(low, high)``; a grid is evenly spaced, ends included."""

    kind: Literal["uniform"]

    def at(self, u: float) -> float:
        return self.low + u * (self.high - self.low)

    def grid(self, points: int) -> list[float]:
        if points == 1:
            return [self.low]
        return [self.low + (self.high - self.low) * k / (points - 1) for k in range(points)]


class IntUniform(DimensionBase):
    """An integer drawn uniformly from ``low..high`` (both included)."""

    kind: Literal["int_uniform"]
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntUniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def at(self, u: float) -> int:
        return min(self.high, self.low + math.floor(u * (self.high - self.low + 1)))

    def grid(self, points: int) -> list[int]:
        count = self.high - self.low + 1
        if points >= count:
            return list(range(self.low, self.high + 1))
        return sorted({round(self.low + (count - 1) * k / (points - 1)) for k in range(points)})


class Choice(DimensionBase):
    """One of the listed values, each equally likely; a grid takes them all. A plain YAML
    list is shorthand for it: ``lr: [0.1, 0.01]``."""

    kind: Literal["choice"]
    values: list[Any] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        repeated = sorted({repr(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"values repeat: {', '.join(repeated)}")
        return values

    def at(self, u: float) -> Any:
        return self.values[min(len(self.values) - 1, math.floor(u * len(self.values)))]

    def grid(self, points: int) -> list[Any]:
        return list(self.values)


class Fixed(DimensionBase):
    """Always ``value``."""

    kind: Literal["fixed"]
    value: Any

    def at(self, u: float) -> Any:
        return self.value

    def grid(self, points: int) -> list[Any]:
        return [self.value]


def _list_is_choice(value: Any) -> Any:
    if isinstance(value, list):
        return {"kind": "choice", "values": value}
    if not isinstance(value, dict):
        raise ValueError("expected a list of values or a dimension such as "
                         "{kind: log_uniform, low: 1.0e-4, high: 1.0}")
    return value


Dimension = Annotated[LogUniform | Uniform | IntUniform | Choice | Fixed,
                      Field(discriminator="kind"), BeforeValidator(_list_is_choice)]
SearchSpace = dict[str, Dimension]
"""Hyperparameter name -> dimension."""
