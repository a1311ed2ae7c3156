"""DeepOBS's stochastic two-dimensional problems: Rosenbrock, Beale and Branin.

Definition (DeepOBS 1.2, TensorFlow reference ``deepobs/tensorflow/testproblems/two_d_*.py``
and ``datasets/two_d.py``): parameters ``(u, v)`` start at a fixed point; the loss of one
example ``(x, y)`` is ``f(u, v) + u * x + v * y``. Train noise: 10,000 draws of N(0, 1) for
``x`` then for ``y`` from ``RandomState(42)``; validation the same from ``RandomState(44)``;
the test set is all zeros, so the test loss is the deterministic function ``f``. Float32.

* Rosenbrock: ``(1 - u)^2 + 100 (v - u^2)^2``, start ``(-0.5, 1.5)``.
* Beale: ``(1.5 - u + uv)^2 + (2.25 - u + uv^2)^2 + (2.625 - u + uv^3)^2``, start
  ``(-4.5, 4.5)``.
* Branin: ``a (v - b u^2 + c u - r)^2 + s (1 - t) cos(u) + s`` with ``a = 1``,
  ``b = 5.1 / (4 pi^2)``, ``c = 5 / pi``, ``r = 6``, ``s = 10``, ``t = 1 / (8 pi)``, start
  ``(2.5, 12.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from obsbench.problems.base import Problem, Split

SIZE = 10_000


def rosenbrock(u: Tensor, v: Tensor) -> Tensor:
    return (1 - u) ** 2 + 100 * (v - u**2) ** 2


def beale(u: Tensor, v: Tensor) -> Tensor:
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2


def branin(u: Tensor, v: Tensor) -> Tensor:
    b = 5.1 / (4 * math.pi**2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (v - b * u**2 + c * u - 6) ** 2 + 10 * (1 - t) * torch.cos(u) + 10


FUNCTIONS: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], tuple[float, float]]] = {
    "rosenbrock": (rosenbrock, (-0.5, 1.5)),
    "beale": (beale, (-4.5, 4.5)),
    "branin": (branin, (2.5, 12.5)),
}


class NoisyFunction(nn.Module):
    """``forward(xy)``, ``xy`` of shape (batch, 2), gives the losses ``f(u, v) + u x + v y``."""

    def __init__(self, function: Callable[[Tensor, Tensor], Tensor], start: tuple[float, float]):
        super().__init__()
        self.function = function
        self.u = nn.Parameter(torch.tensor(start[0]))
        self.v = nn.Parameter(torch.tensor(start[1]))

    def forward(self, xy: Tensor) -> Tensor:
        return self.function(self.u, self.v) + self.u * xy[:, 0] + self.v * xy[:, 1]  # (batch,)


def noise_data(seed: int, size: int = SIZE) -> Tensor:
    """``(size, 2)`` float32: x, then y, each ``size`` draws of N(0, 1) from ``seed``."""
    rng = np.random.RandomState(seed)
    x = rng.normal(0.0, 1.0, size)
    y = rng.normal(0.0, 1.0, size)
    return torch.from_numpy(np.float32(np.stack([x, y], axis=1)))


def build(function: str, batch_size: int, num_epochs: int, tiny: bool) -> Problem:
    """A two_d problem; ``tiny`` trains and evaluates on the first 256 points of each split."""
    size = 256 if tiny else SIZE
    train = noise_data(42)[:size]
    f, start = FUNCTIONS[function]
    return Problem(
        model=NoisyFunction(f, start),
        train=Split(train),
        splits={
            "train_eval": Split(train),
            "valid": Split(noise_data(44)[:size]),
            "test": Split(torch.zeros(size, 2)),
        },
        batch_size=batch_size,
        num_epochs=num_epochs,
    )
