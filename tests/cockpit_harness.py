"""Cockpit 1.0.2 as a test oracle and overhead baseline for obsbench's instruments.

A helper module for tests and benchmarks (not a test file). It needs the optional
Cockpit stack: ``pip install -e '.[cockpit]'`` and then
``pip install --no-deps backpack-for-pytorch==1.7.1 cockpit-for-pytorch==1.0.2``
(Cockpit imports ``pkg_resources``, hence ``setuptools<81`` in the extra). Cockpit and
BackPACK are imported lazily, so importing this module works without them.

What Cockpit 1.0.2 computes, as read in its source (``cockpit/quantities/*.py``) and checked
by ``tests/test_cockpit_harness.py`` where marked [checked]:

* When a value is taken. Cockpit evaluates every quantity when the ``with cockpit(step, ...)``
  block around ``loss.backward()`` exits, i.e. after the backward pass of step ``t`` and
  *before* ``optimizer.step()``. So at step ``t`` the parameters are θ_t (after ``t``
  updates) and ``.grad`` is the mini-batch gradient at θ_t on batch ``t``.
* ``distance`` at step ``t`` is ‖θ_t − θ_0‖₂ per parameter tensor, so it is 0 at step 0;
  θ_0 is cached at step 0 whatever the schedule [checked].
* Two-step quantities (``update_size``, ``alpha``; ``SAVE_SHIFT = 1``) start at a
  scheduled step ``t``, finish in the cockpit context of step ``t + 1`` and are stored
  under ``t``: ``update_size[t]`` = ‖θ_{t+1} − θ_t‖₂ [checked]. The last batch's step has
  no value (its end point never runs), nor does a scheduled step whose successor is not run
  through the cockpit. With ``every > 1`` the end step ``t + 1`` need not be scheduled:
  every step must still go through the cockpit context (this harness does that).
* Per-parameter quantities (``grad_norm``, ``distance``, ``update_size``, ``hess_trace``)
  are lists in the order of the parameters handed to ``Cockpit(...)``; the harness hands in
  ``model.parameters()``, so position ``i`` is the ``i``-th of ``model.named_parameters()``
  and is keyed by that name (e.g. ``"1.weight"``) [checked]. The harness adds a ``"total"``
  key: √(Σ v²) for the norms, Σ v for ``hess_trace`` (Cockpit's instruments aggregate the
  same way). Every other quantity is network-wide and only has ``"total"``.
* Scaling. The loss must be mean-reduced. BackPACK's ``BatchGrad`` gives ∇ℓ_n / B; Cockpit
  multiplies by B (by B² for sums of squares) itself, so its histograms and tests are in
  terms of the per-sample gradients g_n = ∇ℓ_n [checked for norm_test and both
  histograms]. ``norm_test`` = √[(Σ_n ‖g_n‖² − B ‖g‖²) / (B (B − 1) ‖g‖²)] with
  g = (1/B) Σ_n g_n [checked].
* ``grad_hist_1d`` (``GradHist1d`` defaults: ``bins=100``, ``range=(-2, 2)``, no bin
  adaptation): value = counts, shape ``(100,)``, ``float32`` (``torch.histc``), of all B·D
  per-sample gradient elements (g_n)_j over all parameters, after clamping them into
  [−2, 2] (so out-of-range elements land in the first/last bin). Edges are
  ``linspace(-2, 2, 101)``; ``torch.histc`` bins are [e_k, e_{k+1}) except the last, which
  includes 2. Counts sum to B·D [checked]. Float32 counts are exact only up to 2²⁴ per bin.
* ``grad_hist_2d`` (``GradHist2d`` defaults: ``bins=(40, 50)``, ``range=((-1, 1), (-2, 2))``,
  no adaptation, ``keep_individual=False``): value = counts, shape ``(40, 50)``, ``int64``.
  Axis 0 (x, 40 bins over [−1, 1]) is the per-sample gradient element (g_n)_j; axis 1
  (y, 50 bins over [−2, 2]) is the value of the same parameter element θ_j at step ``t``
  (before the update), so each parameter element is counted once per sample (B·D counts in
  all) [checked]. Edges are ``linspace(-1, 1, 41)`` and ``linspace(-2, 2, 51)``. Values
  are first clamped to [lo + w/2, hi − w/2] (w = bin width) and binned as
  ``floor((v − lo) / w)``: bins are [e_k, e_{k+1}), outliers fall into the edge bins.
* ``hess_max_ev`` is a plain power iteration (≤100 Hessian-vector products, rtol 1e-3,
  atol 1e-6, returns the last estimate with a warning if not converged), so it finds the
  eigenvalue of largest *magnitude*, which can be negative (−0.46 seen for ``cnn(0)`` at
  step 2 of ``batches(3, 32)``). It starts from ``torch.rand_like``, so it draws
  from torch's global RNG (the harness's data and models do not depend on it), needs
  ``backward(create_graph=True)`` at tracked steps (the harness passes
  ``cockpit.create_graph(step)``) and torch warns about a reference cycle then.
* ``alpha`` uses its fast path (projections inside BackPACK's hooks) only because the
  optimizer (plain ``torch.optim.SGD``) is handed in via ``info["optimizer"]``; ``cabs``
  and ``early_stopping`` require that optimizer and raise otherwise.
* Every run warns (torch): "Full backward hook is firing when gradients are computed with
  respect to module outputs since no inputs require gradient" (the input batch has no
  grad); Cockpit's import warns that ``pkg_resources`` is deprecated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

Key = tuple[int, str, str]
"""(step, obsbench quantity name, parameter name or "total")."""
Value = float | np.ndarray
Batch = tuple[torch.Tensor, torch.Tensor]
StepFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]

QUANTITIES: dict[str, str] = {
    "loss": "Loss",
    "grad_norm": "GradNorm",
    "distance": "Distance",
    "update_size": "UpdateSize",
    "norm_test": "NormTest",
    "inner_test": "InnerTest",
    "ortho_test": "OrthoTest",
    "alpha": "Alpha",
    "grad_hist_1d": "GradHist1d",
    "grad_hist_2d": "GradHist2d",
    "hess_trace": "HessTrace",
    "hess_max_ev": "HessMaxEV",
    "tic_diag": "TICDiag",
    "tic_trace": "TICTrace",
    "mean_gsnr": "MeanGSNR",
    "cabs": "CABS",
    "early_stopping": "EarlyStopping",
}
"""obsbench name -> Cockpit class in ``cockpit.quantities`` (used with default arguments)."""

PER_PARAMETER = {"grad_norm": "norm", "distance": "norm", "update_size": "norm",
                 "hess_trace": "sum"}
"""Quantities Cockpit stores as one value per parameter tensor, and how "total" is formed."""

TWO_STEP = frozenset({"update_size", "alpha"})
"""Quantities whose value for step t is computed at step t + 1 and stored under t."""

GRAD_HIST_1D_BINS, GRAD_HIST_1D_RANGE = 100, (-2.0, 2.0)
GRAD_HIST_2D_BINS = (40, 50)
GRAD_HIST_2D_RANGE = ((-1.0, 1.0), (-2.0, 2.0))
"""Cockpit's default histogram settings: 2-D axis 0 = per-sample gradient, axis 1 = parameter."""


