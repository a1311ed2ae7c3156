"""Optimizers: the ``optimizers`` spec family.

Built-in kinds wrap ``torch.optim`` with the default hyperparameters of the one-shot setting
of "Descending through a Crowded Valley" (Schmidt, Schneider & Hennig, ICML 2021), which
were TensorFlow's defaults. Where PyTorch's update differs from TensorFlow's, the docstring
says how. ``kind: import`` brings a user's own ``torch.optim.Optimizer`` subclass.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator

from obsbench.optimizers.schedules import Constant, ScheduleSpec
from obsbench.space import SearchSpace
from obsbench.spec import (
    Loc,
    NonNegativeFloat,
    OpenProbability,
    PositiveFloat,
    Probability,
    Spec,
    choices,
    suggest,
)

if TYPE_CHECKING:
    import torch



class OptimizerSpecBase(Spec):
    """Every optimizer spec lists its hyperparameters as fields, and where to tune them.

    ``search_space`` gives a dimension per tunable hyperparameter (see
    :mod:`obsbench.space`); a tuning spec samples it. Its default is the optimizer's
    published search space where one exists.
    """

    lr: PositiveFloat
    schedule: ScheduleSpec = Field(default_factory=lambda: Constant(kind="constant"),
                                   description="Learning-rate schedule (default: constant).")
    search_space: SearchSpace = Field(default_factory=dict,
                                      description="Hyperparameter -> dimension to tune over.")

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters and their values (schedule and search space aside)."""
        return self.model_dump(exclude={"kind", "search_space", "schedule"})

    def with_hyperparameters(self, values: dict[str, Any]) -> OptimizerSpecBase:
        """A copy with ``values`` replacing hyperparameters, validated again."""
        return type(self).model_validate({**self.model_dump(by_alias=True), **values})

    def check(self) -> list[tuple[Loc, str, Any]]:
        known = self.hyperparameters()
        return [(("search_space", name), f"'{name}' is not a hyperparameter of this optimizer"
                 f"{choices(name, sorted(known))}", name)
                for name in self.search_space if name not in known]

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        raise NotImplementedError


class SGD(OptimizerSpecBase):
    """Plain SGD: ``theta <- theta - lr * g``."""

    kind: Literal["sgd"]
    lr: PositiveFloat = 1e-2
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)


class Momentum(OptimizerSpecBase):
    """Heavy-ball momentum: ``v <- mu v + g; theta <- theta - lr v``.

    PyTorch's form; TensorFlow's ``MomentumOptimizer`` (used by DeepOBS and Crowded Valley)
    computes the same iterates for a constant learning rate.
    """

    kind: Literal["momentum"]
    lr: PositiveFloat = 1e-2
    momentum: Probability = 0.99
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


class NAG(OptimizerSpecBase):
    """Nesterov momentum (Sutskever et al., 2013), PyTorch's formulation."""

    kind: Literal["nag"]
    lr: PositiveFloat = 1e-2
    momentum: OpenProbability = 0.99
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                               weight_decay=self.weight_decay)


class Adam(OptimizerSpecBase):
    """Adam (Kingma & Ba, 2015).

    PyTorch adds ``eps`` to the bias-corrected root, TensorFlow to the uncorrected one.
    """

    kind: Literal["adam"]
    lr: PositiveFloat = 1e-3
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                eps=self.eps, weight_decay=self.weight_decay)


class AMSGrad(Adam):
    """AMSGrad (Reddi, Kale & Kumar, 2018); Crowded Valley's default learning rate is 1e-2."""

    kind: Literal["amsgrad"]  # type: ignore[assignment]
    lr: PositiveFloat = 1e-2

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                eps=self.eps, weight_decay=self.weight_decay, amsgrad=True)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): decoupled weight decay, PyTorch's default 0.01."""

    kind: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: NonNegativeFloat = 1e-2

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.AdamW(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class NAdam(Adam):
    """NAdam (Dozat, 2016); ``eps`` 1e-7 as TensorFlow's default used by Crowded Valley."""

    kind: Literal["nadam"]  # type: ignore[assignment]
    eps: PositiveFloat = 1e-7

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.NAdam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class RAdam(Adam):
    """RAdam (Liu et al., 2020); ``eps`` 1e-7 as in Crowded Valley."""

    kind: Literal["radam"]  # type: ignore[assignment]
    eps: PositiveFloat = 1e-7

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.RAdam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                 eps=self.eps, weight_decay=self.weight_decay)


