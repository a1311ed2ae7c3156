"""Learning-rate schedules: the ``schedule`` field of every optimizer spec.

A schedule is a factor on the optimizer's base learning rate, ``lr(t) = lr * factor(t, T)``,
where ``t`` counts epochs (from 0, the factor applying from the start of epoch ``t``, as in
DeepOBS and Crowded Valley) or steps (``unit: step``), and ``T`` is the run's number of epochs
or steps.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from obsbench.spec import Spec


class ScheduleBase(Spec):
    unit: Literal["epoch", "step"] = Field("epoch", description="What t counts.")

    def factor(self, t: int, total: int) -> float:
        """Multiplier of the base learning rate at epoch or step ``t`` of ``total``."""
        raise NotImplementedError


class Constant(ScheduleBase):
    """``factor = 1``."""

    kind: Literal["constant"]

    def factor(self, t: int, total: int) -> float:
        return 1.0


ScheduleSpec = Annotated[Constant, Field(discriminator="kind")]