def _seeded(seed: int, build: Callable[[], nn.Sequential]) -> nn.Sequential:
    """Build a module with torch's global RNG seeded, leaving the caller's RNG state intact."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def mlp(seed: int = 0) -> nn.Sequential:
    """MNIST-shaped MLP: Flatten, Linear(784, 128), ReLU, Linear(128, 10)."""
    return _seeded(seed, lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)))


def cnn(seed: int = 0) -> nn.Sequential:
    """The CNN of Cockpit's advanced example (``examples/_utils_examples.py``), 1x28x28 in.

    Conv2d(1, 11, 5), ReLU, MaxPool2d(2), Conv2d(11, 16, 5), ReLU, MaxPool2d(2), Flatten,
    Linear(256, 80), ReLU, Linear(80, 84), ReLU, Linear(84, 10); every layer is supported by
    BackPACK's first- and second-order extensions.
    """
    return _seeded(seed, lambda: nn.Sequential(
        nn.Conv2d(1, 11, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(11, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 80), nn.ReLU(),
        nn.Linear(80, 84), nn.ReLU(),
        nn.Linear(84, 10)))


def batches(n_steps: int, batch_size: int = 128, seed: int = 0) -> list[Batch]:
    """``n_steps`` synthetic batches: x ~ U[0, 1) of shape (B, 1, 28, 28), y ~ U{0..9}."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch_size, 1, 28, 28, generator=gen),
             torch.randint(0, 10, (batch_size,), generator=gen)) for _ in range(n_steps)]