class RMSProp(OptimizerSpecBase):
    """RMSProp (Tieleman & Hinton, 2012): ``v <- decay v + (1 - decay) g^2;
    theta <- theta - lr g / (sqrt(v) + eps)``.

    TensorFlow puts ``eps`` inside the root and starts ``v`` at one; PyTorch (used here) puts
    it outside and starts at zero.
    """

    kind: Literal["rmsprop"]
    lr: PositiveFloat = 1e-3
    decay: Probability = 0.9
    momentum: Probability = 0.0
    eps: PositiveFloat = 1e-10
    centered: bool = False
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.decay, eps=self.eps,
                                   momentum=self.momentum, centered=self.centered,
                                   weight_decay=self.weight_decay)


class AdaGrad(OptimizerSpecBase):
    """AdaGrad (Duchi, Hazan & Singer, 2011) with TensorFlow's initial accumulator 0.1."""

    kind: Literal["adagrad"]
    lr: PositiveFloat = 1e-2
    initial_accumulator_value: NonNegativeFloat = 0.1
    eps: PositiveFloat = 1e-10
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adagrad(params, lr=self.lr, eps=self.eps,
                                   initial_accumulator_value=self.initial_accumulator_value,
                                   weight_decay=self.weight_decay)


class AdaDelta(OptimizerSpecBase):
    """AdaDelta (Zeiler, 2012) with TensorFlow's defaults (lr 1e-3, rho 0.95, eps 1e-8)."""

    kind: Literal["adadelta"]
    lr: PositiveFloat = 1e-3
    rho: Probability = 0.95
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adadelta(params, lr=self.lr, rho=self.rho, eps=self.eps,
                                    weight_decay=self.weight_decay)


class Import(OptimizerSpecBase):
    """A user's own optimizer: ``target`` is ``package.module.Class``, a subclass of
    ``torch.optim.Optimizer``; ``lr`` and ``kwargs`` go to its constructor. The arguments
    are checked against the class signature when the spec loads."""

    kind: Literal["import"]
    target: str = Field(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$",
                        description="Dotted path: package.module.Class")
    lr: PositiveFloat = 1e-3
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str) -> str:
        resolve_target(target)
        return target

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, **self.kwargs}

    def with_hyperparameters(self, values: dict[str, Any]) -> OptimizerSpecBase:
        values = dict(values)
        lr = values.pop("lr", self.lr)
        return type(self).model_validate({
            **self.model_dump(by_alias=True), "lr": lr, "kwargs": {**self.kwargs, **values}})

    def check(self) -> list[tuple[Loc, str, Any]]:
        cls = resolve_target(self.target)
        parameters = inspect.signature(cls).parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return []
        names = [n for n in parameters if n not in {"self", "params"}]
        problems: list[tuple[Loc, str, Any]] = []
        if "lr" not in parameters:
            problems.append((("target",), f"{self.target} takes no argument 'lr'", self.target))
        for key, value in self.kwargs.items():
            if key not in parameters or key in {"params", "lr"}:
                allowed = [n for n in names if n != "lr"]
                message = f"{self.target} takes no argument '{key}'{choices(key, allowed)}"
                problems.append((("kwargs", key), message, value))
        for name, p in parameters.items():
            required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            if required and name not in {"self", "params", "lr"} and name not in self.kwargs:
                problems.append((("kwargs",), f"{self.target} requires argument '{name}'",
                                 self.kwargs))
        return problems

    def build(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        optimizer: torch.optim.Optimizer = resolve_target(self.target)(params, lr=self.lr,
                                                                       **self.kwargs)
        return optimizer


def resolve_target(target: str) -> Any:
    """Import ``package.module.Class`` and check it is a ``torch.optim.Optimizer`` class.

    Raises:
        ValueError: with a one-line reason.
    """
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # a user's module failing at import time
        raise ValueError(f"importing '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ValueError(f"module '{module_name}' has no attribute '{attr}'{suggest(attr, public)}")
    cls = getattr(module, attr)
    import torch

    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"'{target}' is not a torch.optim.Optimizer subclass")
    return cls


OptimizerSpec = Annotated[
    SGD | Momentum | NAG | Adam | AdamW | AMSGrad | NAdam | RAdam | RMSProp | AdaGrad
    | AdaDelta | Import,
    Field(discriminator="kind"),
]
