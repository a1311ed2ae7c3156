"""Learning-rate schedules: the ``schedule`` field of every optimizer spec.

A schedule is a factor on the optimizer's base learning rate, ``lr(t) = lr * factor(t, T)``,
where ``t`` counts epochs (from 0, the factor applying from the start of epoch ``t``, as in
DeepOBS and Crowded Valley) or steps (``unit: step``), and ``T`` is the run's number of epochs
or steps. Written in YAML inside an optimizer spec::

    schedule: {kind: cosine}
    schedule: {kind: cosine_wr, period: 10, mult: 2}
    schedule: {kind: trapezoidal, warmup: 0.05, decay: 0.2, unit: step}
    schedule: {kind: warmup_cosine, warmup: 0.05, final_factor: 0.1, unit: step}

Fractions (``warmup``, ``decay``) are fractions of ``T``. Every schedule but ``cosine_wr``
ends at ``t = T``; a ``t`` beyond ``T`` keeps the factor of ``t = T``.

Crowded Valley (Schmidt, Schneider & Hennig, ICML 2021) stores its schedules as per-epoch
factor lists (``training_params.lr_sched_epochs/lr_sched_factors``); ``cosine`` and
``cosine_wr`` reproduce its published lists (checked in ``tests/test_schedules.py``).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from obsbench.spec import NonNegativeFloat, PositiveInt, Probability, Spec

# Fractions in [0, 1] are ``NonNegativeFloat`` with ``le=1`` on the field itself: put in a
# nested ``Annotated`` after the type's validator, pydantic would leak ``"le"`` into the
# JSON Schema instead of ``"maximum"``.


class ScheduleBase(Spec):
    unit: Literal["epoch", "step"] = Field("epoch", description="What t counts.")

    def factor(self, t: int, total: int) -> float:
        """Multiplier of the base learning rate at epoch or step ``t`` of ``total``."""
        raise NotImplementedError


def _validated(t: int, total: int) -> int:
    """``t``, after checking that it is not negative and that ``total`` is at least 1."""
    if total < 1:
        raise ValueError(f"a schedule needs at least one epoch or step (got total={total})")
    if t < 0:
        raise ValueError(f"t must not be negative (got {t})")
    return t


def _checked(t: int, total: int) -> int:
    """:func:`_validated` ``t`` limited to ``total``."""
    return min(_validated(t, total), total)


def _cosine(progress: float) -> float:
    """``0.5 * (1 + cos(pi * progress))``: 1 at 0, 0.5 at 1/2, 0 at 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Constant(ScheduleBase):
    """``factor = 1``."""

    kind: Literal["constant"]

    def factor(self, t: int, total: int) -> float:
        return 1.0


class Cosine(ScheduleBase):
    """Cosine decay to zero over the run: ``factor = 0.5 * (1 + cos(pi * t / T))``.

    1 at ``t = 0``, 0.5 at ``T / 2``, 0 at ``T``. One cycle of SGDR without restarts
    (Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017);
    Crowded Valley's ``cosine`` schedule, whose published per-epoch factors it reproduces.
    """

    kind: Literal["cosine"]

    def factor(self, t: int, total: int) -> float:
        t = _checked(t, total)
        return _cosine(t / total)


class CosineWR(ScheduleBase):
    """Cosine with warm restarts (SGDR; Loshchilov & Hutter, ICLR 2017).

    Cycle ``i`` (from 0) lasts ``T_i = period * mult**i``; within it
    ``factor = 0.5 * (1 + cos(pi * t_cur / T_i))`` with ``t_cur`` the epochs (or steps) since
    the cycle began, so the factor restarts at 1 at ``t = period * (mult**i - 1) / (mult - 1)``
    (every ``period`` when ``mult`` is 1). With the defaults the restarts are at 10, 30, 70,
    150: Crowded Valley's ``cosine_wr`` schedule, whose published factors it reproduces. The
    cycles do not depend on ``T``: a run may end inside a cycle (Crowded Valley's 100-epoch
    runs end 30 epochs into the 80-epoch cycle).
    """

    kind: Literal["cosine_wr"]
    period: PositiveInt = Field(10, description="Length of the first cycle, in units of t.")
    mult: PositiveInt = Field(2, description="Factor on the cycle length after each restart.")

    def factor(self, t: int, total: int) -> float:
        t = _validated(t, total)  # not limited to T: the cycles go on
        if self.mult == 1:
            start, length = t - t % self.period, self.period
        else:
            start, length = 0, self.period
            while t >= start + length:
                start += length
                length *= self.mult
        return _cosine((t - start) / length)


