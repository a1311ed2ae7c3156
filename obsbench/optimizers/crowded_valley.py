"""The optimizers of "Descending through a Crowded Valley" (Schmidt, Schneider & Hennig).

Defaults are the study's one-shot setting (TensorFlow's defaults, read from the published
run folders, ``SirRob1997/Crowded-Valley---Results``); each class's default ``search_space`` is
the study's random-search space.

**Two versions of the paper.** arXiv v1 (2020, also the ICLR 2021 submission: "more than a
dozen" optimizers, "almost 35,000" runs) benchmarks the 14 kinds of
:data:`CROWDED_VALLEY_ARXIV_V1`; the ICML 2021 version ("fifteen" optimizers, "more than
50,000" runs) adds AdaBelief: :data:`CROWDED_VALLEY_ICML_2021`. Evidence: the results
repository's ``results/`` folder (runs dated 2019-11 to 2020-05) holds tuning runs of the 14;
its ``results_main/`` folder adds ``AdaBeliefOptimizer`` runs dated 2021-01, and public
analysis code that reads ``results_main`` lists exactly the 15. The paper's own optimizer
table could not be read, so the v1 list is [inferred] from these folders (it fits v1's run
count: 14 x 8 problems x 4 schedules x 78 runs = 34,944). ND-Adam (:class:`NDAdam`) has one-shot
runs in ``results/`` but no tuning runs, and is in neither list; it is shipped for comparison
with those runs.

**Search spaces: confirmed.** The study's random search (DeepOBS 1.2's tuner) seeded numpy's
legacy ``RandomState(42)`` once and drew one trial after another, each trial's
hyperparameters in the order of the ``search_space`` dicts below: a log-uniform dimension as
``10 ** uniform(log10 low, log10 high)`` (one ``random_sample`` each), the Lookahead ``k``
as ``randint(1, 20)``, i.e. 1 to 19. Regenerating that stream reproduces the published
hyperparameter samples (learning rate, momentum, decay, rho, betas, final_lr, gamma, k and
alpha; ``tests/test_optimizers.py`` checks samples of all 15 optimizers). The betas' bounds were
written as exponents (``10 ** -0.301`` = 0.50003, ``10 ** -0.0969`` = 0.80002,
``10 ** -0.00043`` = 0.99901); here they are 0.5, 0.8 and 0.999. What was not tuned stays at
its default (``eps``, RMSProp's momentum, AdaGrad's initial accumulator). Exceptions:
ND-Adam was never tuned (its space here is Adam's, [inferred]), and part of the published
AdaBelief samples (runs of 2021-01-29) are not draws of this stream.

**PyTorch vs TensorFlow.** The study ran DeepOBS 1.2.0-beta's TensorFlow runner. Each class
says where its PyTorch update differs from TensorFlow's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from obsbench.optimizers.base import OptimizerSpecBase, int_uniform, log_uniform, space
from obsbench.space import SearchSpace
from obsbench.spec import (
    NonNegativeFloat,
    OpenProbability,
    PositiveFloat,
    PositiveInt,
    Probability,
)

if TYPE_CHECKING:
    import torch

# The study's dimensions (see the module docstring for how they were confirmed).
LR = log_uniform(1e-4, 1.0)
MOMENTUM = log_uniform(1e-3, 1.0)
"""Momentum, RMSProp's decay and AdaDelta's rho: mostly far below the default 0.9."""
BETA1 = log_uniform(0.5, 0.999)
BETA2 = log_uniform(0.8, 0.999)
FINAL_LR = log_uniform(1e-3, 0.5)
GAMMA = log_uniform(1e-4, 0.1)
LOOKAHEAD_K = int_uniform(1, 19)
LOOKAHEAD_ALPHA = log_uniform(1e-4, 1.0)


class SGD(OptimizerSpecBase):
    """Stochastic gradient descent: ``theta <- theta - lr * g``.

    Reference: Robbins & Monro, "A Stochastic Approximation Method", 1951. TensorFlow's
    ``GradientDescentOptimizer`` is the same update. Search space: ``lr`` LU(1e-4, 1).
    """

    kind: Literal["sgd"]
    lr: PositiveFloat = 1e-2
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)


class Momentum(OptimizerSpecBase):
    """Heavy-ball momentum: ``v <- mu * v + g; theta <- theta - lr * v``.

    Reference: Polyak, "Some methods of speeding up the convergence of iteration methods",
    1964. TensorFlow's ``MomentumOptimizer`` (``accum <- mu * accum + g; theta <- theta - lr
    * accum``) gives the same iterates, with a schedule too. Search space: ``lr``
    LU(1e-4, 1), ``momentum`` LU(1e-3, 1).
    """

    kind: Literal["momentum"]
    lr: PositiveFloat = 1e-2
    momentum: Probability = 0.99
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, momentum=MOMENTUM)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


class NAG(OptimizerSpecBase):
    """Nesterov momentum: ``v <- mu * v + g; theta <- theta - lr * (g + mu * v)``.

    References: Nesterov, "A method for solving the convex programming problem with
    convergence rate O(1/k^2)", 1983; Sutskever, Martens, Dahl & Hinton, "On the importance
    of initialization and momentum in deep learning", 2013. TensorFlow's
    ``MomentumOptimizer(use_nesterov=True)`` is the same update. Search space as
    :class:`Momentum`.
    """

    kind: Literal["nag"]
    lr: PositiveFloat = 1e-2
    momentum: OpenProbability = 0.99
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, momentum=MOMENTUM)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                               weight_decay=self.weight_decay)


class RMSProp(OptimizerSpecBase):
    """RMSProp: ``v <- decay * v + (1 - decay) * g^2; theta <- theta - lr * g / (sqrt(v) +
    eps)`` (with ``momentum`` > 0 the step goes through a momentum buffer).

    Reference: Tieleman & Hinton, "Lecture 6.5, RMSProp", Coursera: Neural Networks for
    Machine Learning, 2012. TensorFlow puts ``eps`` inside the root and starts ``v`` at one;
    PyTorch (used here) puts it outside and starts at zero. Search space: ``lr``
    LU(1e-4, 1), ``decay`` LU(1e-3, 1); momentum, eps and centered stay fixed.
    """

    kind: Literal["rmsprop"]
    lr: PositiveFloat = 1e-3
    decay: Probability = 0.9
    momentum: Probability = 0.0
    eps: PositiveFloat = 1e-10
    centered: bool = False
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, decay=MOMENTUM)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.decay, eps=self.eps,
                                   momentum=self.momentum, centered=self.centered,
                                   weight_decay=self.weight_decay)


class AdaGrad(OptimizerSpecBase):
    """AdaGrad: ``s <- s + g^2; theta <- theta - lr * g / (sqrt(s) + eps)``, ``s`` starting
    at ``initial_accumulator_value``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", 2011. TensorFlow's ``AdagradOptimizer`` has no ``eps``
    (``g / sqrt(s)``); its initial accumulator 0.1 is kept. Search space: ``lr`` LU(1e-4, 1).
    """

    kind: Literal["adagrad"]
    lr: PositiveFloat = 1e-2
    initial_accumulator_value: NonNegativeFloat = 0.1
    eps: PositiveFloat = 1e-10
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adagrad(params, lr=self.lr, eps=self.eps,
                                   initial_accumulator_value=self.initial_accumulator_value,
                                   weight_decay=self.weight_decay)


class AdaDelta(OptimizerSpecBase):
    """AdaDelta: ``s <- rho * s + (1 - rho) * g^2; d = sqrt(u + eps) / sqrt(s + eps) * g;
    u <- rho * u + (1 - rho) * d^2; theta <- theta - lr * d``.

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012 (which has no
    ``lr``, i.e. 1). TensorFlow and PyTorch compute the same update; TensorFlow's defaults
    (lr 1e-3, rho 0.95, eps 1e-8) are kept. Search space: ``lr`` LU(1e-4, 1), ``rho``
    LU(1e-3, 1).
    """

    kind: Literal["adadelta"]
    lr: PositiveFloat = 1e-3
    rho: Probability = 0.95
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, rho=MOMENTUM)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adadelta(params, lr=self.lr, rho=self.rho, eps=self.eps,
                                    weight_decay=self.weight_decay)


class _AdamLike(OptimizerSpecBase):
    """Hyperparameters of Adam and its variants; search space ``lr`` LU(1e-4, 1), ``beta1``
    LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999)."""

    lr: PositiveFloat = 1e-3
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2)


class Adam(_AdamLike):
    """Adam: ``m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; theta <- theta - lr *
    m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 -
    b2^t)``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2015. PyTorch adds
    ``eps`` to the bias-corrected root, TensorFlow to the uncorrected one (its effective
    ``eps`` is ``eps / sqrt(1 - b2^t)`` here). Search space as :class:`_AdamLike`.
    """

    kind: Literal["adam"]

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                eps=self.eps, weight_decay=self.weight_decay)


class AMSGrad(_AdamLike):
    """AMSGrad: Adam with ``v_max <- max(v_max, v)`` in place of ``v`` in the denominator.

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", 2018. The paper
    has no bias correction; PyTorch corrects ``m`` and divides ``sqrt(v_max)`` by ``sqrt(1 -
    b2^t)``, TensorFlow ports differ in the same way as for Adam. Crowded Valley's default
    learning rate is 1e-2. Search space as :class:`_AdamLike`.
    """

    kind: Literal["amsgrad"]
    lr: PositiveFloat = 1e-2

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                eps=self.eps, weight_decay=self.weight_decay, amsgrad=True)


class NAdam(_AdamLike):
    """NAdam: Adam with a Nesterov step, ``theta <- theta - lr * (mu_{t+1} m / (1 -
    prod_{i<=t+1} mu_i) + (1 - mu_t) g / (1 - prod_{i<=t} mu_i)) / (sqrt(v_hat) + eps)``,
    ``mu_t = b1 (1 - 0.5 * 0.96^(0.004 t))``.

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", 2016. PyTorch (used here)
    keeps the paper's momentum schedule ``mu_t``; TensorFlow 1's ``NadamOptimizer``, which
    Crowded Valley ran, uses a constant ``mu = b1``: ``theta <- theta - lr_t (b1 m + (1 -
    b1) g) / (sqrt(v) + eps)``. ``eps`` 1e-7 as TensorFlow's default. Search space as
    :class:`_AdamLike`.
    """

    kind: Literal["nadam"]
    eps: PositiveFloat = 1e-7

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.NAdam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class RAdam(_AdamLike):
    """RAdam: Adam whose adaptive step is rectified, ``theta <- theta - lr * r_t * m_hat /
    (sqrt(v_hat) + eps)`` with ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf -
    4)(rho_inf - 2) rho_t))``, ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``, ``rho_inf = 2 / (1
    - b2) - 1``; while ``rho_t <= 5`` the step is ``lr * m_hat`` (momentum SGD).

    Reference: Liu, Jiang, He, Chen, Liu, Gao & Han, "On the Variance of the Adaptive
    Learning Rate and Beyond", 2020. Implementations differ in the threshold on ``rho_t``
    (4 or 5) and in where ``eps`` goes; Crowded Valley's TensorFlow port is not public.
    ``eps`` 1e-7 as in Crowded Valley. Search space as :class:`_AdamLike`.
    """

    kind: Literal["radam"]
    eps: PositiveFloat = 1e-7

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.RAdam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class _AdaBoundBase(_AdamLike):
    """Hyperparameters of AdaBound and AMSBound; search space ``lr`` LU(1e-4, 1),
    ``final_lr`` LU(1e-3, 0.5), ``beta1`` LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999),
    ``gamma`` LU(1e-4, 0.1)."""

    final_lr: PositiveFloat = 0.1
    gamma: PositiveFloat = 1e-3
    search_space: SearchSpace = space(lr=LR, final_lr=FINAL_LR, beta1=BETA1, beta2=BETA2,
                                      gamma=GAMMA)

    def _build(self, params: Iterable[Any], ams_bound: bool) -> torch.optim.Optimizer:
        from pytorch_optimizer import AdaBound as Library

        # weight_decouple=False: the paper's (and TensorFlow's) L2 penalty on the gradient
        return Library(params, lr=self.lr, final_lr=self.final_lr,
                       betas=(self.beta1, self.beta2), gamma=self.gamma, eps=self.eps,
                       weight_decay=self.weight_decay, weight_decouple=False,
                       ams_bound=ams_bound)


class AdaBound(_AdaBoundBase):
    """AdaBound: Adam whose per-coordinate step is clipped into bounds that converge to
    ``final_lr``: ``eta = clip(lr * sqrt(1 - b2^t) / ((1 - b1^t)(sqrt(v) + eps)), l_t, u_t);
    theta <- theta - eta * m`` with ``l_t = final_lr (1 - 1 / (gamma t + 1))`` and ``u_t =
    final_lr (1 + 1 / (gamma t))``.

    Reference: Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of
    Learning Rate", 2019. Built with ``pytorch_optimizer.AdaBound``, which, like the
    authors' PyTorch code, scales ``final_lr`` by ``lr / initial lr`` so that a schedule
    moves the bounds too; a TensorFlow port keeps ``final_lr`` fixed. Search space as
    :class:`_AdaBoundBase`.
    """

    kind: Literal["adabound"]

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        return self._build(params, ams_bound=False)


class AMSBound(_AdaBoundBase):
    """AMSBound: :class:`AdaBound` with AMSGrad's ``v_max <- max(v_max, v)`` in place of
    ``v``.

    Reference: Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of
    Learning Rate", 2019. Same implementation notes and search space as :class:`AdaBound`.
    """

    kind: Literal["amsbound"]

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        return self._build(params, ams_bound=True)


class _Lookahead(OptimizerSpecBase):
    """Lookahead's own hyperparameters: ``k`` fast steps per slow step, slow step ``alpha``."""

    k: PositiveInt = 5
    alpha: OpenProbability = 0.5

    def _wrap(self, inner: torch.optim.Optimizer) -> torch.optim.Optimizer:
        from pytorch_optimizer import Lookahead

        return Lookahead(inner, k=self.k, alpha=self.alpha)


