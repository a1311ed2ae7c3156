"""Optimizer classes that the ``kind: import`` specs of ``tests/invalid_specs`` point at."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class TinySGD(torch.optim.Optimizer):
    """Plain SGD with one optional keyword, ``dampening``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, dampening: float = 0.0):
        super().__init__(params, {"lr": lr, "dampening": dampening})


class NeedsAlpha(torch.optim.Optimizer):
    """An optimizer whose ``alpha`` has no default, so a spec must give it."""

    def __init__(self, params: Iterable[Any], lr: float, alpha: float):
        super().__init__(params, {"lr": lr, "alpha": alpha})


class NotAnOptimizer:
    """A class that is not a ``torch.optim.Optimizer``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2):
        self.lr = lr
