"""Optimizers newer than Crowded Valley, from maintained libraries.

AdamW (``torch.optim``), Lion, Muon, SOAP and Shampoo (``pytorch_optimizer``), schedule-free
AdamW and SGD (``schedulefree``). None of them was in Crowded Valley, so their default search
spaces are ours: the study's dimensions applied to their hyperparameters (learning rates
LU(1e-4, 1), shifted for Lion and schedule-free SGD, whose step sizes differ by an order of
magnitude; betas LU(0.5, 0.999) and LU(0.8, 0.999); momentum LU(1e-3, 1)).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from obsbench.optimizers.base import OptimizerSpecBase, log_uniform, space
from obsbench.optimizers.crowded_valley import BETA1, BETA2, LR, MOMENTUM, Adam
from obsbench.space import SearchSpace
from obsbench.spec import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)

if TYPE_CHECKING:
    import torch


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``theta <- theta - lr * (m_hat /
    (sqrt(v_hat) + eps) + weight_decay * theta)``.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019.
    ``torch.optim.AdamW`` with PyTorch's default weight decay 0.01. Search space [ours]:
    Adam's, and ``weight_decay`` LU(1e-4, 1).
    """

    kind: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: NonNegativeFloat = 1e-2
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2,
                                      weight_decay=log_uniform(1e-4, 1.0))

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.AdamW(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class Lion(OptimizerSpecBase):
    """Lion: ``c = b1 m + (1 - b1) g; theta <- theta - lr * (sign(c) + weight_decay *
    theta); m <- b2 m + (1 - b2) g``.

    Reference: Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le, "Symbolic
    Discovery of Optimization Algorithms", 2023. ``pytorch_optimizer.Lion`` with the paper's
    defaults. Search space [ours]: ``lr`` LU(1e-5, 0.1) (sign updates want a learning rate
    3-10x below Adam's), ``beta1`` LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999).
    """

    kind: Literal["lion"]
    lr: PositiveFloat = 1e-4
    beta1: Probability = 0.9
    beta2: Probability = 0.99
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=log_uniform(1e-5, 0.1), beta1=BETA1, beta2=BETA2)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import Lion as Library

        return Library(params, lr=self.lr, betas=(self.beta1, self.beta2),
                       weight_decay=self.weight_decay, weight_decouple=True)


class _ScheduleFree(OptimizerSpecBase):
    """Schedule-free iterates: the model holds ``y`` while training and ``x`` while
    evaluating; the runner switches with ``optimizer.train()`` / ``optimizer.eval()``."""

    weight_decay: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 0
    r: NonNegativeFloat = Field(0.0, description="Polynomial weighting power of the average.")
    weight_lr_power: NonNegativeFloat = Field(
        2.0, description="Power of the learning rate in the averaging weights.")


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-free AdamW: ``y = (1 - b1) z + b1 x``; ``v <- b2 v + (1 - b2) g(y)^2``;
    ``z <- z - lr_t (g(y) / (sqrt(v_hat) + eps) + weight_decay * y)``; ``x <- (1 - c) x + c
    z`` with ``c = lr_t^2 / sum_i lr_i^2``, ``lr_t`` warmed up linearly over
    ``warmup_steps``. No learning-rate schedule is needed (leave ``schedule`` constant).

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
    Scheduled", 2024. ``schedulefree.AdamWScheduleFree`` with its defaults. Search space
    [ours]: ``lr`` LU(1e-4, 1), ``beta1`` LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999).
    """

    kind: Literal["schedulefree_adamw"]
    lr: PositiveFloat = 2.5e-3
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    eps: PositiveFloat = 1e-8
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from schedulefree import AdamWScheduleFree

        return AdamWScheduleFree(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay,
                                 warmup_steps=self.warmup_steps, r=self.r,
                                 weight_lr_power=self.weight_lr_power)


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD: ``y = (1 - momentum) z + momentum x``; ``z <- z - lr_t (g(y) +
    weight_decay * y)``; ``x <- (1 - c) x + c z`` with ``c = lr_t^2 / sum_i lr_i^2``.

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
    Scheduled", 2024. ``schedulefree.SGDScheduleFree`` with its defaults (its learning rate
    is 10-50x that of momentum SGD). Search space [ours]: ``lr`` LU(1e-3, 10), ``momentum``
    LU(1e-3, 1).
    """

    kind: Literal["schedulefree_sgd"]
    lr: PositiveFloat = 1.0
    momentum: Probability = 0.9
    search_space: SearchSpace = space(lr=log_uniform(1e-3, 10.0), momentum=MOMENTUM)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from schedulefree import SGDScheduleFree

        return SGDScheduleFree(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay, warmup_steps=self.warmup_steps,
                               r=self.r, weight_lr_power=self.weight_lr_power)


