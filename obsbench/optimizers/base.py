"""What every optimizer spec shares: the base class, search-space helpers, ``kind: import``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from obsbench.optimizers.schedules import Constant, ScheduleSpec
from obsbench.space import IntUniform, LogUniform, SearchSpace
from obsbench.spec import Loc, PositiveFloat, Spec, choices, suggest

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


def log_uniform(low: float, high: float) -> LogUniform:
    return LogUniform(kind="log_uniform", low=low, high=high)


def int_uniform(low: int, high: int) -> IntUniform:
    return IntUniform(kind="int_uniform", low=low, high=high)


def space(**dimensions: LogUniform | IntUniform) -> Any:
    """A ``default_factory`` for ``search_space``; keyword order is the sampling order."""
    return Field(default_factory=lambda: dict(dimensions),
                 description="Hyperparameter -> dimension to tune over.")


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
