"""DeepOBS's ``quadratic_deep``: a 100-dimensional noisy quadratic with a deep-learning spectrum.

Definition (DeepOBS, Schneider, Balles & Hennig, "DeepOBS: A Deep Learning Optimizer
Benchmark Suite", ICLR 2019; TensorFlow reference ``deepobs/tensorflow/testproblems/
quadratic_deep.py``, ``_quadratic.py`` and ``datasets/quadratic.py``)::

    loss(theta; x) = 0.5 * (theta - x)^T Q (theta - x),     theta_0 = (1, ..., 1)
    Q = R^T diag(lambda) R,   lambda: 90 draws of U(0, 1) then 10 of U(30, 60)

``lambda`` and the Haar-random rotation ``R`` (the subgroup algorithm of Diaconis &
Shahshahani, 1987) are drawn, in that order, from ``numpy.random.RandomState(42)``. The data
are 1000 draws of ``N(0, 0.6^2 I)`` per split, cast to float32: train from seed 42, test from
seed 43 and validation from seed 44 (DeepOBS 1.2). No L2 regularisation.

The check against the published DeepOBS runs: with ``theta_0``, the test loss evaluated as
DeepOBS does (batches of 128, remainder dropped, mean of batch means) is 353.4468.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from obsbench.problems.base import Problem, Split

DIM = 100
NOISE = 0.6
SIZE = 1000


@functools.cache
def deep_spectrum_hessian() -> np.ndarray:
    """The fixed Hessian ``Q`` of quadratic_deep, in float64 (cached: do not modify)."""
    rng = np.random.RandomState(42)
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    rotation = _haar_rotation(DIM, rng)
    return rotation.T @ np.diag(eigenvalues) @ rotation


def _haar_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """Uniform draw from SO(dim) by the subgroup algorithm, consuming ``rng`` as DeepOBS does."""
    angle = 2 * np.pi * rng.uniform()
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v /= np.sqrt((v.T @ v).item())  # a uniform point on the sphere S^d
        e = np.zeros((d + 1, 1))
        e[0, 0] = 1.0
        x = (e - v) / np.sqrt(((e - v).T @ (e - v)).item())
        embedded = np.eye(d + 1)
        embedded[1:, 1:] = rot  # (d+1, d+1): SO(d) embedded in SO(d+1)
        # Householder reflection of the embedded rotation: (d+1, d+1)
        rot = embedded - 2 * np.outer(x, x.T @ embedded)
    return -rot


def noise_data(seed: int, size: int = SIZE) -> Tensor:
    """``size`` float32 draws of N(0, 0.6^2 I_100) from ``RandomState(seed)``."""
    draws = np.random.RandomState(seed).normal(0.0, NOISE, (size, DIM))
    return torch.from_numpy(np.float32(draws))


class NoisyQuadratic(nn.Module):
    """``forward(x)`` gives the per-example losses ``0.5 (theta - x)^T Q (theta - x)``."""

    def __init__(self, hessian: np.ndarray):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(hessian.shape[0]))
        self.hessian: Tensor
        self.register_buffer("hessian", torch.from_numpy(np.float32(hessian)))

    def forward(self, x: Tensor) -> Tensor:
        diff = self.theta - x  # (batch, dim)
        return 0.5 * ((diff @ self.hessian) * diff).sum(dim=1)  # (batch,)


def build(batch_size: int, num_epochs: int, tiny: bool) -> Problem:
    """quadratic_deep; ``tiny`` keeps the test set but trains on 256 points."""
    train = noise_data(42, 256 if tiny else SIZE)
    return Problem(
        model=NoisyQuadratic(deep_spectrum_hessian()),
        train=Split(train),
        splits={
            "train_eval": Split(train),
            "valid": Split(noise_data(44)),
            "test": Split(noise_data(43)),
        },
        batch_size=batch_size,
        num_epochs=num_epochs,
    )