class LookaheadMomentum(_Lookahead):
    """Lookahead around heavy-ball momentum: ``k`` steps of :class:`Momentum` on the fast
    weights ``theta``, then ``phi <- phi + alpha * (theta - phi); theta <- phi``.

    Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
    back", 2019. Built with ``pytorch_optimizer.Lookahead`` around ``torch.optim.SGD``; the
    momentum buffer is kept across slow steps and the model is evaluated at the fast weights,
    as in the TensorFlow version. Search space: ``lr`` LU(1e-4, 1), ``momentum`` LU(1e-3,
    1), ``k`` 1 to 19, ``alpha`` LU(1e-4, 1).
    """

    kind: Literal["lookahead_momentum"]
    lr: PositiveFloat = 1e-2
    momentum: Probability = 0.99
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, momentum=MOMENTUM, k=LOOKAHEAD_K,
                                      alpha=LOOKAHEAD_ALPHA)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return self._wrap(torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                          weight_decay=self.weight_decay))


class LookaheadRAdam(_Lookahead):
    """Lookahead around RAdam: ``k`` steps of :class:`RAdam` on the fast weights, then
    ``phi <- phi + alpha * (theta - phi); theta <- phi``.

    Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
    back", 2019. Built with ``pytorch_optimizer.Lookahead`` around ``torch.optim.RAdam``
    (see :class:`RAdam` for how that differs from TensorFlow's). Search space: ``lr``
    LU(1e-4, 1), ``beta1`` LU(0.5, 0.999), ``beta2`` LU(0.8, 0.999), ``k`` 1 to 19, ``alpha``
    LU(1e-4, 1).
    """

    kind: Literal["lookahead_radam"]
    lr: PositiveFloat = 1e-3
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    eps: PositiveFloat = 1e-7
    weight_decay: NonNegativeFloat = 0.0
    search_space: SearchSpace = space(lr=LR, beta1=BETA1, beta2=BETA2, k=LOOKAHEAD_K,
                                      alpha=LOOKAHEAD_ALPHA)

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return self._wrap(torch.optim.RAdam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                            eps=self.eps, weight_decay=self.weight_decay))


