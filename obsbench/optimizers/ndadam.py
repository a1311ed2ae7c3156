"""ND-Adam, hand-written: no maintained PyTorch implementation exists.

Zhang, Ma, Li & Wu, "Normalized Direction-preserving Adam", 2017 (arXiv:1709.04546),
Algorithm 1. For a weight vector ``w`` (one unit's incoming weights, kept at unit norm) with
gradient ``g`` at step ``t``::

    g_bar = g - (g . w) w                      # the gradient's part tangent to the sphere
    m     = b1 m + (1 - b1) g_bar
    v     = b2 v + (1 - b2) ||g_bar||^2        # one second moment per vector
    w     = w - lr_v * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    w     = w / ||w||

Every other parameter (biases, gains) takes an Adam step with ``lr``. ``lr_v`` is
``vector_lr_ratio * lr``, so a learning-rate schedule scales both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def _row_norms(p: torch.Tensor) -> torch.Tensor:
    """``||p[i]||`` for every unit ``i``, shaped to broadcast against ``p``."""
    dims = tuple(range(1, p.ndim))
    # (units, 1, ..., 1); a zero row stays zero instead of turning into NaN
    return p.norm(dim=dims, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


class NDAdamOptimizer(torch.optim.Optimizer):
    """ND-Adam (see the module docstring for the update).

    Args:
        params: Parameters or parameter groups.
        lr: Step size of the parameters that are not unit vectors (Adam's).
        betas: Decay rates ``(b1, b2)`` of the first and second moments.
        eps: Added to the root of the second moment.
        weight_decay: L2 penalty added to the gradient of the non-vector parameters (the
            vectors have unit norm, which a penalty cannot change).
        vector_lr_ratio: Step size of the unit vectors as a multiple of ``lr``.
        unit_norm: ``"rows"``: parameters with two or more dimensions are unit vectors along
            dim 0 (normalised at their first step); ``"none"``: plain Adam.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, vector_lr_ratio: float = 50.0,
                 unit_norm: str = "rows"):
        if unit_norm not in {"rows", "none"}:
            raise ValueError(f"unit_norm must be 'rows' or 'none', got {unit_norm!r}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "vector_lr_ratio": vector_lr_ratio, "unit_norm": unit_norm}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                vector = group["unit_norm"] == "rows" and p.ndim >= 2
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    if vector:
                        p.div_(_row_norms(p))
                        state["exp_avg_sq"] = torch.zeros_like(_row_norms(p))  # (units, 1, ...)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                grad = p.grad
                if vector:
                    dims = tuple(range(1, p.ndim))
                    # (units, 1, ..., 1) projections of each row's gradient on its row
                    grad = grad - (grad * p).sum(dim=dims, keepdim=True) * p
                    square = (grad * grad).sum(dim=dims, keepdim=True)
                    lr = group["lr"] * group["vector_lr_ratio"]
                else:
                    if group["weight_decay"]:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    square = grad * grad
                    lr = group["lr"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).add_(square, alpha=1 - beta2)
                denominator = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(exp_avg, denominator, value=-lr / (1 - beta1**t))
                if vector:
                    p.div_(_row_norms(p))
        return loss