class Trapezoidal(ScheduleBase):
    """Linear warm-up, constant, then linear decay to zero (a trapezoid).

    With ``W = warmup * T``, ``D = decay * T`` and ``s = start_factor``::

        factor = s + (1 - s) * t / W    for t < W          (warm-up from s to 1)
                 1                      for W <= t <= T - D
                 (T - t) / D            for t > T - D      (linear decay to 0 at T)

    ``warmup = 0`` or ``decay = 0`` drops that phase. With ``unit: epoch`` and
    ``start_factor: 0`` the whole first epoch runs at learning rate 0; warm up per step, or
    start above 0, to avoid that. Reference: the "constant learning rate with cooldown"
    schedule (warm-up, constant, linear cooldown) of Hägele et al., "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations", NeurIPS 2024
    (arXiv:2405.18392). Crowded Valley's fourth schedule was a trapezoidal one (warm-up,
    constant, linear decay), but its published data have no such folder, so its exact
    fractions are not known here.
    """

    kind: Literal["trapezoidal"]
    warmup: NonNegativeFloat = Field(le=1, description="Fraction of T spent warming up, "
                                     "in [0, 1].")
    decay: NonNegativeFloat = Field(le=1, description="Fraction of T spent decaying to 0, "
                                    "in [0, 1].")
    start_factor: NonNegativeFloat = Field(0.0, le=1, description="Factor at t = 0, in [0, 1].")

    @model_validator(mode="after")
    def _phases_fit(self) -> Trapezoidal:
        if self.warmup + self.decay > 1 + 1e-12:
            raise ValueError(f"warmup + decay must be at most 1, the whole run "
                             f"(got {self.warmup} + {self.decay} = {self.warmup + self.decay})")
        return self

    def factor(self, t: int, total: int) -> float:
        t = _checked(t, total)
        warm, cool = self.warmup * total, self.decay * total
        if t < warm:
            return self.start_factor + (1.0 - self.start_factor) * t / warm
        if total - t < cool:
            return min(1.0, (total - t) / cool)
        return 1.0


class WarmupCosine(ScheduleBase):
    """Linear warm-up, then cosine decay to ``final_factor``.

    With ``W = warmup * T``, ``s = start_factor`` and ``f = final_factor``::

        factor = s + (1 - s) * t / W                                    for t < W
                 f + (1 - f) * 0.5 * (1 + cos(pi * (t - W) / (T - W)))  for t >= W

    so the factor is 1 at ``W`` and ``f`` at ``T``. ``warmup = 0`` is plain cosine (with
    ``f = 0``, exactly ``kind: cosine``). References: linear warm-up (Goyal et al.,
    "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017) followed by the
    cosine decay of SGDR (Loshchilov & Hutter, ICLR 2017). With ``unit: epoch`` and
    ``start_factor: 0`` the first epoch runs at learning rate 0.
    """

    kind: Literal["warmup_cosine"]
    warmup: Probability = Field(description="Fraction of T spent warming up, in [0, 1).")
    start_factor: NonNegativeFloat = Field(0.0, le=1, description="Factor at t = 0, in [0, 1].")
    final_factor: NonNegativeFloat = Field(0.0, le=1, description="Factor at t = T, in [0, 1].")

    def factor(self, t: int, total: int) -> float:
        t = _checked(t, total)
        warm = self.warmup * total
        if t < warm:
            return self.start_factor + (1.0 - self.start_factor) * t / warm
        progress = (t - warm) / (total - warm)
        return self.final_factor + (1.0 - self.final_factor) * _cosine(progress)


ScheduleSpec = Annotated[Constant | Cosine | CosineWR | Trapezoidal | WarmupCosine,
                         Field(discriminator="kind")]