class AdaBelief(_AdamLike):
    """AdaBelief (ICML version of Crowded Valley only): Adam with the belief ``s`` in place of
    ``v``: ``s <- b2 s + (1 - b2)(g - m)^2 + eps; theta <- theta - lr * m_hat / (sqrt(s_hat)
    + eps)``.

    Reference: Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan, "AdaBelief
    Optimizer: Adapting Stepsizes by the Belief in Observed Gradients", 2020. Built with
    ``pytorch_optimizer.AdaBelief`` (the authors' PyTorch update; weight decay decoupled, as
    theirs). ``eps`` 1e-14 is Crowded Valley's default (the authors' TensorFlow default;
    their PyTorch default is 1e-16). The published runs name no ``rectify`` setting; the
    default here is the paper's unrectified algorithm [inferred]. Search space as
    :class:`_AdamLike`, confirmed for the runs of 2021-01-25/26 (those of 2021-01-29 are
    not draws of the study's stream).
    """

    kind: Literal["adabelief"]
    eps: PositiveFloat = 1e-14
    rectify: bool = False

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import AdaBelief as Library

        return Library(params, lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps,
                       weight_decay=self.weight_decay, weight_decouple=True,
                       rectify=self.rectify)


class NDAdam(_AdamLike):
    """ND-Adam (not in either paper version; one-shot runs only): Adam that keeps each
    unit's incoming weight vector ``w`` on the unit sphere and adapts one step size per
    vector. For each vector: ``g <- g - (g . w) w``; ``m <- b1 m + (1 - b1) g``; ``v <- b2 v
    + (1 - b2) ||g||^2``; ``w <- w - lr_v * m_hat / (sqrt(v_hat) + eps)``; ``w <- w /
    ||w||``, with ``lr_v = vector_lr_ratio * lr``. Other parameters get Adam with ``lr``.

    Reference: Zhang, Ma, Li & Wu, "Normalized Direction-preserving Adam", 2017
    (arXiv:1709.04546). Hand-written (:class:`obsbench.optimizers.ndadam.NDAdamOptimizer`;
    no maintained PyTorch implementation exists). ``unit_norm: rows`` treats every parameter
    with two or more dimensions as vectors along dim 0 (Linear ``(out, in)``, conv ``(out,
    in, h, w)``) and normalises them at the first step, as the paper initialises them;
    ``none`` gives Adam. The TensorFlow ND-Adam of the study's era takes the vector set as an
    argument (``vec_axes``, empty by default, which is Adam) and a learning-rate pair whose
    default is ``(lr, 50 lr)``; which variables Crowded Valley passed is not recorded.
    Search space: Adam's [inferred], since the study never tuned ND-Adam.
    """

    kind: Literal["ndadam"]
    vector_lr_ratio: PositiveFloat = Field(
        50.0, description="Step size of the unit weight vectors, as a multiple of lr.")
    unit_norm: Literal["rows", "none"] = Field(
        "rows", description="rows: parameters with 2+ dims are unit vectors along dim 0.")

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        from obsbench.optimizers.ndadam import NDAdamOptimizer

        return NDAdamOptimizer(params, lr=self.lr, betas=(self.beta1, self.beta2),
                               eps=self.eps, weight_decay=self.weight_decay,
                               vector_lr_ratio=self.vector_lr_ratio, unit_norm=self.unit_norm)


CROWDED_VALLEY_ARXIV_V1 = (
    "sgd", "momentum", "nag", "rmsprop", "adagrad", "adadelta", "adam", "amsgrad", "nadam",
    "radam", "adabound", "amsbound", "lookahead_momentum", "lookahead_radam",
)
"""The 14 optimizers of arXiv:2007.01547v1 (2020)."""

CROWDED_VALLEY_ICML_2021 = (*CROWDED_VALLEY_ARXIV_V1, "adabelief")
"""The 15 optimizers of the ICML 2021 version: v1's and AdaBelief."""
