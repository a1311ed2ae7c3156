"""Curvature routines against brute force: explicit float64 Hessians and GGNs of tiny models."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from obsbench.instruments.curvature import (
    Params,
    ggn_diagonal,
    hessian_diagonal,
    hutchinson_trace,
    hvp,
    max_eigenvalue,
)

DT = torch.float64

# torch scripts its forward-AD decompositions on first use (a torch-internal deprecation).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


class MeanPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1)


def _build(kind: str) -> tuple[nn.Module, Tensor]:
    if kind == "transformer":
        layer = nn.TransformerEncoderLayer(
            d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True
        )
        return nn.Sequential(layer, MeanPool(), nn.Linear(8, 3)), torch.randn(4, 3, 8)
    middles: dict[str, list[nn.Module]] = {
        "tanh": [nn.Tanh()],
        "relu": [nn.ReLU()],
        "layernorm": [nn.LayerNorm(6), nn.Tanh()],
    }
    middle = middles[kind]
    return nn.Sequential(nn.Linear(4, 6), *middle, nn.Linear(6, 3)), torch.randn(8, 4)


def flat(vec: Params) -> Tensor:
    return torch.cat([t.reshape(-1) for t in vec.values()])


def per_example_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


@dataclass
class Problem:
    """A tiny float64 classification problem (cross-entropy, 3 classes) and brute force."""

    model: nn.Module
    x: Tensor
    y: Tensor

    @property
    def params(self) -> Params:
        return dict(self.model.named_parameters())

    def outputs_of(self, params: Params, x: Tensor | None = None) -> Tensor:
        return functional_call(self.model, params, (self.x if x is None else x,))

    def loss_of(self, params: Params) -> Tensor:
        return per_example_loss(self.outputs_of(params), self.y).mean()

    def unflatten(self, vector: Tensor) -> Params:
        sizes = [p.numel() for p in self.params.values()]
        parts = vector.split(sizes)
        return {n: t.reshape(p.shape) for (n, p), t in zip(self.params.items(), parts, strict=True)}

    def of_flat(self, fn: Callable[[Params], Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda vector: fn(self.unflatten(vector))

    @cached_property
    def hessian(self) -> Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            h = torch.autograd.functional.hessian(
                self.of_flat(self.loss_of), flat(self.params).detach(), vectorize=True
            )
        assert isinstance(h, Tensor)
        return h

    @cached_property
    def ggn(self) -> Tensor:
        """``(1/B) sum_n J_n^T Lambda_n J_n``, J from autograd's jacobian, Lambda per sample."""
        with sdpa_kernel(SDPBackend.MATH):
            jac = torch.autograd.functional.jacobian(
                self.of_flat(self.outputs_of), flat(self.params).detach()
            )
        assert isinstance(jac, Tensor)
        outputs = self.outputs_of(self.params).detach()
        total = torch.zeros_like(self.hessian)
        for n in range(len(outputs)):
            lam = torch.autograd.functional.hessian(
                lambda o, n=n: per_example_loss(o[None], self.y[n : n + 1])[0], outputs[n]
            )
            assert isinstance(lam, Tensor)
            total += jac[n].T @ lam @ jac[n]
        return total / len(outputs)


_PROBLEMS: dict[str, Problem] = {}


def problem(kind: str) -> Problem:
    """Built once per kind (module cache), seeded, in float64."""
    if kind not in _PROBLEMS:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model, x = _build(kind)
            y = torch.randint(0, 3, (len(x),))
        _PROBLEMS[kind] = Problem(model.to(DT), x.to(DT), y)
    return _PROBLEMS[kind]


