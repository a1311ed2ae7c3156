"""The runtime side of a test problem: model, data splits, loss and regulariser.

Every problem is small enough to hold its data in memory as tensors, so the runner batches
by indexing (no DataLoader, no worker processes, no hidden randomness).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

SPLITS = ("train_eval", "valid", "test")
"""The evaluation splits, in the order they are evaluated and tabulated."""


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split; ``y`` is None where the problem has no targets."""

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device), None if self.y is None else self.y.to(device))

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inputs and targets at ``index`` (``index_select`` gathers faster than ``x[index]``)."""
        y = None if self.y is None else self.y.index_select(0, index)
        return self.x.index_select(0, index), y

    def slice(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        return self.x[start:stop], None if self.y is None else self.y[start:stop]


Loss = Callable[[Tensor, Tensor | None], Tensor]
"""``(outputs, targets) -> per-example losses`` of shape ``(batch,)``."""


def identity_loss(outputs: Tensor, targets: Tensor | None) -> Tensor:
    """Per-example loss of problems whose model already returns per-example losses."""
    return outputs


def cross_entropy(outputs: Tensor, targets: Tensor | None) -> Tensor:
    """Per-example softmax cross-entropy."""
    assert targets is not None
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


@dataclass
class Problem:
    """A built test problem, ready for the runner.

    Attributes:
        model: the trainable module; ``model(x)`` gives the outputs fed to ``per_example_loss``.
        train: the training split (shuffled by the runner every epoch).
        splits: evaluation splits ``train_eval``, ``valid``, ``test``.
        batch_size: training and evaluation batch size.
        num_epochs: number of training epochs.
        per_example_loss: ``(outputs, targets) -> losses`` of shape ``(batch,)``.
        classification: whether accuracy is a metric of this problem.
        l2_reg: DeepOBS-style L2 factor; the penalty ``0.5 * l2_reg * ||w||^2`` covers weights
            (parameters with more than one dimension), not biases, and is part of the
            training objective and of every reported loss, as in DeepOBS.
    """

    model: nn.Module
    train: Split
    splits: dict[str, Split]
    batch_size: int
    num_epochs: int
    per_example_loss: Loss = identity_loss
    classification: bool = False
    l2_reg: float = 0.0
    _weights: list[Tensor] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._weights = [p for p in self.model.parameters() if p.dim() > 1]

    def regularizer(self) -> Tensor | None:
        """The L2 penalty, or None for problems without one."""
        if self.l2_reg == 0.0 or not self._weights:
            return None
        return 0.5 * self.l2_reg * sum(w.pow(2).sum() for w in self._weights)  # type: ignore[return-value]

    def to(self, device: torch.device) -> Problem:
        """Move model and data to ``device`` (in place for the model)."""
        self.model.to(device)
        self.train = self.train.to(device)
        self.splits = {name: split.to(device) for name, split in self.splits.items()}
        self.__post_init__()
        return self
