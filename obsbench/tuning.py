"""Tuning: the ``tuning`` spec family, which turns an optimizer spec into trial settings.

This first version knows the one-shot setting (the optimizer spec's own values, as in
Crowded Valley's "one-shot" budget) and an explicit grid (the Cartesian product of listed
values, as in the DeepOBS 1.1 learning-rate grid).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from obsbench.spec import Spec


class OneShot(Spec):
    """No tuning: one trial with the optimizer spec's values."""

    kind: Literal["one_shot"]

    def names(self) -> list[str]:
        return []

    def trials(self) -> list[dict[str, Any]]:
        return [{}]


class Grid(Spec):
    """Every combination of the listed values, in the order listed (last key fastest)."""

    kind: Literal["grid"]
    space: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _distinct(cls, space: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in space.items():
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"values of '{name}' repeat")
        return space

    def names(self) -> list[str]:
        return list(self.space)

    def trials(self) -> list[dict[str, Any]]:
        keys = list(self.space)
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*self.space.values())]


TuningSpec = Annotated[OneShot | Grid, Field(discriminator="kind")]
