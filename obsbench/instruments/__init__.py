"""Instruments: the ``instruments`` spec family (Cockpit-style quantities during training).

This first version has two first-order quantities; each is measured at the steps its
schedule names (``every`` N steps, starting at step 0) and never changes parameters,
gradients or optimizer state.

* ``grad_norm``: Euclidean norm of the mini-batch gradient, per parameter tensor and in
  total, ``||g||_2`` (Cockpit's ``GradNorm``; Schneider, Dangel & Hennig, NeurIPS 2021).
* ``distance``: Euclidean distance of the parameters from their initial values,
  ``||theta_t - theta_0||_2``, per parameter tensor and in total (Cockpit's ``Distance``),
  measured before the update of step t.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from obsbench.spec import PositiveInt, Spec

if TYPE_CHECKING:
    from torch import Tensor, nn

TOTAL = "total"
"""The ``layer`` name of a network-wide value."""


class InstrumentSpecBase(Spec):
    every: PositiveInt = Field(1, description="Measure at every N-th training step.")

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def measure(self, model: nn.Module, initial: dict[str, Tensor]) -> list[tuple[str, float]]:
        """``(layer, value)`` pairs at the current step; called after ``backward``."""
        raise NotImplementedError


def _norms(tensors: dict[str, Tensor]) -> list[tuple[str, float]]:
    import torch

    norms = {name: torch.linalg.vector_norm(t.detach()) for name, t in tensors.items()}
    total = torch.linalg.vector_norm(torch.stack(list(norms.values()))) if norms else None
    out = [(name, float(n)) for name, n in norms.items()]
    if total is not None:
        out.append((TOTAL, float(total)))
    return out


class GradNorm(InstrumentSpecBase):
    """Gradient norm per parameter tensor and in total."""

    kind: Literal["grad_norm"]

    def measure(self, model: nn.Module, initial: dict[str, Tensor]) -> list[tuple[str, float]]:
        return _norms({n: p.grad for n, p in model.named_parameters() if p.grad is not None})


class Distance(InstrumentSpecBase):
    """Distance of the parameters from their initial values."""

    kind: Literal["distance"]

    def measure(self, model: nn.Module, initial: dict[str, Tensor]) -> list[tuple[str, float]]:
        return _norms({n: p.detach() - initial[n] for n, p in model.named_parameters()})


InstrumentSpec = Annotated[GradNorm | Distance, Field(discriminator="kind")]
