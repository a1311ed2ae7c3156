"""Per-sample gradient statistics of a mini-batch, for any ``nn.Module``.

Notation (Cockpit's, Schneider, Dangel & Hennig, NeurIPS 2021, appendix): the objective is
the mean ``L = (1/B) sum_n l_n`` (plus a regulariser ``R`` that every sample shares), the
per-sample gradient ``g_n = grad l_n (+ grad R)`` and the mini-batch gradient
``g = (1/B) sum_n g_n``. Instruments need only reductions of the ``g_n``: squared norms
``||g_n||^2``, projections ``g_n . d`` on a few directions ``d``, the element-wise second
moment ``sum_n g_n^2`` and histograms of the elements. These come from two sources:

* **Layer factors** (closed forms, no extra pass): a ``Linear`` layer applied once to a
  ``(B, in)`` input has ``g_n = u_n v_n^T`` for its weight, with ``v_n`` the sample's input and
  ``u_n = B dL/dz_n`` the gradient of its output, both captured by hooks during the training
  step's own backward pass; then ``||g_n||^2 = ||u_n||^2 ||v_n||^2``,
  ``g_n . D = u_n^T D v_n`` and ``sum_n g_n^2 = (u^2)^T v^2`` never form ``g_n``, and
  histograms use :func:`~obsbench.instruments.histogram.outer_histogram`. ``Linear`` layers
  on sequences and ``Conv1d/2d/3d`` layers form their per-sample gradients from the captured
  input and output gradient (``unfold``), one layer at a time.
* **torch.func** for every other parameter (LayerNorm, attention, embeddings, recurrent
  cells, layers used twice, any regulariser): ``vmap(grad(l_n))`` over chunks of samples so
  that at most ``max_elements`` gradient elements exist at once; projections of these
  parameters' gradients use one forward-mode ``jvp`` of the per-example losses instead.

Every extra model evaluation runs on copies of the buffers and under a forked RNG, so it
changes neither parameters, gradients, buffers (BatchNorm statistics) nor random streams;
the closed forms evaluate no model at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.conv import _ConvNd

from obsbench.instruments.histogram import histogram, histogram2d, outer_histogram

PerExampleLoss = Callable[[Tensor, Tensor | None], Tensor]
Params = dict[str, Tensor]

MAX_ELEMENTS = 1 << 24
"""Per-sample gradient elements formed at once by the torch.func path (64 MiB in float32)."""


@dataclass
class Outer:
    """Per-sample gradients ``u[n] (x) v[n]`` of a weight, with ``u`` ``(B, out)``."""

    u: Tensor
    v: Tensor

    def dense(self, start: int = 0, stop: int | None = None) -> Tensor:
        return self.u[start:stop, :, None] * self.v[start:stop, None, :]


PerSample = Outer | Tensor
"""Per-sample gradients of one parameter: factors, or a dense ``(B, *shape)`` tensor."""


@dataclass(frozen=True)
class HistSpec:
    limits: tuple[float, float]
    bins: int


@dataclass(frozen=True)
class Hist2dSpec:
    grad_limits: tuple[float, float]
    grad_bins: int
    param_limits: tuple[float, float]
    param_bins: int


@dataclass
class Statistics:
    """Per-parameter reductions of the per-sample gradients (only those requested)."""

    sq_norms: dict[str, Tensor] = field(default_factory=dict)
    """``||g_n||^2``, shape ``(B,)``."""
    dots: dict[str, Tensor] = field(default_factory=dict)
    """``g_n . d_k`` for the requested directions, shape ``(B, K)``."""
    sum_sq: dict[str, Tensor] = field(default_factory=dict)
    """``sum_n g_n^2``, the parameter's shape."""
    hist: dict[str, Tensor] = field(default_factory=dict)
    hist2d: dict[str, Tensor] = field(default_factory=dict)