class Muon(OptimizerSpecBase):
    """Muon for weight matrices, AdamW for everything else. For a 2-D weight ``W``: ``B <-
    momentum * B + G``; ``U = G + momentum * B`` (Nesterov) or ``B``; ``O = NS5(U)``, five
    Newton-Schulz iterations towards the orthogonal factor of ``U``'s polar decomposition;
    ``W <- W - lr * (O + weight_decay * W)``. Other parameters take AdamW steps with
    ``adamw_lr``, ``adamw_beta1``, ``adamw_beta2``, ``adamw_eps`` and ``adamw_weight_decay``.

    Reference: Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, "Muon: An optimizer
    for hidden layers in neural networks", 2024. ``pytorch_optimizer.Muon`` with its
    defaults. Its authors also keep embeddings and the output layer on AdamW; a parameter
    list carries no such roles, so here every 2-D weight goes to Muon. ``flatten_kernels``
    also sends convolution kernels (4-D), seen as ``(out, in * h * w)`` matrices. A schedule
    scales both learning rates. Search space [ours]: ``lr`` and ``adamw_lr`` LU(1e-4, 1),
    ``momentum`` LU(1e-3, 1).
    """

    kind: Literal["muon"]
    lr: PositiveFloat = 2e-2
    momentum: Probability = 0.95
    nesterov: bool = True
    ns_steps: PositiveInt = 5
    weight_decay: NonNegativeFloat = 0.0
    adamw_lr: PositiveFloat = 3e-4
    adamw_beta1: Probability = 0.9
    adamw_beta2: Probability = 0.95
    adamw_eps: PositiveFloat = 1e-10
    adamw_weight_decay: NonNegativeFloat = 0.0
    flatten_kernels: bool = Field(
        False, description="Also orthogonalise weights with more than 2 dims.")
    search_space: SearchSpace = space(lr=LR, momentum=MOMENTUM, adamw_lr=LR)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import Muon as Library

        params = list(params)

        def orthogonalised(p: Any) -> bool:
            return bool(p.ndim == 2 or (self.flatten_kernels and p.ndim > 2))

        groups = [
            {"params": [p for p in params if orthogonalised(p)], "use_muon": True},
            {"params": [p for p in params if not orthogonalised(p)], "use_muon": False},
        ]
        return Library([g for g in groups if g["params"]], lr=self.lr,
                       momentum=self.momentum, nesterov=self.nesterov, ns_steps=self.ns_steps,
                       weight_decay=self.weight_decay, weight_decouple=True,
                       adamw_lr=self.adamw_lr, adamw_betas=(self.adamw_beta1, self.adamw_beta2),
                       adamw_eps=self.adamw_eps, adamw_wd=self.adamw_weight_decay)