def plain_step_fn(model: nn.Module, lr: float = 1e-3) -> StepFn:
    """``f(step, x, y)``: one plain SGD step (mean cross-entropy) on ``model``, in place.

    Returns the detached loss tensor (no ``.item()``, so no device sync is forced).
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(reduction="mean")

    def step_fn(step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step_fn


def _extend(*modules: nn.Module) -> Callable[[], None]:
    """BackPACK-``extend`` ``modules`` in place; return a function that undoes it.

    ``backpack.extend`` registers forward/backward hooks that stay on the modules; the undo
    removes only the hooks added here (modules already extended by the caller keep theirs).
    """
    from backpack import extend, memory_cleanup
    from backpack.context import CTX

    flag = "_backpack_extend"
    every = [m for module in modules for m in module.modules()]
    before = {id(m) for m in every if getattr(m, flag, False)}
    n_handles = len(CTX.hook_handles)
    for module in modules:
        extend(module)
    added = CTX.hook_handles[n_handles:]

    def restore() -> None:
        for handle in added:
            handle.remove()
        CTX.hook_handles = [h for h in CTX.hook_handles if all(h is not a for a in added)]
        added.clear()
        for m in every:
            if id(m) not in before and getattr(m, flag, False):
                delattr(m, flag)
            memory_cleanup(m)

    return restore


def make_quantities(quantities: Sequence[str], every: int = 1) -> list[Any]:
    """Cockpit quantity instances (default arguments) on ``schedules.linear(every)``."""
    from cockpit import quantities as cq
    from cockpit.utils.schedules import linear

    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; known: {sorted(QUANTITIES)}")
    return [getattr(cq, QUANTITIES[q])(track_schedule=linear(every)) for q in quantities]


def cockpit_step_fn(model: nn.Module, quantities: Sequence[str], every: int = 1,
                    lr: float = 1e-3) -> StepFn:
    """``f(step, x, y)``: one SGD step on ``model`` with Cockpit tracking ``quantities``.

    ``model`` is BackPACK-extended in place; call ``f.restore()`` when done to remove the
    hooks again. ``f.cockpit`` is the ``cockpit.Cockpit`` (``f.cockpit.get_output()``).
    Steps must be passed as 0, 1, 2, ... (Cockpit's ``global_step``). Returns the detached
    mini-batch loss.
    """
    from cockpit import Cockpit

    loss_fn = nn.CrossEntropyLoss(reduction="mean")
    restore = _extend(model, loss_fn)
    individual_loss_fn = nn.CrossEntropyLoss(reduction="none")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    cockpit = Cockpit(model.parameters(), quantities=make_quantities(quantities, every))

    def step_fn(step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        losses = individual_loss_fn(out, y).detach()
        info = {"loss": loss, "batch_size": x.shape[0], "individual_losses": losses,
                "optimizer": opt}
        with cockpit(step, info=info):
            loss.backward(create_graph=cockpit.create_graph(step))
        opt.step()
        return loss.detach()

    step_fn.cockpit = cockpit  # type: ignore[attr-defined]
    step_fn.restore = restore  # type: ignore[attr-defined]
    return step_fn


def _to_value(value: Any) -> Value:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return value
    return float(value)


def convert_output(output: dict[int, dict[str, Any]], param_names: Sequence[str],
                   quantities: Sequence[str]) -> dict[Key, Value]:
    """Turn ``Cockpit.get_output()`` into ``{(step, quantity, layer): value}``."""
    by_class = {QUANTITIES[q]: q for q in quantities}
    result: dict[Key, Value] = {}
    for step, entries in output.items():
        for cls_name, value in entries.items():
            name = by_class.get(cls_name)
            if name is None:
                continue
            if name in PER_PARAMETER:
                if len(value) != len(param_names):
                    raise AssertionError(f"{cls_name}: {len(value)} values for "
                                         f"{len(param_names)} parameters")
                values = [float(v) for v in value]
                result.update({(step, name, p): v for p, v in zip(param_names, values,
                                                                    strict=True)})
                total = (math.sqrt(sum(v * v for v in values))
                         if PER_PARAMETER[name] == "norm" else sum(values))
                result[(step, name, "total")] = total
            elif name in ("grad_hist_1d", "grad_hist_2d"):
                result[(step, name, "total")] = np.asarray(value["hist"])
            else:
                result[(step, name, "total")] = _to_value(value)
    return result


def run_cockpit(model: nn.Module, batches: Sequence[Batch], quantities: Sequence[str],
                lr: float = 1e-3, every: int = 1) -> dict[Key, Value]:
    """Train ``model`` in place with SGD(lr), one step per batch, Cockpit tracking.

    Quantities are obsbench names (keys of ``QUANTITIES``), each Cockpit's class with default
    arguments on ``cockpit.utils.schedules.linear(every)`` (tracked at steps 0, every,
    2·every, ...). Returns ``{(step, quantity, layer): value}`` with layer a name from
    ``model.named_parameters()`` for per-parameter quantities (``grad_norm``, ``distance``,
    ``update_size``, ``hess_trace``) and ``"total"`` for network-wide values (also added for
    the per-parameter ones: √Σv² for norms, Σv for ``hess_trace``). Scalars are floats;
    ``grad_hist_1d`` is a float32 count array of shape (100,), ``grad_hist_2d`` an int64
    count array of shape (40, 50) (axis 0 gradient, axis 1 parameter); see the module
    docstring for bin limits and for which step two-step values are stored under.
    The BackPACK hooks are removed from ``model`` again afterwards.
    """
    names = [n for n, _ in model.named_parameters()]
    step_fn = cockpit_step_fn(model, quantities, every=every, lr=lr)
    try:
        for step, (x, y) in enumerate(batches):
            step_fn(step, x, y)
        output = step_fn.cockpit.get_output()  # type: ignore[attr-defined]
    finally:
        step_fn.restore()  # type: ignore[attr-defined]
    return convert_output(output, names, quantities)


@contextlib.contextmanager
def quiet_cockpit_warnings() -> Iterator[None]:
    """Silence the known, harmless warnings of a Cockpit run (see the module docstring)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated")
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
        yield
