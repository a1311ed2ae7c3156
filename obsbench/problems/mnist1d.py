"""MNIST-1D problems: the data of Greydanus & Kobak and the models of its reference code.

Data: ``mnist1d.data.make_dataset`` with the package's default arguments (5,000 sequences of
length 40, seed 42; 4,000 train and 1,000 test), generated offline and deterministically
(S. Greydanus, D. Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024). Following
DeepOBS 1.2, a validation set is carved out of the training set and "train" metrics are
measured on a train-eval subset of the same size; unlike DeepOBS 1.2, the split uses a fixed
seed (0), so every run seed sees the same validation set. Validation never overlaps test:
they come from disjoint parts of the generated data. The generated data is cached on disk.

Models, as in ``notebooks/models.py`` of github.com/greydanus/mnist1d:

* ``logreg``: ``Linear(40, 10)``.
* ``mlp``: ``h = relu(Linear(40, 100) x); h = h + relu(Linear(100, 100) h); Linear(100, 10) h``.
* ``cnn``: three ``Conv1d`` layers with 25 channels (kernel 5 stride 2 padding 1, then kernel 3
  stride 2 padding 1 twice), ReLU, then ``Linear(125, 10)``.
* ``gru``: a bidirectional ``GRU`` with hidden size 6 over the 40 time steps (zero initial
  state), all outputs flattened into ``Linear(480, 10)``.

Loss: mean softmax cross-entropy, plus the optional DeepOBS-style L2 penalty.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from obsbench.problems.base import Problem, Split, cross_entropy

SPLIT_SEED = 0
VALID_SIZE = 500
TINY = {"train": 256, "valid": 64, "test": 128}


KEYS = ("x", "y", "x_test", "y_test")
CACHE_ENV = "OBSBENCH_CACHE"


def cache_dir() -> Path:
    """``$OBSBENCH_CACHE``, else ``$XDG_CACHE_HOME/obsbench``, else ``~/.cache/obsbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "obsbench"


@functools.cache
def dataset() -> dict[str, np.ndarray]:
    """The default MNIST-1D data set.

    Generating it takes a few seconds, so it is cached in memory per process and on disk
    (:func:`cache_dir`), keyed by the mnist1d version, which fixes the default arguments (the
    package is not even imported on a cache hit: it pulls in scipy and matplotlib); a cache
    file that cannot be read is regenerated.
    """
    version = importlib.metadata.version("mnist1d")
    path = cache_dir() / f"mnist1d-{version}-default.npz"
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in KEYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    data = generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mnist1d-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs time
        pass
    return data


def generate() -> dict[str, np.ndarray]:
    """Generate the data with the mnist1d package's default arguments (seed 42)."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds numpy's global generator and may print: keep both to itself.
    state = np.random.get_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return {key: data[key] for key in KEYS}


class LogReg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(40, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class MLP(nn.Module):
    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.linear1 = nn.Linear(40, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class CNN(nn.Module):
    def __init__(self, channels: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1)  # (batch, 1, 40)
        h = self.conv1(h).relu()  # (batch, C, 19)
        h = self.conv2(h).relu()  # (batch, C, 10)
        h = self.conv3(h).relu()  # (batch, C, 5)
        return self.linear(h.flatten(1))  # (batch, 5C) -> (batch, 10)


class GRU(nn.Module):
    def __init__(self, hidden: int = 6, steps: int = 40) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden * steps, 10)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x.unsqueeze(-1))  # (batch, 40, 1) -> (batch, 40, 2 * hidden)
        return self.linear(out.flatten(1))  # (batch, 40 * 2 * hidden) -> (batch, 10)


MODELS: dict[str, type[nn.Module]] = {"logreg": LogReg, "mlp": MLP, "cnn": CNN, "gru": GRU}


def build(model: str, batch_size: int, num_epochs: int, l2_reg: float, tiny: bool) -> Problem:
    """An MNIST-1D problem; ``tiny`` uses 256 training and 64/64/128 evaluation sequences."""
    data = dataset()
    x = torch.from_numpy(np.float32(data["x"]))
    y = torch.from_numpy(data["y"])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    valid, train = order[:VALID_SIZE], order[VALID_SIZE:]
    x_test = torch.from_numpy(np.float32(data["x_test"]))
    y_test = torch.from_numpy(data["y_test"])
    if tiny:
        train, valid = train[: TINY["train"]], valid[: TINY["valid"]]
        x_test, y_test = x_test[: TINY["test"]], y_test[: TINY["test"]]
    train_eval = train[: len(valid)]
    return Problem(
        model=MODELS[model](),
        train=Split(x[train], y[train]),
        splits={
            "train_eval": Split(x[train_eval], y[train_eval]),
            "valid": Split(x[valid], y[valid]),
            "test": Split(x_test, y_test),
        },
        batch_size=batch_size,
        num_epochs=num_epochs,
        per_example_loss=cross_entropy,
        classification=True,
        l2_reg=l2_reg,
    )