KINDS = ["tanh", "layernorm", "transformer"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_models_are_small() -> None:
    for kind in [*KINDS, "relu"]:
        assert flat(problem(kind).params).numel() < 1000


@pytest.mark.parametrize("kind", KINDS)
def test_hvp_equals_explicit_hessian_times_vector(kind: str) -> None:
    prob = problem(kind)
    for seed in range(2):
        v = torch.randn(len(prob.hessian), generator=gen(seed), dtype=DT)
        got = flat(hvp(prob.loss_of, prob.params, prob.unflatten(v)))
        want = prob.hessian @ v
        assert torch.linalg.norm(got - want) <= 1e-10 * torch.linalg.norm(want)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_diagonal_equals_explicit_diagonal(kind: str) -> None:
    prob = problem(kind)
    want = prob.hessian.diagonal()
    for chunk in (256, 50):  # 50 does not divide any of the parameter counts
        diag = hessian_diagonal(prob.loss_of, prob.params, chunk=chunk)
        assert {k: t.shape for k, t in diag.items()} == {k: p.shape for k, p in prob.params.items()}
        assert (flat(diag) - want).abs().max() <= 1e-8 * want.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_max_eigenvalue_is_dominant_eigenvalue(kind: str) -> None:
    prob = problem(kind)
    eigvals = torch.linalg.eigvalsh(prob.hessian)
    dominant = eigvals[eigvals.abs().argmax()].item()
    assert dominant == eigvals[-1].item()  # positive and dominant in these problems
    tight = max_eigenvalue(
        prob.loss_of, prob.params, max_iter=5000, rtol=1e-12, atol=0.0, generator=gen()
    )
    assert tight == pytest.approx(dominant, rel=1e-6)
    # The default, Cockpit-like tolerances bound the step-to-step change, not the error.
    default = max_eigenvalue(prob.loss_of, prob.params, generator=gen())
    assert default == pytest.approx(dominant, rel=1e-2)


def test_max_eigenvalue_finds_largest_magnitude_and_warns() -> None:
    a = torch.diag(torch.tensor([-5.0, 1.0, 2.0, 0.5], dtype=DT))

    def quadratic(params: Params) -> Tensor:
        w = params["w"]
        return 0.5 * w @ a @ w

    params = {"w": torch.ones(4, dtype=DT)}
    assert flat(hvp(quadratic, params, {"w": torch.arange(4.0, dtype=DT)})).tolist() == [
        0.0, 1.0, 4.0, 1.5
    ]
    assert max_eigenvalue(quadratic, params, generator=gen()) == pytest.approx(-5.0, rel=1e-3)
    with pytest.warns(RuntimeWarning, match="no convergence"):
        max_eigenvalue(quadratic, params, max_iter=2, rtol=0.0, atol=0.0, generator=gen())
    zero = max_eigenvalue(lambda p: 0.0 * p["w"].sum(), params, generator=gen())
    assert zero == 0.0


def test_hutchinson_diagonal_and_trace_within_five_standard_errors() -> None:
    prob, probes = problem("tanh"), 2000
    h = prob.hessian
    off = h - torch.diag(h.diagonal())

    diag = flat(hessian_diagonal(prob.loss_of, prob.params, method="hutchinson",
                                 probes=probes, generator=gen(), chunk=300))
    # Var(z_i (H z)_i) = sum_{j != i} H_ij^2 for Rademacher z (Bekas et al., 2007).
    se = (off**2).sum(1).sqrt() / math.sqrt(probes)
    assert ((diag - h.diagonal()).abs() <= 5 * se + 1e-12).all()
    assert not torch.equal(diag, h.diagonal())  # an estimate, not the exact values

    estimate, error = hutchinson_trace(prob.loss_of, prob.params, probes=probes, generator=gen())
    assert abs(estimate - h.trace().item()) < 5 * error
    # The reported standard error estimates sqrt(2 sum_{i != j} H_ij^2 / K).
    assert error == pytest.approx(math.sqrt(2 * (off**2).sum().item() / probes), rel=0.2)
    # Same probes as the diagonal estimate (same seed, probe-major stream), any chunking.
    again = hutchinson_trace(prob.loss_of, prob.params, probes=probes, generator=gen(), chunk=7)
    assert again[0] == pytest.approx(diag.sum().item(), rel=1e-10)
    assert math.isnan(hutchinson_trace(prob.loss_of, prob.params, probes=1, generator=gen())[1])


@pytest.mark.parametrize("kind", [*KINDS, "relu"])
def test_ggn_diagonal_equals_explicit_ggn(kind: str) -> None:
    prob = problem(kind)
    diag = ggn_diagonal(prob.outputs_of, per_example_loss, prob.params, prob.x, prob.y,
                        max_elements=500)
    want = prob.ggn.diagonal()
    assert (flat(diag) - want).abs().max() <= 1e-8 * want.abs().max()


def test_ggn_diagonal_is_hessian_diagonal_only_for_piecewise_linear_nets() -> None:
    relu, tanh = problem("relu"), problem("tanh")
    for prob, same in ((relu, True), (tanh, False)):
        diag = flat(ggn_diagonal(prob.outputs_of, per_example_loss, prob.params, prob.x, prob.y))
        gap = (diag - prob.hessian.diagonal()).abs().max() / prob.hessian.diagonal().abs().max()
        assert (gap.item() <= 1e-8) == same, (prob.model, gap.item())
    # The full matrices differ even for ReLU: only the diagonal coincides.
    assert not torch.allclose(relu.ggn, relu.hessian, atol=1e-6)


def test_ggn_diagonal_handles_multidimensional_outputs() -> None:
    prob = problem("tanh")

    def outputs_of(params: Params, x: Tensor) -> Tensor:
        return prob.outputs_of(params, x).reshape(-1, 3, 1)

    def loss_on(outputs: Tensor, targets: Tensor) -> Tensor:
        return per_example_loss(outputs[..., 0], targets)

    diag = ggn_diagonal(outputs_of, loss_on, prob.params, prob.x, prob.y)
    assert torch.allclose(flat(diag), prob.ggn.diagonal(), rtol=1e-8, atol=1e-14)


def _run_all(prob: Problem, seed: int) -> list[Tensor]:
    p = prob.params
    return [
        flat(hvp(prob.loss_of, p, prob.unflatten(torch.ones(len(flat(p)), dtype=DT)))),
        torch.tensor(max_eigenvalue(prob.loss_of, p, generator=gen(seed))),
        flat(hessian_diagonal(prob.loss_of, p)),
        flat(hessian_diagonal(prob.loss_of, p, method="hutchinson", generator=gen(seed))),
        torch.tensor(hutchinson_trace(prob.loss_of, p, probes=8, generator=gen(seed))),
        flat(ggn_diagonal(prob.outputs_of, per_example_loss, p, prob.x, prob.y)),
    ]


def test_no_side_effects_and_deterministic() -> None:
    prob = problem("layernorm")
    prob.loss_of(prob.params).backward()  # populate .grad, which must stay as it is
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in prob.params.items()
              if p.grad is not None}
    assert len(before) == len(prob.params)
    rng = torch.get_rng_state()

    first, second, other = _run_all(prob, 1), _run_all(prob, 1), _run_all(prob, 2)

    assert torch.equal(torch.get_rng_state(), rng)
    for name, p in prob.params.items():
        assert p.requires_grad
        assert torch.equal(p.detach(), before[name][0])
        assert p.grad is not None and torch.equal(p.grad, before[name][1])
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
        assert a.grad_fn is None and not a.requires_grad
    assert not torch.equal(first[3], other[3])  # Hutchinson depends on the seed
    for p in prob.params.values():
        p.grad = None


def test_invalid_arguments() -> None:
    prob = problem("tanh")
    with pytest.raises(ValueError, match="Generator"):
        hessian_diagonal(prob.loss_of, prob.params, method="hutchinson")
    with pytest.raises(ValueError, match="unknown method"):
        hessian_diagonal(prob.loss_of, prob.params, method="bfgs")
    with pytest.raises(ValueError, match="chunk"):
        hessian_diagonal(prob.loss_of, prob.params, chunk=0)
    with pytest.raises(ValueError, match="probes"):
        hutchinson_trace(prob.loss_of, prob.params, probes=0, generator=gen())
