"""Optimizers: the ``optimizers`` spec family.

* :mod:`obsbench.optimizers.crowded_valley`: the optimizers of "Descending through a Crowded
  Valley" (Schmidt, Schneider & Hennig, arXiv v1 2020 and ICML 2021) with the study's
  one-shot defaults and random-search spaces, and ND-Adam;
* :mod:`obsbench.optimizers.modern`: AdamW, Lion, schedule-free AdamW and SGD, Muon, SOAP
  and Shampoo, from maintained libraries;
* ``kind: import`` (:class:`Import`): a user's own ``torch.optim.Optimizer`` subclass.

Each spec's ``build(params)`` returns the ``torch.optim.Optimizer``; its ``search_space``
defaults to where the optimizer is tuned. The union below is the registry. Nothing here
imports torch or an optimizer library until ``build`` runs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from obsbench.optimizers.base import Import, OptimizerSpecBase, resolve_target
from obsbench.optimizers.crowded_valley import (
    CROWDED_VALLEY_ARXIV_V1,
    CROWDED_VALLEY_ICML_2021,
    NAG,
    SGD,
    AdaBelief,
    AdaBound,
    AdaDelta,
    AdaGrad,
    Adam,
    AMSBound,
    AMSGrad,
    LookaheadMomentum,
    LookaheadRAdam,
    Momentum,
    NAdam,
    NDAdam,
    RAdam,
    RMSProp,
)
from obsbench.optimizers.modern import (
    SOAP,
    AdamW,
    Lion,
    Muon,
    ScheduleFreeAdamW,
    ScheduleFreeSGD,
    Shampoo,
)

OptimizerSpec = Annotated[
    SGD | Momentum | NAG | RMSProp | AdaGrad | AdaDelta | Adam | AMSGrad | NAdam | RAdam
    | AdaBound | AMSBound | LookaheadMomentum | LookaheadRAdam | AdaBelief | NDAdam
    | AdamW | Lion | ScheduleFreeAdamW | ScheduleFreeSGD | Muon | SOAP | Shampoo | Import,
    Field(discriminator="kind"),
]

__all__ = [
    "CROWDED_VALLEY_ARXIV_V1", "CROWDED_VALLEY_ICML_2021", "NAG", "SGD", "SOAP", "AMSBound",
    "AMSGrad", "AdaBelief", "AdaBound", "AdaDelta", "AdaGrad", "Adam", "AdamW", "Import",
    "Lion", "LookaheadMomentum", "LookaheadRAdam", "Momentum", "Muon", "NAdam", "NDAdam",
    "OptimizerSpec", "OptimizerSpecBase", "RAdam", "RMSProp", "ScheduleFreeAdamW",
    "ScheduleFreeSGD", "Shampoo", "resolve_target",
]
