"""Instruments: the ``instruments`` spec family, Cockpit's quantities on any ``nn.Module``.

Cockpit (Schneider, Dangel & Hennig, "Cockpit: A Practical Debugging Tool for the Training
of Deep Neural Networks", NeurIPS 2021; formulas from its appendix and ``cockpit/quantities``
of cockpit-for-pytorch 1.0.2) defines what each quantity measures; obsbench computes the same
numbers without BackPACK, so they work for LayerNorm, attention and any other module (see
:mod:`obsbench.instruments.persample` and :mod:`obsbench.instruments.curvature`).

Notation: mini-batch of ``B`` samples, objective ``L = (1/B) sum_n l_n``, per-sample
gradients ``g_n``, mini-batch gradient ``g = (1/B) sum_n g_n``, parameters ``theta_t`` before
the update of step ``t`` and ``s_t = theta_{t+1} - theta_t`` the update the optimizer made.

A spec names one quantity (``kind: norm_test``) or one of Cockpit's presets
(``kind: preset, name: economy``), with a schedule: ``every: N`` (steps 0, N, 2N, ...) or
``log: {end: E, points: P}`` (the integer parts of ``base**linspace(start, end, P)`` and
step 0, Cockpit's ``logarithmic`` schedule). Two-step quantities (``alpha``,
``update_size``) start at a scheduled step ``t``, finish at ``t + 1`` and are stored under
``t``, as in Cockpit. Instruments never change parameters, gradients, buffers, optimizer
state or random streams: a run with instruments has the loss curve of one without.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from obsbench.spec import NonNegativeInt, PositiveFloat, PositiveInt, Spec

if TYPE_CHECKING:
    from torch import Tensor

    from obsbench.instruments.monitor import StepContext

TOTAL = "total"
"""The ``layer`` name of a network-wide value."""

Value = tuple[str, float] | tuple[str, float, "HistValue"]
"""``(layer, value)``, or ``(layer, total count, histogram)`` for histograms."""
HistValue = tuple[list[tuple[float, float]], list[int], list[int]]


class LogSchedule(Spec):
    """Cockpit's ``logarithmic(start, end, steps, base)``: steps ``int(base**x)`` for ``x``
    in ``linspace(start, end, points)``, plus step 0."""

    start: float = 0.0
    end: PositiveFloat = Field(..., description="Last exponent (steps up to base**end).")
    points: PositiveInt = 300
    base: Annotated[float, Field(gt=1)] = 10.0

    @cached_property
    def steps(self) -> frozenset[int]:
        n = self.points
        exponents = [self.start + (self.end - self.start) * i / max(1, n - 1) for i in range(n)]
        return frozenset({0} | {int(self.base**x) for x in exponents})


class Scheduled(Spec):
    every: PositiveInt | None = Field(None, description="Measure at steps 0, N, 2N, ... "
                                                        "(default: every step).")
    log: LogSchedule | None = Field(None, description="Measure on a logarithmic timeline.")

    @model_validator(mode="after")
    def _one_schedule(self) -> Scheduled:
        if self.every is not None and self.log is not None:
            raise ValueError("give either `every` or `log`, not both")
        return self

    def due(self, step: int) -> bool:
        if self.log is not None:
            return step in self.log.steps
        return step % (self.every or 1) == 0


class Quantity(Scheduled):
    """One quantity; subclasses set ``needs`` and implement :meth:`compute`.

    ``needs`` names what the engine must provide at a due step, computed once for all due
    quantities: ``grads`` (mini-batch gradient), ``initial`` (parameters at step 0),
    ``losses`` (individual losses), ``norms`` (``||g_n||^2``), ``dots_g`` (``g_n . g``),
    ``sum_sq`` (``sum_n g_n^2``), ``hist``/``hist2d`` (gradient element histograms), ``diag``
    (diagonal curvature), ``max_ev`` (Hessian-vector products), ``update`` (parameters
    before and after the optimizer's step).
    """

    kind: str
    needs: ClassVar[frozenset[str]] = frozenset()
    per_sample: ClassVar[bool] = False
    two_step: ClassVar[bool] = False

    def compute(self, ctx: StepContext) -> list[Value]:
        """``(layer, value[, histogram])`` at this step; called after ``backward``."""
        raise NotImplementedError


def norms(tensors: dict[str, Tensor]) -> dict[str, float]:
    """Euclidean norm of every tensor, in one fused kernel and one conversion."""
    import torch

    if not tensors:
        return {}
    values = torch.stack(torch._foreach_norm(list(tensors.values()))).tolist()
    return dict(zip(tensors, values, strict=True))


def differences(current: dict[str, Tensor], reference: dict[str, Tensor],
                out: dict[str, Tensor]) -> dict[str, Tensor]:
    """``current - reference`` per tensor, written into ``out`` (fused kernels; reusing the
    buffers avoids fresh allocations, whose page faults cost more than the arithmetic)."""
    import torch

    names = list(current)
    if names:
        buffers = [out[n] for n in names]
        torch._foreach_copy_(buffers, [current[n].detach() for n in names])
        torch._foreach_sub_(buffers, [reference[n] for n in names])
    return out


def total_norm(values: list[tuple[str, float]]) -> list[Value]:
    return [*values, (TOTAL, math.sqrt(sum(v * v for _, v in values)))]


class Loss(Quantity):
    """Mini-batch loss ``L(theta_t)`` (Cockpit's ``Loss``)."""

    kind: Literal["loss"]

    def compute(self, ctx: StepContext) -> list[Value]:
        return [(TOTAL, ctx.loss)]


class GradNorm(Quantity):
    """``||g||_2`` per parameter tensor and in total (Cockpit's ``GradNorm``)."""

    kind: Literal["grad_norm"]
    needs = frozenset({"grads"})

    def compute(self, ctx: StepContext) -> list[Value]:
        return total_norm(list(ctx.grad_norms.items()))


class Distance(Quantity):
    """``||theta_t - theta_0||_2`` per parameter tensor and in total, before the update of
    step ``t`` (Cockpit's ``Distance``)."""

    kind: Literal["distance"]
    needs = frozenset({"initial"})

    def compute(self, ctx: StepContext) -> list[Value]:
        moved = differences(ctx.params, ctx.initial, ctx.scratch("distance"))
        return total_norm(list(norms(moved).items()))


class UpdateSize(Quantity):
    """``||theta_{t+1} - theta_t||_2`` per parameter tensor and in total, the update the
    optimizer made at step ``t`` (Cockpit's ``UpdateSize``)."""

    kind: Literal["update_size"]
    needs = frozenset({"update"})
    two_step = True


class _Test(Quantity):
    per_sample = True
    needs = frozenset({"norms", "dots_g"})


class NormTest(_Test):
    """Norm test (Byrd et al., 2012), the largest ``theta`` that passes:
    ``sqrt( (sum_n ||g_n||^2 - B ||g||^2) / (B (B-1)) / ||g||^2 )``."""

    kind: Literal["norm_test"]
    needs = frozenset({"norms"})

    def compute(self, ctx: StepContext) -> list[Value]:
        b, g2, n2 = ctx.batch_size, ctx.grad_sq_norm, float(ctx.sq_norms.sum())
        return [(TOTAL, math.sqrt(max(0.0, (n2 - b * g2) / (b * (b - 1)) / g2)))]


class InnerTest(_Test):
    """Inner-product test (Bollapragada et al., 2018):
    ``sqrt( (sum_n (g_n . g)^2 - B ||g||^4) / (B (B-1)) / ||g||^4 )``."""

    kind: Literal["inner_test"]
    needs = frozenset({"dots_g"})

    def compute(self, ctx: StepContext) -> list[Value]:
        b, g2, dots = ctx.batch_size, ctx.grad_sq_norm, ctx.dots_g
        value = (float(dots.square().sum()) - b * g2 * g2) / (b * (b - 1)) / (g2 * g2)
        return [(TOTAL, math.sqrt(max(0.0, value)))]


class OrthoTest(_Test):
    """Orthogonality test (Bollapragada et al., 2018):
    ``sqrt( (sum_n ||g_n||^2 - sum_n (g_n . g)^2 / ||g||^2) / (B (B-1)) / ||g||^2 )``."""

    kind: Literal["ortho_test"]

    def compute(self, ctx: StepContext) -> list[Value]:
        b, g2 = ctx.batch_size, ctx.grad_sq_norm
        n2, d2 = float(ctx.sq_norms.sum()), float(ctx.dots_g.square().sum())
        return [(TOTAL, math.sqrt(max(0.0, (n2 - d2 / g2) / (b * (b - 1)) / g2)))]


class Alpha(Quantity):
    """Normalised step length on a noise-aware 1-D quadratic fit along the update
    (Cockpit's ``Alpha``; Schneider et al. 2021, appendix; ``cockpit/quantities/alpha.py``).

    Observations at ``0`` and ``tau = ||s_t||``: the mini-batch losses ``L_t(theta_t)`` and
    ``L_{t+1}(theta_{t+1})`` with the sample variances of the individual losses, and the
    means and sample variances of the per-sample slopes ``g_n . s_t / ||s_t||`` at both
    points. Weighted least squares (variances as weights, zero variances replaced by 1e-10)
    fits ``f(x) = w0 + w1 x + w2 x^2``; ``alpha = 2 tau / (-w1 / w2) - 1``, and -1 where the
    fit is concave. -1: no move, 0: the step reached the 1-D minimum, +1: the step went to
    the other side at equal height. Uses the optimizer's actual update, so it holds for any
    optimizer (Cockpit's cheap path only for plain SGD).
    """

    kind: Literal["alpha"]
    needs = frozenset({"losses", "update"})
    per_sample = True
    two_step = True


def _limits(low: float, high: float) -> tuple[float, float]:
    if not low < high:
        raise ValueError("the lower limit must be below the upper one")
    return low, high


class GradHist1d(Quantity):
    """Histogram of all ``B x D`` per-sample gradient elements ``(g_n)_j``, values outside
    ``range`` clipped into the edge bins (Cockpit's ``GradHist1d``, default 100 bins on
    [-2, 2]); network-wide, and per parameter tensor with ``layerwise: true``."""

    kind: Literal["grad_hist_1d"]
    bins: PositiveInt = 100
    range: tuple[float, float] = (-2.0, 2.0)
    layerwise: bool = False
    needs = frozenset({"hist"})
    per_sample = True

    @field_validator("range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _limits(*value)

    def compute(self, ctx: StepContext) -> list[Value]:
        limits = [self.range]
        import torch

        hists = ctx.stats.hist
        total = torch.stack(list(hists.values())).sum(0)
        out: list[Value] = []
        if self.layerwise:
            out += [(n, float(h.sum()), (limits, [self.bins], h.tolist()))
                    for n, h in hists.items()]
        out.append((TOTAL, float(total.sum()), (limits, [self.bins], total.tolist())))
        return out


class GradHist2d(Quantity):
    """2-D histogram of the pairs (per-sample gradient element ``(g_n)_j``, parameter
    element ``theta_j``): first axis the gradient (40 bins on [-1, 1]), second the parameter
    (50 bins on [-2, 2]), Cockpit's ``GradHist2d`` defaults; per parameter tensor too with
    ``layerwise: true``."""

    kind: Literal["grad_hist_2d"]
    bins: tuple[PositiveInt, PositiveInt] = (40, 50)
    range: tuple[tuple[float, float], tuple[float, float]] = ((-1.0, 1.0), (-2.0, 2.0))
    layerwise: bool = False
    needs = frozenset({"hist2d"})
    per_sample = True

    @field_validator("range")
    @classmethod
    def _increasing(cls, value: tuple[tuple[float, float], tuple[float, float]]
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
        return _limits(*value[0]), _limits(*value[1])

    def compute(self, ctx: StepContext) -> list[Value]:
        limits, bins = list(self.range), list(self.bins)
        import torch

        hists = ctx.stats.hist2d
        total = torch.stack(list(hists.values())).sum(0)
        out: list[Value] = []
        if self.layerwise:
            out += [(n, float(h.sum()), (limits, bins, h.reshape(-1).tolist()))
                    for n, h in hists.items()]
        out.append((TOTAL, float(total.sum()), (limits, bins, total.reshape(-1).tolist())))
        return out


Curvature = Literal["auto", "hessian", "ggn", "hutchinson"]
CURVATURE_HELP = (
    "Diagonal curvature: `hessian` the exact Hessian diagonal (one Hessian-vector product "
    "per parameter; models up to `max_exact` parameters), `ggn` the exact generalised "
    "Gauss-Newton diagonal (Cockpit's diag_ggn_exact; equal to the Hessian diagonal for "
    "networks piecewise linear in each weight, e.g. ReLU nets), `hutchinson` an unbiased "
    "estimate from `probes` Rademacher probes; `auto`: `hessian` up to `max_exact` "
    "parameters, else `ggn` where the model has outputs, else `hutchinson`.")


class _Curvature(Quantity):
    curvature: Curvature = Field("auto", description=CURVATURE_HELP)
    probes: PositiveInt = 16
    max_exact: NonNegativeInt = 4096
    needs = frozenset({"diag"})


class HessTrace(_Curvature):
    """Trace of the mini-batch Hessian per parameter tensor and in total,
    ``Tr(H) = sum_j diag(H)_j`` (Cockpit's ``HessTrace``, exact from BackPACK's
    ``DiagHessian``; here with the diagonal chosen by ``curvature``)."""

    kind: Literal["hess_trace"]

    def compute(self, ctx: StepContext) -> list[Value]:
        traces: list[Value] = [(n, float(d.sum())) for n, d in ctx.diag(self).items()]
        return [*traces, (TOTAL, sum(v for _, v, *_ in traces))]


class TICDiag(_Curvature):
    """Takeuchi information criterion with diagonal curvature (Thomas et al., 2020):
    ``sum_j ((1/B) sum_n (g_n)_j^2) / (diag(H)_j + eps)`` (Cockpit's ``TICDiag``)."""

    kind: Literal["tic_diag"]
    epsilon: PositiveFloat = 1e-7
    needs = frozenset({"diag", "sum_sq"})
    per_sample = True

    def compute(self, ctx: StepContext) -> list[Value]:
        b, diag = ctx.batch_size, ctx.diag(self)
        value = sum(float((s / b / (diag[n] + self.epsilon)).sum())
                    for n, s in ctx.stats.sum_sq.items())
        return [(TOTAL, value)]


class TICTrace(_Curvature):
    """Takeuchi information criterion from traces (Thomas et al., 2020):
    ``((1/B) sum_n ||g_n||^2) / (Tr(H) + eps)`` (Cockpit's ``TICTrace``)."""

    kind: Literal["tic_trace"]
    epsilon: PositiveFloat = 1e-7
    needs = frozenset({"diag", "norms"})
    per_sample = True

    def compute(self, ctx: StepContext) -> list[Value]:
        trace = sum(float(d.sum()) for d in ctx.diag(self).values())
        return [(TOTAL, float(ctx.sq_norms.sum()) / ctx.batch_size / (trace + self.epsilon))]


class HessMaxEV(Quantity):
    """Largest eigenvalue of the mini-batch Hessian by power iteration on Hessian-vector
    products (Cockpit's ``HessMaxEV``: at most 100 iterations, rtol 1e-3, atol 1e-6; the
    eigenvalue of largest magnitude, as power iteration finds it)."""

    kind: Literal["hess_max_ev"]
    max_iter: PositiveInt = 100
    rtol: PositiveFloat = 1e-3
    atol: PositiveFloat = 1e-6
    needs = frozenset({"max_ev"})

    def compute(self, ctx: StepContext) -> list[Value]:
        return [(TOTAL, ctx.max_eigenvalue(self))]


class MeanGSNR(Quantity):
    """Mean gradient signal-to-noise ratio over parameters (Liu et al., 2020):
    ``mean_j g_j^2 / ((1/B) sum_n (g_n)_j^2 - g_j^2 + eps)`` (Cockpit's ``MeanGSNR``)."""

    kind: Literal["mean_gsnr"]
    epsilon: PositiveFloat = 1e-5
    needs = frozenset({"grads", "sum_sq"})
    per_sample = True

    def compute(self, ctx: StepContext) -> list[Value]:
        b = ctx.batch_size
        total = sum(float((g.square() / (ctx.stats.sum_sq[n] / b - g.square() + self.epsilon)
                           ).sum()) for n, g in ctx.grads.items())
        return [(TOTAL, total / ctx.num_params)]


def is_plain_sgd(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.SGD`` without momentum, dampening, weight decay
    or Nesterov, i.e. its update is ``-lr g``."""
    import torch

    return type(optimizer) is torch.optim.SGD and all(
        g.get("momentum", 0) == 0 and g.get("dampening", 0) == 0
        and g.get("weight_decay", 0) == 0 and not g.get("nesterov", False)
        for g in optimizer.param_groups)


def _plain_sgd(ctx: StepContext, name: str) -> float:
    """The single learning rate of zero-momentum SGD; the derivations below assume it."""
    opt = ctx.optimizer
    lrs = {float(g["lr"]) for g in opt.param_groups} if opt is not None else set()
    if not is_plain_sgd(opt) or len(lrs) != 1:
        raise ValueError(f"{name} is derived for plain SGD (no momentum, dampening or weight "
                         "decay, one learning rate); this run's optimizer is "
                         f"{type(opt).__name__ if opt is not None else 'unknown'}")
    return lrs.pop()


class CABS(Quantity):
    """Coupled adaptive batch size (Balles et al., 2017) for plain SGD:
    ``lr * sum_j (sum_n (g_n)_j^2 - B g_j^2) / (B L)`` (Cockpit's ``CABS``)."""

    kind: Literal["cabs"]
    needs = frozenset({"grads", "sum_sq"})
    per_sample = True

    def compute(self, ctx: StepContext) -> list[Value]:
        lr, b = _plain_sgd(ctx, "cabs"), ctx.batch_size
        total = sum(float((ctx.stats.sum_sq[n] - b * g.square()).sum())
                    for n, g in ctx.grads.items())
        return [(TOTAL, lr * total / (b * ctx.loss))]


class EarlyStopping(Quantity):
    """Evidence-based early-stopping criterion (Mahsereci et al., 2017) for plain SGD; stop
    when positive: ``1 - B mean_j g_j^2 / (v_j + eps)`` with the per-element sample variance
    ``v_j = (sum_n (g_n)_j^2 - B g_j^2) / (B - 1)`` (Cockpit's ``EarlyStopping``)."""

    kind: Literal["early_stopping"]
    epsilon: PositiveFloat = 1e-5
    needs = frozenset({"grads", "sum_sq"})
    per_sample = True

    def compute(self, ctx: StepContext) -> list[Value]:
        _plain_sgd(ctx, "early_stopping")
        b = ctx.batch_size
        snr = sum(float((g.square() / ((ctx.stats.sum_sq[n] - b * g.square()) / (b - 1)
                                       + self.epsilon)).sum()) for n, g in ctx.grads.items())
        return [(TOTAL, 1.0 - b * snr / ctx.num_params)]


class Time(Quantity):
    """Wall-clock seconds since the monitor started (Cockpit's ``Time``)."""

    kind: Literal["time"]

    def compute(self, ctx: StepContext) -> list[Value]:
        return [(TOTAL, ctx.elapsed)]


QUANTITIES: dict[str, type[Quantity]] = {
    cls.model_fields["kind"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (Loss, GradNorm, Distance, UpdateSize, NormTest, InnerTest, OrthoTest, Alpha,
                GradHist1d, GradHist2d, HessTrace, TICDiag, TICTrace, HessMaxEV, MeanGSNR,
                CABS, EarlyStopping, Time)
}

ECONOMY = ("alpha", "distance", "grad_hist_1d", "grad_norm", "inner_test", "loss",
           "norm_test", "ortho_test", "update_size")
PRESETS: dict[str, tuple[str, ...]] = {
    "economy": ECONOMY,
    "business": (*ECONOMY, "tic_diag", "hess_trace"),
    "full": (*ECONOMY, "tic_diag", "hess_trace", "hess_max_ev", "grad_hist_2d"),
}
"""Cockpit's configurations (``cockpit/utils/configuration.py``)."""


class Preset(Scheduled):
    """One of Cockpit's configurations, every quantity on this spec's schedule."""

    kind: Literal["preset"]
    name: Literal["economy", "business", "full"]
    curvature: Curvature = Field("auto", description=CURVATURE_HELP)

    def quantities(self) -> list[Quantity]:
        schedule = {"every": self.every, "log": self.log}
        out = []
        for kind in PRESETS[self.name]:
            fields: dict[str, object] = {"kind": kind, **schedule}
            if "curvature" in QUANTITIES[kind].model_fields:
                fields["curvature"] = self.curvature
            out.append(QUANTITIES[kind].model_validate(fields))
        return out


InstrumentSpec = Annotated[
    Loss | GradNorm | Distance | UpdateSize | NormTest | InnerTest | OrthoTest | Alpha
    | GradHist1d | GradHist2d | HessTrace | TICDiag | TICTrace | HessMaxEV | MeanGSNR | CABS
    | EarlyStopping | Time | Preset,
    Field(discriminator="kind")]


def expand(specs: list[Quantity | Preset]) -> list[Quantity]:
    """Quantity specs of ``specs``, presets expanded; a quantity given twice is kept once."""
    out: list[Quantity] = []
    for spec in specs:
        for q in spec.quantities() if isinstance(spec, Preset) else [spec]:
            if q not in out:
                out.append(q)
    return out


def quantity(kind: str, **fields: object) -> Quantity:
    """A quantity spec from Python: ``quantity("norm_test", every=4)``."""
    return QUANTITIES[kind].model_validate({"kind": kind, **fields})


def preset(name: str, **fields: object) -> list[Quantity]:
    """The quantities of one of Cockpit's presets: ``preset("economy", every=16)``."""
    return Preset.model_validate({"kind": "preset", "name": name, **fields}).quantities()