class SOAP(OptimizerSpecBase):
    """SOAP: Adam in the eigenbasis of Shampoo's preconditioner. For a 2-D gradient ``G``:
    ``L <- s L + (1 - s) G G^T``, ``R <- s R + (1 - s) G^T G`` (``s`` = ``shampoo_beta``,
    else ``beta2``); every ``precondition_frequency`` steps ``Q_L``, ``Q_R`` <- their
    eigenvectors (one QR power step); ``G' = Q_L^T G Q_R``; Adam moments ``m``, ``v`` of
    ``G'``; ``W <- W - lr * (Q_L (m_hat / (sqrt(v_hat) + eps)) Q_R^T + weight_decay * W)``.
    Dimensions above ``max_precondition_dim`` (and 1-D parameters unless
    ``precondition_1d``) are not rotated.

    Reference: Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade, "SOAP:
    Improving and Stabilizing Shampoo using Adam", 2024. ``pytorch_optimizer.SOAP`` with the
    paper's defaults. Search space [ours]: ``lr`` LU(1e-4, 1), ``beta1`` LU(0.5, 0.999),
    ``beta2`` LU(0.8, 0.999).
    """

    kind: Literal["soap"]
    lr: PositiveFloat = 3e-3
    beta1: Probability = 0.95
    beta2: Probability = 0.95
    shampoo_beta: Probability | None = Field(
        None, description="Decay of the preconditioner statistics; null: beta2.")
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 1e-2
    precondition_frequency: PositiveInt = 10
    max_precondition_dim: PositiveInt = 10_000
    merge_dims: bool = False
    precondition_1d: bool = False
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import SOAP as Library

        return Library(params, lr=self.lr, betas=(self.beta1, self.beta2),
                       shampoo_beta=self.shampoo_beta, eps=self.eps,
                       weight_decay=self.weight_decay,
                       precondition_frequency=self.precondition_frequency,
                       max_precondition_dim=self.max_precondition_dim,
                       merge_dims=self.merge_dims, precondition_1d=self.precondition_1d)


_GRAFTS = {"none": 0, "sgd": 1, "adagrad": 2, "rmsprop": 3, "sqrt_n": 4}


class Shampoo(OptimizerSpecBase):
    """Shampoo, the scalable (blocked, grafted) version. For a 2-D block ``G``: ``L <- b2 L +
    (1 - b2) G G^T``, ``R <- b2 R + (1 - b2) G^T G``; ``P = L^(-1/4) G R^(-1/4)`` (inverse
    roots refreshed every ``preconditioning_compute_steps`` steps, from
    ``start_preconditioning_step`` on; before that only the graft steps); ``P`` is rescaled
    to the norm of the ``graft`` optimizer's update (SGD, AdaGrad or RMSProp);
    ``m <- b1 m + P``; ``W <- W - lr * (P + b1 m)`` (Nesterov) or ``- lr * m``. Tensors are
    cut into blocks of at most ``block_size``.

    References: Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor
    Optimization", 2018; Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order
    Optimization for Deep Learning", 2020. ``pytorch_optimizer.ScalableShampoo`` (a port of
    Google's ``distributed_shampoo``) with its defaults; for runs much shorter than 1000
    steps lower ``preconditioning_compute_steps``. Search space [ours]: ``lr`` LU(1e-4, 1),
    ``beta1`` LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999).
    """

    kind: Literal["shampoo"]
    lr: PositiveFloat = 1e-3
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    weight_decay: NonNegativeFloat = 0.0
    nesterov: bool = True
    graft: Literal["none", "sgd", "adagrad", "rmsprop", "sqrt_n"] = Field(
        "sgd", description="Optimizer whose update norm each layer's step takes.")
    block_size: PositiveInt = 512
    start_preconditioning_step: PositiveInt = 25
    preconditioning_compute_steps: PositiveInt = 1000
    matrix_eps: PositiveFloat = 1e-6
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import ScalableShampoo

        return ScalableShampoo(
            params, lr=self.lr, betas=(self.beta1, self.beta2), weight_decay=self.weight_decay,
            nesterov=self.nesterov, graft_type=_GRAFTS[self.graft], block_size=self.block_size,
            start_preconditioning_step=self.start_preconditioning_step,
            preconditioning_compute_steps=self.preconditioning_compute_steps,
            matrix_eps=self.matrix_eps)
