"""The instrument engine: computes, once per step, the union of what the due quantities need.

The training loop calls four methods around its step::

    monitor.before_forward(step)                    # hooks, if per-sample data is due
    losses = per_example_loss(model(x), y)          # (B,)
    loss = losses.mean() + regulariser
    loss.backward()
    monitor.after_backward(step, x, y, losses, loss)
    optimizer.step()
    monitor.after_step(step)

and reads ``monitor.values``. Per-sample statistics come from
:func:`obsbench.instruments.persample.statistics` (layer factors captured in the step's own
backward pass, torch.func for everything else), curvature from
:mod:`obsbench.instruments.curvature`. All extra work runs under a forked RNG and leaves
parameters, gradients, buffers and optimizer state untouched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from obsbench.instruments import (
    TOTAL,
    Alpha,
    GradHist1d,
    GradHist2d,
    HessMaxEV,
    Preset,
    Quantity,
    UpdateSize,
    Value,
    _Curvature,
    differences,
    expand,
    is_plain_sgd,
    norms,
    total_norm,
)
from obsbench.instruments.persample import (
    MAX_ELEMENTS,
    Capture,
    Functional,
    Hist2dSpec,
    HistSpec,
    Params,
    PerExampleLoss,
    PerSample,
    Statistics,
    ggn_diagonal_layers,
    statistics,
)
from obsbench.results import Histogram, InstrumentValue

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass
class StepContext:
    """What the due quantities of one step read; expensive parts are computed on demand."""

    monitor: Monitor
    step: int
    x: Tensor
    y: Tensor | None
    loss: float
    losses: Tensor
    grads: dict[str, Tensor]
    stats: Statistics
    _diags: dict[tuple[Any, ...], dict[str, Tensor]] = field(default_factory=dict)

    @property
    def params(self) -> Params:
        return self.monitor.params

    @property
    def initial(self) -> dict[str, Tensor]:
        return self.monitor.initial

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.monitor.optimizer

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_params(self) -> int:
        return self.monitor.num_params

    def scratch(self, key: str) -> dict[str, Tensor]:
        return self.monitor.scratch(key)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.monitor.started

    @cached_property
    def grad_norms(self) -> dict[str, float]:
        return norms(self.grads)

    @cached_property
    def grad_sq_norm(self) -> float:
        return sum(v * v for v in self.grad_norms.values())

    @cached_property
    def sq_norms(self) -> Tensor:
        """``||g_n||^2`` over all parameters, ``(B,)``."""
        return torch.stack(list(self.stats.sq_norms.values())).sum(0)

    @cached_property
    def dots_g(self) -> Tensor:
        """``g_n . g`` over all parameters, ``(B,)``."""
        return torch.stack([d[:, 0] for d in self.stats.dots.values()]).sum(0)

    def _loss_of(self, params: Params) -> Tensor:
        return self.monitor.functional.losses(params, self.x, self.y).mean()

    def diag(self, spec: _Curvature) -> dict[str, Tensor]:
        """Curvature diagonal per parameter, as ``spec.curvature`` chooses."""
        from obsbench.instruments import curvature as c

        method = spec.curvature
        if method == "auto":
            method = "hessian" if self.num_params <= spec.max_exact else "ggn"
        key = (method, spec.probes)
        if key in self._diags:
            return self._diags[key]
        params = {n: p.detach() for n, p in self.params.items()}
        if method == "hessian":
            if self.num_params > spec.max_exact:
                raise ValueError(f"{spec.kind}: the exact Hessian diagonal needs one "
                                 f"Hessian-vector product per parameter; this model has "
                                 f"{self.num_params:,} > max_exact {spec.max_exact:,} (use "
                                 "curvature: ggn or hutchinson)")
            diag = c.hessian_diagonal(self._loss_of, params, method="exact")
        elif method == "hutchinson":
            diag = c.hessian_diagonal(self._loss_of, params, method="hutchinson",
                                      probes=spec.probes, generator=self.monitor.generator)
        else:
            diag = self._ggn(params)
        self._diags[key] = diag
        return diag

    def _ggn(self, params: Params) -> dict[str, Tensor]:
        from obsbench.instruments import curvature as c

        functional = self.monitor.functional
        if self.y is None:
            raise ValueError("curvature: ggn needs a loss on model outputs with targets; use "
                             "curvature: hessian or hutchinson for this problem")
        diag = ggn_diagonal_layers(self.monitor.capture, functional, params, self.x, self.y
                                   ) if self.monitor.closed_forms else None
        if diag is None:
            diag = c.ggn_diagonal(functional.outputs, functional.per_example_loss, params,
                                  self.x, self.y, max_elements=self.monitor.max_elements)
        l2 = self.monitor.l2_reg
        if l2:  # the L2 penalty's Hessian: l2 on every weight (parameters of dim > 1)
            diag = {n: d + l2 if params[n].dim() > 1 else d for n, d in diag.items()}
        return diag

    def max_eigenvalue(self, spec: HessMaxEV) -> float:
        from obsbench.instruments import curvature as c

        params = {n: p.detach() for n, p in self.params.items()}
        return c.max_eigenvalue(self._loss_of, params, max_iter=spec.max_iter,
                                rtol=spec.rtol, atol=spec.atol,
                                generator=self.monitor.generator)


@dataclass
class _Kept:
    """Step data of an alpha start point, for the projections on the update."""

    found: dict[str, PerSample]
    x: Tensor
    y: Tensor | None
    f: float
    var_f: float
    along_g: tuple[Tensor, float] | None
    """``(g_n . g, ||g||^2)`` where measured, reused if the update is parallel to ``g``."""


@dataclass
class _AlphaStart:
    """Observations at the start point of a quadratic fit, waiting for the end point."""

    step: int
    f: float
    var_f: float
    df: float
    var_df: float
    tau: float
    """``||s||``; the update ``s`` itself waits in slot 1 of :attr:`Monitor.directions`."""


class Monitor:
    """Measures instrument quantities during training (see the module docstring).

    Args:
        model: the trained module; per-sample quantities assume that its outputs for one
            sample do not depend on the other samples of the batch (no BatchNorm in
            training mode).
        per_example_loss: ``(outputs, targets) -> (B,)`` losses; the objective is their mean
            plus the L2 penalty ``0.5 * l2_reg * ||w||^2`` on weights (dim > 1), as in the
            runner.
        specs: quantity specs and presets.
        optimizer: needed by quantities derived for plain SGD (``cabs``, ``early_stopping``).
        seed: seeds the probes of stochastic estimators (power iteration, Hutchinson).
        max_elements: per-sample gradient elements formed at once by the torch.func path.
        closed_forms: use the layer closed forms where they apply (else torch.func for
            everything; the values agree, the closed forms are faster).
    """

    def __init__(self, model: nn.Module, per_example_loss: PerExampleLoss,
                 specs: Sequence[Quantity | Preset], *,
                 optimizer: torch.optim.Optimizer | None = None, l2_reg: float = 0.0,
                 seed: int = 0, max_elements: int = MAX_ELEMENTS, closed_forms: bool = True
                 ) -> None:
        self.model = model
        self.quantities = expand(list(specs))
        self.optimizer = optimizer
        self.l2_reg = l2_reg
        self.max_elements = max_elements
        self.closed_forms = closed_forms
        self.params: Params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.num_params = sum(p.numel() for p in self.params.values())
        self.functional = Functional(model, per_example_loss,
                                     self._penalty if l2_reg else None)
        self.capture = Capture(model, self.params)
        self.generator = torch.Generator().manual_seed(seed)
        self._rows: list[tuple[Any, ...]] = []
        self._values: list[InstrumentValue] = []
        self.seconds = 0.0
        """Seconds spent in the monitor's calls (part of the training step's time)."""
        self.started = time.perf_counter()
        needs_initial = any("initial" in q.needs for q in self.quantities)
        self.initial = {n: p.detach().clone() for n, p in self.params.items()
                        } if needs_initial else {}
        per_sample = any(q.per_sample for q in self.quantities)
        if per_sample:
            _check_per_sample(model)
        self._due: list[Quantity] = []
        self._capturing = False
        self._alpha_end: _AlphaStart | None = None
        self._before: dict[str, Tensor] = {}
        self._kept: _Kept | None = None
        self._scratch: dict[str, dict[str, Tensor]] = {}

    def scratch(self, key: str) -> dict[str, Tensor]:
        """Persistent buffers shaped like the parameters, one set per ``key``: allocating
        parameter-sized tensors afresh every step costs page faults on every call."""
        if key not in self._scratch:
            self._scratch[key] = {n: torch.empty_like(p) for n, p in self.params.items()}
        return self._scratch[key]

    @cached_property
    def directions(self) -> dict[str, Tensor]:
        """Per parameter, ``(2, *shape)``: the gradient of the step being measured and the
        update of the previous step, the directions of the per-sample projections."""
        return {n: p.new_empty((2, *p.shape)) for n, p in self.params.items()}

    def _snapshot(self, key: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.scratch(key)
        torch._foreach_copy_([out[n] for n in tensors], [t.detach() for t in tensors.values()])
        return out

    def _penalty(self, params: Params) -> Tensor | None:
        weights = [p for p in params.values() if p.dim() > 1]
        return 0.5 * self.l2_reg * sum(w.square().sum() for w in weights) if weights else None  # type: ignore[return-value]

    # -- the four calls of the training loop ---------------------------------------------

    def before_forward(self, step: int) -> None:
        tick = time.perf_counter()
        self._due = [q for q in self.quantities if q.due(step)]
        wants = self._alpha_end is not None or any(q.per_sample for q in self._due)
        self._capturing = wants and self.closed_forms and not self.l2_reg
        if self._capturing:
            self.capture.__enter__()
        self.seconds += time.perf_counter() - tick

    def after_backward(self, step: int, x: Tensor, y: Tensor | None, losses: Tensor,
                       loss: Tensor | float) -> None:
        tick = time.perf_counter()
        if self._capturing:
            self.capture.__exit__()
        due, alpha_end = self._due, self._alpha_end
        if due or alpha_end is not None:
            self._measure(step, x, y, losses.detach(), float(torch.as_tensor(loss).detach()),
                          due, alpha_end)
        self.seconds += time.perf_counter() - tick

    def after_step(self, step: int) -> None:
        if not self._before:
            return
        tick = time.perf_counter()
        self._finish_two_step(step)
        self.seconds += time.perf_counter() - tick

    # -- measuring -----------------------------------------------------------------------

    def _measure(self, step: int, x: Tensor, y: Tensor | None, losses: Tensor, loss: float,
                 due: list[Quantity], alpha_end: _AlphaStart | None) -> None:
        needs = set().union(*(q.needs for q in due))
        alpha_start = any(isinstance(q, Alpha) for q in due)
        if alpha_start and is_plain_sgd(self.optimizer):
            needs.add("dots_g")  # likely reused for the projections on the update
        found = self.capture.per_sample(int(x.shape[0])) if self._capturing else {}
        grads = {n: p.grad.detach() if p.grad is not None else torch.zeros_like(p)
                 for n, p in self.params.items()}
        # The directions to project on, stacked per parameter: the gradient (slot 0) and
        # the previous update (slot 1), so that one matrix product serves both.
        dots_g = "dots_g" in needs
        slots = slice(0 if dots_g else 1, 2 if alpha_end is not None else 1)
        if dots_g:
            torch._foreach_copy_([self.directions[n][0] for n in grads], list(grads.values()))
        hist1 = next((q for q in due if isinstance(q, GradHist1d)), None)
        hist2 = next((q for q in due if isinstance(q, GradHist2d)), None)
        params = {n: p.detach() for n, p in self.params.items()}
        stats = statistics(
            found, self.functional, params, x, y, norms="norms" in needs,
            directions={n: d[slots] for n, d in self.directions.items()}
            if slots.start < slots.stop else None, sum_sq="sum_sq" in needs,
            hist=HistSpec(hist1.range, hist1.bins) if hist1 else None,
            hist2d=Hist2dSpec(hist2.range[0], hist2.bins[0], hist2.range[1], hist2.bins[1])
            if hist2 else None, max_elements=self.max_elements)
        ctx = StepContext(self, step, x, y, loss, losses, grads, stats)
        for q in due:
            if not q.two_step:
                self._record(step, q.kind, q.compute(ctx))
        if alpha_end is not None:
            slopes = torch.stack([d[:, -1] for d in stats.dots.values()]).sum(0)
            self._record(alpha_end.step, "alpha", [(TOTAL, _alpha(
                alpha_end, loss, _var(losses), *_mean_var(slopes / alpha_end.tau)))])
            self._alpha_end = None
        if any(q.two_step for q in due):
            self._before = self._snapshot("before", self.params)
            if alpha_start:
                along_g = (ctx.dots_g, ctx.grad_sq_norm) if dots_g else None
                self._kept = _Kept(found, x, y, loss, _var(losses), along_g)

    def _finish_two_step(self, step: int) -> None:
        before, self._before = self._before, {}
        update = differences(self.params, before, {n: d[1] for n, d in self.directions.items()})
        sizes = total_norm(list(norms(update).items()))
        tau = sizes[-1][1]
        if any(isinstance(q, UpdateSize) for q in self._due):
            self._record(step, "update_size", sizes)
        kept, self._kept = self._kept, None
        if kept is None:
            return
        if tau == 0.0:  # no move: Cockpit reports -1
            self._record(step, "alpha", [(TOTAL, -1.0)])
            return
        gradient = {n: d[0] for n, d in self.directions.items()}
        factor = (_parallel(update, tau, gradient, kept.along_g[1], self.params,
                            self.scratch("residual"), _sgd_factor(self.optimizer))
                  if kept.along_g is not None else None)
        if factor is not None:  # s = factor * g: the projections on g, rescaled
            assert kept.along_g is not None
            dots = kept.along_g[0] * factor
        else:
            stats = statistics(kept.found, self.functional, before, kept.x, kept.y,
                               directions={n: d[1:] for n, d in self.directions.items()},
                               max_elements=self.max_elements)
            dots = torch.stack([d[:, 0] for d in stats.dots.values()]).sum(0)
        self._alpha_end = _AlphaStart(step, kept.f, kept.var_f, *_mean_var(dots / tau), tau)

    def _record(self, step: int, quantity: str, values: list[Value]) -> None:
        # Plain tuples: the garbage collector stops tracking tuples of atoms, while thousands
        # of model objects made its collections cost about a millisecond per step.
        self._rows += [(step, quantity, *value) for value in values]

    @property
    def values(self) -> list[InstrumentValue]:
        """Every value measured so far, in the order measured."""
        if len(self._values) < len(self._rows):
            self._values += [
                InstrumentValue(step=step, quantity=quantity, layer=layer, value=value,
                                hist=Histogram(limits=hist[0][0], bins=hist[0][1],
                                               counts=hist[0][2]) if hist else None)
                for step, quantity, layer, value, *hist in self._rows[len(self._values):]]
        return self._values


PARALLEL_RTOL = 1e-3
"""How far (relative, in norm) an update may be from ``c g``, beyond the rounding of the
parameters, and still count as parallel."""


def _sgd_factor(optimizer: torch.optim.Optimizer | None) -> float | None:
    """``-lr`` of plain SGD with one learning rate, the ``c`` of its update ``c g``."""
    if not is_plain_sgd(optimizer):
        return None
    assert optimizer is not None
    lrs = {float(group["lr"]) for group in optimizer.param_groups}
    return -lrs.pop() if len(lrs) == 1 else None


def _parallel(update: dict[str, Tensor], size: float, g: dict[str, Tensor], gg: float,
              params: Params, scratch: dict[str, Tensor], c: float | None = None
              ) -> float | None:
    """``c`` with ``update = c g`` up to the rounding of the parameters, or None (``c``, if
    given, is the candidate checked; else the least-squares one).

    Then ``g_n . update = c (g_n . g)``, which saves a projection (plain SGD: ``c = -lr``;
    Cockpit's fast path makes the same substitution). The measured update
    ``theta_{t+1} - theta_t`` (norm ``size``) of plain SGD differs from ``-lr g`` (``gg =
    ||g||^2``) by the rounding of the parameters to their dtype, at most half an ulp of
    each, so by at most ``eps ||theta_{t+1}||`` in norm (``eps`` the dtype's machine
    epsilon); a residual up to that plus ``PARALLEL_RTOL`` of the update's norm counts as
    parallel. It changes each projection by at most ``||g_n||`` times the residual.
    """
    if gg == 0.0:
        return None
    names = list(update)
    u, v = [update[n] for n in names], [g[n] for n in names]
    if c is None:
        c = sum(float(torch.dot(a.reshape(-1), b.reshape(-1)))
                for a, b in zip(u, v, strict=True)) / gg
    residual = [scratch[n] for n in names]
    torch._foreach_copy_(residual, u)
    torch._foreach_add_(residual, v, alpha=-c)
    current = [params[n].detach() for n in names]
    both = torch.stack(torch._foreach_norm(residual + current)).tolist()
    r = math.sqrt(sum(x * x for x in both[:len(names)]))
    eps = max(torch.finfo(t.dtype).eps for t in current)
    theta = math.sqrt(sum(x * x for x in both[len(names):]))
    return c if r <= PARALLEL_RTOL * size + eps * theta else None


def _var(values: Tensor) -> float:
    """Sample variance (``ddof=1``), as ``torch.var`` in Cockpit."""
    return _mean_var(values)[1]


def _mean_var(values: Tensor) -> tuple[float, float]:
    if values.numel() < 2:
        return float(values.double().sum()), 0.0
    var, mean = torch.var_mean(values.double())
    return float(mean), float(var)


def _alpha(start: _AlphaStart, f1: float, var_f1: float, df1: float, var_df1: float
           ) -> float:
    """Cockpit's noise-aware quadratic fit (``cockpit/quantities/alpha.py``)."""
    t = start.tau
    phi = np.array([[1.0, 0.0, 0.0], [1.0, t, t * t], [0.0, 1.0, 0.0], [0.0, 1.0, 2 * t]]).T
    variances = [v if v != 0 else 1e-10 for v in (start.var_f, var_f1, start.var_df, var_df1)]
    observed = np.array([start.f, f1, start.df, df1])
    weights = np.diag(1.0 / np.array(variances))
    try:
        mu = np.linalg.solve(phi @ weights @ phi.T, phi @ weights @ observed)
    except np.linalg.LinAlgError:
        return math.nan
    if mu[2] < 0:  # concave: still going downhill at the end point
        return -1.0
    alpha_bar = -mu[1] / mu[2] if mu[2] > 0 else 0.0  # the step to the other side
    return float(2 * t / alpha_bar - 1) if alpha_bar != 0 else math.nan


def _check_per_sample(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(f"per-sample quantities are undefined for {name or 'the model'}"
                             f" ({type(module).__name__} in training mode mixes the samples "
                             "of a batch)")
