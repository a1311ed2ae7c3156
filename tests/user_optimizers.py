"""Optimizers that users might bring with ``kind: import``, for tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SignSGD(torch.optim.Optimizer):
    """``theta <- theta - lr * sign(g)`` (Bernstein et al., 2018): a well-behaved user optimizer."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


class Broken(torch.optim.Optimizer):
    """Raises on its ``fail_at``-th step, as buggy research code does."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, fail_at: int = 3) -> None:
        super().__init__(params, {"lr": lr})
        self.fail_at = fail_at
        self.steps = 0

    def step(self, closure: Any = None) -> None:
        self.steps += 1
        if self.steps >= self.fail_at:
            raise RuntimeError(f"step {self.steps}: shape mismatch in the preconditioner")
