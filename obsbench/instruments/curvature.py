"""Curvature of the mini-batch loss for Cockpit-style instruments, in pure ``torch.func``.

Cockpit (Schneider, Dangel & Hennig, NeurIPS 2021) gets its second-order quantities from
BackPACK (Dangel, Kunstner & Hennig, ICLR 2020), which supports only a fixed set of layers.
The routines here use ``torch.func`` (``functional_call``, ``grad``, ``jvp``, ``vjp``,
``vmap``) instead and therefore work on any ``nn.Module`` that ``torch.func`` can
differentiate twice, including ``nn.LayerNorm`` and ``nn.TransformerEncoderLayer``.

Conventions:

* parameters are a ``dict[str, Tensor]`` keyed as in ``model.named_parameters()``; vectors
  in parameter space are dicts with the same keys and shapes;
* ``loss_of(params) -> Tensor`` is the scalar mini-batch objective as a function of the
  parameters, e.g. ``lambda p: F.cross_entropy(functional_call(model, p, (x,)), y)``;
* everything runs in the parameters' dtype and on their device; random probes come from
  an explicit CPU ``torch.Generator`` (never the global RNG) and are then moved there;
* nothing modifies the parameters, their ``.grad`` or any global state: the parameters are
  detached, and ``torch.func`` never touches ``.grad``.

Attention runs on PyTorch's math SDPA backend inside these routines, because the fused
kernels (flash / memory-efficient attention) have no forward-mode derivative of their
backward pass. This costs memory for long sequences but changes no values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

Params = dict[str, Tensor]
"""Parameters, or a vector in parameter space: ``{name: tensor}``."""
LossOf = Callable[[Params], Tensor]
"""The scalar mini-batch objective as a function of the parameters."""

__all__ = [
    "LossOf",
    "Params",
    "ggn_diagonal",
    "hessian_diagonal",
    "hutchinson_trace",
    "hvp",
    "max_eigenvalue",
]


def _math_attention() -> AbstractContextManager[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _detached(params: Params) -> Params:
    return {name: p.detach() for name, p in params.items()}


def _flatten(vec: Params, batch: int = 0) -> Tensor:
    """Concatenate a (batched, with ``batch`` leading dims) parameter-space vector."""
    return torch.cat([t.reshape(*t.shape[:batch], -1) for t in vec.values()], dim=-1)


def _unflatten(flat: Tensor, like: Params) -> Params:
    """Inverse of :func:`_flatten` for a flat tensor of shape ``(*lead, D)``."""
    lead = flat.shape[:-1]
    sizes = [p.numel() for p in like.values()]
    parts = flat.split(sizes, dim=-1)
    return {
        name: part.reshape(*lead, *p.shape)
        for (name, p), part in zip(like.items(), parts, strict=True)
    }


def _num_params(params: Params) -> int:
    return sum(p.numel() for p in params.values())


def _reference(params: Params) -> Tensor:
    if not params:
        raise ValueError("no parameters")
    return next(iter(params.values()))


def _hvp_fn(loss_of: LossOf, params: Params) -> Callable[[Params], Params]:
    """``v -> H v`` at ``params`` (already detached), forward-over-reverse."""
    grad_fn = grad(loss_of)

    def apply(vec: Params) -> Params:
        return jvp(grad_fn, (params,), (vec,))[1]

    return apply


def hvp(loss_of: LossOf, params: Params, vec: Params) -> Params:
    """Hessian-vector product ``H v`` of the mini-batch loss, ``H = d^2 L / d theta^2``.

    Computed forward-over-reverse, ``H v = d/dt grad L(theta + t v) |_{t=0}``, i.e.
    ``torch.func.jvp`` of ``torch.func.grad(loss_of)`` (Pearlmutter, 1994, "Fast exact
    multiplication by the Hessian"); one call costs a few gradient evaluations and no
    explicit Hessian. ``vec`` has the keys and shapes of ``params``; so does the result.
    """
    with _math_attention():
        vec = {name: vec[name].detach() for name in params}
        return _hvp_fn(loss_of, _detached(params))(vec)


def _dot(a: Params, b: Params) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def max_eigenvalue(
    loss_of: LossOf,
    params: Params,
    *,
    max_iter: int = 100,
    rtol: float = 1e-3,
    atol: float = 1e-6,
    generator: torch.Generator,
) -> float:
    """Dominant Hessian eigenvalue by power iteration on HVPs (Cockpit's ``HessMaxEV``).

    Starting from a random unit vector ``v_0`` (standard normal entries from the CPU
    ``generator``, normalised), iterate::

        lambda_k = v_{k-1}^T H v_{k-1},    v_k = H v_{k-1} / ||H v_{k-1}||

    and stop at the first ``k`` with ``|lambda_k - lambda_{k-1}| <= atol + rtol *
    |lambda_k|`` (``lambda_0 = inf``), returning ``lambda_k``; this is the stopping rule of
    Cockpit's ``HessMaxEV`` (``HVPLinearOperator.power_iteration`` in
    ``cockpit/quantities/hess_max_ev.py``, which uses ``torch.allclose(old, new, rtol, atol)``
    with the same defaults ``maxiter=100, rtol=1e-3, atol=1e-6``). After ``max_iter``
    iterations without convergence the last estimate is returned with a ``RuntimeWarning``,
    as Cockpit does. The same method is used by PyHessian (Yao et al., 2020, "PyHessian:
    Neural networks through the lens of the Hessian").

    Power iteration converges to the eigenvalue of largest *magnitude*. That is the
    largest algebraic eigenvalue whenever it dominates the most negative one, as it does for
    trained networks in practice; otherwise the (negative) dominant eigenvalue is returned,
    exactly as in Cockpit. The convergence rate is ``|lambda_2 / lambda_1|`` per step, so
    the tolerances bound the change between steps, not the error, when the spectral gap is
    small. Cockpit starts from uniform ``[0, 1)`` entries instead of normal ones; the
    normal start is rotation invariant and otherwise equivalent.
    """
    params = _detached(params)
    ref = _reference(params)
    vec = {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        for name, p in params.items()
    }
    vec = _scaled(vec, 1.0 / _dot(vec, vec).sqrt())
    eig = torch.tensor(math.inf, dtype=ref.dtype, device=ref.device)
    with _math_attention():
        apply = _hvp_fn(loss_of, params)
        for _ in range(max_iter):
            hv = apply(vec)
            new = _dot(vec, hv)
            norm = _dot(hv, hv).sqrt()
            if (new - eig).abs() <= atol + rtol * new.abs() or norm == 0:
                return float(new)
            eig, vec = new, _scaled(hv, 1.0 / norm)
    warnings.warn(
        f"max_eigenvalue: no convergence within {max_iter} power iterations",
        RuntimeWarning,
        stacklevel=2,
    )
    return float(eig)


def _scaled(vec: Params, factor: Tensor | float) -> Params:
    return {name: t * factor for name, t in vec.items()}


def _basis_chunks(params: Params, chunk: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(E, idx)``: rows of the identity ``E = I[idx]`` in chunks of ``chunk`` rows."""
    ref, total = _reference(params), _num_params(params)
    for start in range(0, total, chunk):
        idx = torch.arange(start, min(start + chunk, total), device=ref.device)
        basis = torch.zeros(len(idx), total, dtype=ref.dtype, device=ref.device)
        basis[torch.arange(len(idx), device=ref.device), idx] = 1
        yield basis, idx


def _rademacher_chunks(
    params: Params, probes: int, generator: torch.Generator, chunk: int
) -> Iterator[Tensor]:
    """Flat Rademacher probes ``z`` (entries +-1 with probability 1/2), ``(m, D)`` each."""
    ref, total = _reference(params), _num_params(params)
    for start in range(0, probes, chunk):
        count = min(chunk, probes - start)
        bits = torch.randint(0, 2, (count, total), generator=generator)
        yield (2 * bits - 1).to(dtype=ref.dtype, device=ref.device)


def _batched_hvp(loss_of: LossOf, params: Params, flat: Tensor) -> Tensor:
    """``(H v_i)_i`` for the rows ``v_i`` of ``flat`` (``(m, D)``), via ``vmap``."""
    apply = vmap(_hvp_fn(loss_of, params))
    return _flatten(apply(_unflatten(flat, params)), batch=1)


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")


def _hutchinson_samples(
    loss_of: LossOf, params: Params, probes: int, generator: torch.Generator, chunk: int
) -> Iterator[Tensor]:
    """Per-probe products ``z_k * (H z_k)`` (flat, ``(m, D)`` per chunk of probes)."""
    if probes < 1:
        raise ValueError(f"probes must be positive, got {probes}")
    _check_chunk(chunk)
    for z in _rademacher_chunks(params, probes, generator, chunk):
        yield z * _batched_hvp(loss_of, params, z)


def hessian_diagonal(
    loss_of: LossOf,
    params: Params,
    *,
    method: str = "exact",
    probes: int = 16,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> Params:
    """Diagonal of the Hessian ``H`` of the mini-batch loss, exactly or by Hutchinson.

    ``method="exact"``: ``H_ii = e_i^T H e_i`` from ``D`` HVPs with the unit basis vectors
    ``e_i`` (``D`` = number of parameters), batched by ``torch.func.vmap`` over ``chunk``
    basis vectors at a time, so memory grows with ``chunk``, not ``D``. Exact, and costs
    ``D`` HVPs: meant for small models.

    ``method="hutchinson"``: the unbiased estimate ``diag(H) ~ (1/K) sum_k z_k * (H z_k)``
    (``*`` elementwise) over ``K = probes`` Rademacher vectors ``z_k`` drawn from the CPU
    ``generator`` (required), vmapped over ``chunk`` probes at a time (Bekas, Kokiopoulou &
    Saad, 2007, "An estimator for the diagonal of a matrix"; Hutchinson, 1989). The variance
    of entry ``i`` is ``(1/K) sum_{j != i} H_ij^2``.

    Returns a dict of the shapes of ``params``.
    """
    _check_chunk(chunk)
    params = _detached(params)
    parts: list[Tensor] = []
    with _math_attention():
        if method == "exact":
            for basis, idx in _basis_chunks(params, chunk):
                hv = _batched_hvp(loss_of, params, basis)
                parts.append(hv[torch.arange(len(idx), device=idx.device), idx])
            return _unflatten(torch.cat(parts), params)
        if method == "hutchinson":
            if generator is None:
                raise ValueError("method='hutchinson' needs a torch.Generator")
            samples = _hutchinson_samples(loss_of, params, probes, generator, chunk)
            total = torch.stack([s.sum(0) for s in samples]).sum(0)
            return _unflatten(total / probes, params)
    raise ValueError(f"unknown method {method!r}; use 'exact' or 'hutchinson'")


def hutchinson_trace(
    loss_of: LossOf,
    params: Params,
    *,
    probes: int,
    generator: torch.Generator,
    chunk: int = 256,
) -> tuple[float, float]:
    """Hutchinson's trace estimate of the Hessian and its standard error.

    ``tr(H) ~ (1/K) sum_k t_k`` with ``t_k = z_k^T H z_k`` over ``K = probes`` Rademacher
    vectors ``z_k`` from the CPU ``generator`` (Hutchinson, 1989, "A stochastic estimator of
    the trace of the influence matrix for Laplacian smoothing splines"). Cockpit's
    ``HessTrace`` instead sums an exact diagonal (BackPACK's ``DiagHessian`` by default, or
    ``DiagGGNExact``), i.e. :func:`hessian_diagonal` or :func:`ggn_diagonal` summed.
    Returns ``(estimate, standard error)``; the standard error is the sample standard
    deviation of the ``t_k`` over ``sqrt(K)`` (``nan`` for ``K = 1``). Its expectation is
    ``sqrt(2 sum_{i != j} H_ij^2 / K)``. Probes are vmapped in chunks of ``chunk``.
    """
    params = _detached(params)
    with _math_attention():
        samples = _hutchinson_samples(loss_of, params, probes, generator, chunk)
        values = torch.cat([s.sum(1) for s in samples])
    error = values.std().item() / math.sqrt(probes) if probes > 1 else math.nan
    return values.mean().item(), error


def ggn_diagonal(
    outputs_of: Callable[[Params, Tensor], Tensor],
    loss_on_outputs: Callable[[Tensor, Tensor], Tensor],
    params: Params,
    inputs: Tensor,
    targets: Tensor,
    *,
    max_elements: int = 1 << 24,
) -> Params:
    """Exact diagonal of the generalised Gauss-Newton matrix of a mean per-example loss.

    For ``L(theta) = (1/B) sum_n l(f_n(theta), y_n)`` with model outputs ``f_n`` (flattened
    to ``C`` entries per sample) the GGN (Schraudolph, 2002, "Fast curvature matrix-vector
    products for second-order gradient descent") is::

        G = (1/B) sum_n J_n^T Lambda_n J_n,   J_n = d f_n / d theta,   Lambda_n = d^2 l / d f_n^2

    Each ``Lambda_n`` comes from ``torch.func.hessian`` of the per-example loss and is
    factorised as ``Lambda_n = S_n S_n^T`` by a symmetric eigendecomposition
    (``S_n = V_n diag(sqrt(max(w_n, 0)))``: round-off negatives are clamped; for a convex
    loss ``Lambda_n`` is positive semi-definite). Then::

        diag(G) = (1/B) sum_n sum_c (J_n^T s_{n,c})^2

    with ``s_{n,c}`` column ``c`` of ``S_n``: per sample, one forward pass and ``C``
    vector-Jacobian products (``torch.func.vjp`` vmapped over ``c``), vmapped over chunks of
    samples so that at most about ``max_elements`` gradient elements exist at once. Samples
    must not interact (no BatchNorm in training mode).

    With cross-entropy this is BackPACK's ``DiagGGNExact`` (Dangel, Kunstner & Hennig,
    2020, "BackPACK: Packing more into backprop"). For networks that are piecewise linear in
    each single weight (ReLU, max-pool, linear layers), the second derivative of the outputs
    w.r.t. any one weight vanishes, so ``diag(G)`` equals the Hessian diagonal (as BackPACK's
    documentation states); off-diagonal entries still differ.

    ``outputs_of(params, inputs)`` returns the outputs of a batch of inputs, shape
    ``(b, ...)``; ``loss_on_outputs(outputs, targets)`` the per-example losses, shape
    ``(b,)``. Returns a dict of the shapes of ``params``.
    """
    params = _detached(params)
    with _math_attention():

        def sample_outputs(p: Params, x: Tensor) -> Tensor:
            return outputs_of(p, x.unsqueeze(0)).reshape(-1)

        first = outputs_of(params, inputs[:1])
        tail = first.shape
        classes = first.numel()

        def sample_ggn(x: Tensor, target: Tensor) -> Params:
            out, pullback = vjp(lambda p: sample_outputs(p, x), params)[:2]
            lam = torch.func.hessian(lambda o: loss_on_outputs(
                o.reshape(tail), target.unsqueeze(0)).reshape(()))(out.detach())
            lam = (lam + lam.T) / 2
            eig = torch.linalg.eigh(lam)
            factor = eig.eigenvectors * eig.eigenvalues.clamp(min=0).sqrt()  # columns s_c
            pulled = vmap(pullback)(factor.T)[0]
            return {n: g.square().sum(0) for n, g in pulled.items()}

        size = max(1, classes * _num_params(params))
        chunk = max(1, max_elements // size)
        total: Params = {n: torch.zeros_like(p) for n, p in params.items()}
        for start in range(0, inputs.shape[0], chunk):
            part = vmap(sample_ggn)(inputs[start:start + chunk], targets[start:start + chunk])
            for n, g in part.items():
                total[n] += g.sum(0)
    return {n: t / inputs.shape[0] for n, t in total.items()}