class Capture:
    """Hooks that record layer inputs and output gradients during one forward/backward."""

    def __init__(self, model: nn.Module, params: Params) -> None:
        self.model = model
        owned = {id(p): n for n, p in params.items()}
        self.layers: dict[nn.Module, tuple[str, str | None]] = {}
        for module in model.modules():
            if isinstance(module, nn.Linear | _ConvNd) and id(module.weight) in owned:
                bias = module.bias
                bias_name = owned.get(id(bias)) if bias is not None else None
                if bias is not None and bias_name is None:
                    continue  # a frozen bias: leave the layer to torch.func
                self.layers[module] = (owned[id(module.weight)], bias_name)
        self.inputs: dict[nn.Module, list[Tensor]] = {}
        self.grads: dict[nn.Module, list[Tensor]] = {}
        self.outputs: dict[nn.Module, list[Tensor]] | None = None
        """Layer outputs (with their graph), recorded instead of gradients when not None."""
        self._handles: list[Any] = []

    def __enter__(self) -> Capture:
        self.inputs.clear()
        self.grads.clear()
        for module in self.layers:
            self._handles.append(module.register_forward_hook(self._forward_hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _forward_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor
                      ) -> None:
        self.inputs.setdefault(module, []).append(inputs[0].detach())
        if self.outputs is not None:
            self.outputs.setdefault(module, []).append(output)
        elif output.requires_grad:
            output.register_hook(lambda g: self.grads.setdefault(module, []).append(g.detach()))

    def per_sample(self, batch_size: int) -> dict[str, PerSample]:
        """Per-sample gradients of the layers seen exactly once with their output gradient."""
        found: dict[str, PerSample] = {}
        for module, (weight, bias) in self.layers.items():
            inputs, grads = self.inputs.get(module, []), self.grads.get(module, [])
            if len(inputs) != 1 or len(grads) != 1:
                continue  # unused, or used twice (shared weights): torch.func handles it
            # u_n = B dL/dz_n. Linear layers scale dz (small); convolutions scale their
            # per-sample results instead, as their output gradients are the largest tensors.
            a, dz = inputs[0], grads[0]
            if a.shape[0] != batch_size:
                continue
            if isinstance(module, nn.Linear):
                dz = dz * batch_size
                if a.dim() == 2:
                    found[weight] = Outer(dz, a)
                else:
                    found[weight] = torch.einsum("b...o,b...i->boi", dz, a)
                if bias is not None:
                    found[bias] = dz.reshape(batch_size, -1, dz.shape[-1]).sum(1)
            else:
                try:
                    found[weight] = _conv_weight_grads(module, a, dz).mul_(batch_size)  # type: ignore[arg-type]
                except _Unsupported:
                    continue
                if bias is not None:
                    found[bias] = dz.flatten(2).sum(2).mul_(batch_size)
        return found


def _conv_weight_grads(module: _ConvNd, a: Tensor, dz: Tensor) -> Tensor:
    """Per-sample weight gradients of a convolution, ``(B, *weight.shape)``.

    The gradient of sample ``n`` is the correlation of its input with its output gradient,
    so all of them are one grouped convolution with the batch as groups (input channels as
    the batch, stride and dilation swapped), as in Goodfellow's and Opacus' per-sample
    convolution gradients.
    """
    dims = a.dim() - 2
    if (module.padding_mode != "zeros" or module.transposed or module.groups != 1
            or isinstance(module.padding, str) or dims not in (1, 2, 3)):
        raise _Unsupported
    conv = (nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[dims - 1]
    batch, channels, out = a.shape[0], a.shape[1], dz.shape[1]
    kernel = module.kernel_size
    grads = conv(a.transpose(0, 1), dz.reshape(batch * out, 1, *dz.shape[2:]), None,
                 stride=module.dilation, padding=module.padding, dilation=module.stride,
                 groups=batch)
    for dim, k in enumerate(kernel):  # strides that do not divide evenly leave extra entries
        grads = grads.narrow(2 + dim, 0, k)
    return grads.reshape(channels, batch, out, *kernel).movedim(0, 2)


class _Unsupported(Exception):
    """A layer the closed forms do not cover (it goes through torch.func)."""


@dataclass
class Functional:
    """Per-example losses and per-sample gradients of any module through torch.func."""

    model: nn.Module
    per_example_loss: PerExampleLoss
    regularizer: Callable[[Params], Tensor | None] | None = None

    def outputs(self, params: Params, x: Tensor) -> Tensor:
        """Model outputs at ``params``, on copies of the buffers (BatchNorm statistics stay),
        under a forked RNG (dropout masks drawn here leave the training's random stream
        alone) and with attention in its math kernel (the fused CPU kernels have no
        forward-mode derivative, which Hessian-vector products and projections use)."""
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        devices = sorted({p.device.index or 0 for p in params.values() if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices), sdpa_kernel(SDPBackend.MATH):
            return functional_call(self.model, (params, buffers), (x,))

    def losses(self, params: Params, x: Tensor, y: Tensor | None) -> Tensor:
        """Per-example objective ``l_n + R`` at ``params`` (a full parameter dict)."""
        out = self.per_example_loss(self.outputs(params, x), y)
        reg = self.regularizer(params) if self.regularizer is not None else None
        return out if reg is None else out + reg

    def grads(self, params: Params, names: list[str], x: Tensor, y: Tensor | None,
              max_elements: int = MAX_ELEMENTS) -> Iterator[dict[str, Tensor]]:
        """Chunks ``{name: (chunk, *shape)}`` of per-sample gradients of ``names``."""
        fixed = {n: p.detach() for n, p in params.items() if n not in names}

        def sample_loss(free: Params, xs: Tensor, ys: Tensor | None) -> Tensor:
            inputs = xs.unsqueeze(0)
            targets = None if ys is None else ys.unsqueeze(0)
            return self.losses({**fixed, **free}, inputs, targets).sum()

        free = {n: params[n].detach() for n in names}
        size = max(1, sum(p.numel() for p in free.values()))
        chunk = max(1, max_elements // size)
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, None if y is None else 0))
        for start in range(0, x.shape[0], chunk):
            stop = start + chunk
            yield per_sample(free, x[start:stop], None if y is None else y[start:stop])

    def directional(self, params: Params, names: list[str], directions: list[Params],
                    x: Tensor, y: Tensor | None) -> Tensor:
        """``(B, K)``: per-sample derivatives along each direction, restricted to ``names``."""
        fixed = {n: p.detach() for n, p in params.items() if n not in names}
        primal = {n: params[n].detach() for n in names}
        columns = [jvp(lambda free: self.losses({**fixed, **free}, x, y), (primal,),
                       ({n: d[n] for n in names},))[1] for d in directions]
        return torch.stack(columns, dim=1)


def statistics(found: dict[str, PerSample], functional: Functional | None, params: Params,
               x: Tensor, y: Tensor | None, *, norms: bool = False,
               directions: Params | None = None, sum_sq: bool = False,
               hist: HistSpec | None = None, hist2d: Hist2dSpec | None = None,
               max_elements: int = MAX_ELEMENTS) -> Statistics:
    """The requested reductions for every parameter in ``params``.

    ``found`` holds per-sample gradients from layer factors; parameters missing there go
    through ``functional`` (per-sample gradients for norms, second moments and histograms;
    one ``jvp`` per direction for projections). ``directions`` holds, per parameter, the
    ``K`` directions stacked, ``(K, *shape)``; ``dots`` then has ``K`` columns.
    """
    stats = Statistics()
    directions = directions or {}
    rest = [n for n in params if n not in found]
    for name, g in found.items():
        _reduce(stats, name, g, params[name], norms, directions, sum_sq, hist, hist2d,
                max_elements)
    if not rest:
        return stats
    assert functional is not None
    if norms or sum_sq or hist is not None or hist2d is not None:
        chunks: dict[str, list[Statistics]] = {}
        for block in functional.grads(params, rest, x, y, max_elements):
            for name, g in block.items():
                part = Statistics()
                _reduce(part, name, g, params[name], norms, {}, sum_sq, hist, hist2d,
                        max_elements)
                chunks.setdefault(name, []).append(part)
        for name, parts in chunks.items():
            _merge(stats, name, parts)
    if directions:
        count = len(next(iter(directions.values())))
        projections = functional.directional(
            params, rest, [{n: directions[n][k] for n in rest} for k in range(count)], x, y)
        # Attribute the projections of the torch.func parameters to the first of them; only
        # their sum over parameters is ever used.
        stats.dots[rest[0]] = projections
        for name in rest[1:]:
            stats.dots[name] = torch.zeros_like(projections)
    return stats


def _reduce(stats: Statistics, name: str, g: PerSample, param: Tensor, norms: bool,
            directions: Params, sum_sq: bool, hist: HistSpec | None,
            hist2d: Hist2dSpec | None, max_elements: int) -> None:
    if isinstance(g, Outer):
        u, v = g.u, g.v
        if norms:
            stats.sq_norms[name] = _sq_norms(u) * _sq_norms(v)
        if directions:
            d = directions[name]  # (K, out, in)
            stats.dots[name] = ((v @ d.reshape(-1, d.shape[-1]).T).view(len(u), len(d), -1)
                                * u[:, None, :]).sum(2)
        if sum_sq:
            stats.sum_sq[name] = u.square().T @ v.square()
        if hist is not None:
            stats.hist[name] = outer_histogram(u, v, *hist.limits, hist.bins)
        if hist2d is not None:
            chunk = max(1, max_elements // max(1, param.numel()))
            stats.hist2d[name] = sum(  # type: ignore[assignment]
                _hist2d(g.dense(s, s + chunk), param, hist2d) for s in range(0, len(u), chunk))
        return
    flat = g.flatten(1)
    if norms:
        stats.sq_norms[name] = _sq_norms(flat)
    if directions:
        d = directions[name]
        stats.dots[name] = flat @ d.reshape(len(d), -1).T
    if sum_sq:
        stats.sum_sq[name] = g.square().sum(0)
    if hist is not None:
        stats.hist[name] = histogram(g, *hist.limits, hist.bins)
    if hist2d is not None:
        stats.hist2d[name] = _hist2d(g, param, hist2d)


def _sq_norms(rows: Tensor) -> Tensor:
    """Squared norm of every row, without a squared copy of ``rows``."""
    return torch.linalg.vector_norm(rows, dim=1).square_()


def _hist2d(g: Tensor, param: Tensor, spec: Hist2dSpec) -> Tensor:
    """Pairs (gradient element, parameter element), as Cockpit's ``GradHist2d``."""
    return histogram2d(g, param.detach().unsqueeze(0), spec.grad_limits, spec.grad_bins,
                       spec.param_limits, spec.param_bins)


def _merge(stats: Statistics, name: str, parts: list[Statistics]) -> None:
    """Combine the statistics of chunks of samples: concatenate per-sample values, add
    sums."""
    if name in parts[0].sq_norms:
        stats.sq_norms[name] = torch.cat([p.sq_norms[name] for p in parts])
    for key in ("sum_sq", "hist", "hist2d"):
        if name in getattr(parts[0], key):
            getattr(stats, key)[name] = sum(getattr(p, key)[name] for p in parts)


def ggn_diagonal_layers(capture: Capture, functional: Functional, params: Params, x: Tensor,
                        y: Tensor) -> Params | None:
    """Exact GGN diagonal from layer factors, or None where a parameter is not covered.

    The same quantity as :func:`obsbench.instruments.curvature.ggn_diagonal` (see there),
    computed as BackPACK's ``DiagGGNExact`` does (Dangel, Kunstner & Hennig, ICLR 2020):
    one forward pass, then the ``C`` columns ``s_{n,c}`` of each sample's factor
    ``Lambda_n = S_n S_n^T`` are back-propagated at once (one batched backward pass), and a
    linear layer's diagonal is ``(1/B) (sum_c dz_c^2)^T a^2`` without any per-sample
    gradient; convolutions form their per-sample, per-column gradients one layer at a time.
    """
    covered = {name for names in capture.layers.values() for name in names if name}
    if set(params) - covered:
        return None
    free = {n: p.detach().requires_grad_() for n, p in params.items()}
    capture.outputs = {}
    try:
        with capture:
            out = functional.outputs(free, x)
        outputs, inputs = capture.outputs, capture.inputs
    finally:
        capture.outputs = None
    layers = [m for m in capture.layers if len(outputs.get(m, [])) == 1]
    if len(layers) != len(capture.layers):
        return None  # a layer used twice or not at all
    batch, flat = out.shape[0], out.reshape(out.shape[0], -1).detach()
    tail = out.shape[1:]

    def sample_loss(o: Tensor, target: Tensor) -> Tensor:
        return functional.per_example_loss(o.reshape(1, *tail), target.unsqueeze(0)).sum()

    lam = vmap(torch.func.hessian(sample_loss))(flat, y)
    eig = torch.linalg.eigh((lam + lam.transpose(1, 2)) / 2)
    factor = eig.eigenvectors * eig.eigenvalues.clamp(min=0).sqrt().unsqueeze(1)  # (B, C, C)
    cotangents = factor.permute(2, 0, 1).reshape(-1, *out.shape)  # column c of every S_n
    grads = torch.autograd.grad(out, [outputs[m][0] for m in layers], cotangents,
                                is_grads_batched=True)
    diag: Params = {}
    for module, dz in zip(layers, grads, strict=True):
        weight, bias = capture.layers[module]
        a = inputs[module][0]
        if isinstance(module, nn.Linear) and a.dim() == 2:
            d2 = dz.square().sum(0)  # sum over the columns c: (B, out)
            diag[weight] = d2.T @ a.square() / batch
        elif isinstance(module, nn.Linear):
            per_sample = torch.einsum("cb...o,b...i->cboi", dz, a)
            diag[weight] = per_sample.square().sum((0, 1)) / batch
        else:
            try:
                per_sample = torch.stack([_conv_weight_grads(module, a, d) for d in dz])  # type: ignore[arg-type]
            except _Unsupported:
                return None
            diag[weight] = per_sample.square().sum((0, 1)) / batch
        if bias is not None:
            per_bias = (dz.reshape(*dz.shape[:2], -1, dz.shape[-1]).sum(2)
                        if isinstance(module, nn.Linear) else dz.flatten(3).sum(3))
            diag[bias] = per_bias.square().sum((0, 1)) / batch
    return diag
