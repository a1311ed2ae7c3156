"""DeepOBS 1.1 and DeepOBS 1.2 / Crowded Valley run files.

Both formats are one JSON file per run, ``random_seed__<seed>__<timestamp>.json``, in a
folder per setting, written by Python's ``json``: non-finite values are the bare tokens
``NaN``, ``Infinity`` and ``-Infinity``, which Python's ``json`` reads as floats.

DeepOBS 1.1 (TensorFlow; the published baselines, ``fsschneider/DeepOBS_Baselines``)::

    <problem>/<OptimizerClass>/<setting>/random_seed__<s>__<time>.json

with the keys ``optimizer, testproblem, weight_decay, batch_size, num_epochs,
learning_rate, hyperparams, lr_sched_epochs, lr_sched_factors, random_seed,
train_log_interval, train_losses, test_losses`` and, where present, ``train_accuracies,
test_accuracies, minibatch_train_losses``. There is no validation split.

DeepOBS 1.2 (TensorFlow and PyTorch runners; the Crowded Valley results,
``SirRob1997/Crowded-Valley---Results``, were made with the TensorFlow runner)::

    [<budget>/<schedule>/]<problem>/<OptimizerFolder>/<setting>/random_seed__<s>__<time>.json

with the keys ``testproblem, batch_size, num_epochs, random_seed, l2_reg`` (``weight_decay``
in PyTorch and in early Crowded Valley runs), ``optimizer_name, optimizer_hyperparams,
training_params, {train,valid,test}_{losses,accuracies}, minibatch_train_losses``.

What the importer does about the formats:

* Every per-epoch list must have ``num_epochs + 1`` values, index 0 before training. A file
  that is not JSON, lacks a key or breaks this is rejected with a one-line reason.
  ``train_*`` (DeepOBS's train-eval set) becomes split ``train``, ``valid_*`` ``valid``,
  ``test_*`` ``test``; ``*_losses`` metric ``loss``, ``*_accuracies`` ``accuracy``.
* A run with a non-finite value anywhere (per-epoch or minibatch) is ``diverged``. DeepOBS
  1.2 aborts such a run and repeats the epoch-0 values for the remaining epochs; those
  values are imported as written (nothing is lost) and the note says where the filler
  starts.
* The 1.2 TensorFlow runner appends every logged minibatch loss twice, and an aborted run's
  list ends with one copy of the first loss per skipped epoch. Where a 1.2 list shows exactly
  this pattern, each logged loss is kept once and the filler is dropped; otherwise the list
  is kept as written. DeepOBS 1.1 lists are never doubled (``train_log_interval`` 1: one loss
  per step) and are kept as written.
* ``l2_reg: null`` (``weight_decay: null``) means the problem's default: ``l2_reg`` None.
* Optimizer classes map to obsbench's names (:data:`OPTIMIZERS`; the ``use_nesterov`` and
  ``amsbound`` flags, and PyTorch's ``momentum``, ``nesterov`` and ``amsgrad``, choose the
  variant); hyperparameter names map to obsbench's (:data:`HYPERPARAMETERS`); flags that
  only choose the variant or the TensorFlow implementation (:data:`FLAGS`) are dropped.
  The published class, names and values are kept as ``optimizer_raw`` and
  ``hyperparameters_raw``.
* ``quadratic_deep`` and the ``two_d_*`` problems start deterministically, so the epoch-0
  test loss is checked (``checked``); a run that started elsewhere is ``consistent=False``
  with a note (some DeepOBS 1.2 runs regenerated quadratic_deep's Hessian per run). Other
  problems are unchecked: ``checked=False``, ``consistent=True``.
* ``selected`` marks the setting a tuning chose: DeepOBS and Crowded Valley tune with seed 42
  and re-run the chosen setting with seeds 43-51, so a setting folder holding another seed
  is a chosen one, as is every one-shot (``oneshot`` budget) run.
* The runs of one setting folder get one set of hyperparameters: DeepOBS 1.1's re-runs
  record the learning rate rounded to 11 digits, the tuning run its exact grid value
  (:func:`group_settings`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obsbench.importers import ImportedRun, RunFileError, imported_run_id

V11 = "deepobs-1.1"
V12 = "deepobs-1.2"
RUN_FILE = "random_seed__*.json"
"""Name pattern of a run file in both formats (other JSON files in a results tree are not runs)."""

OPTIMIZERS = {
    # TensorFlow classes of DeepOBS and Crowded Valley (file key or optimizer folder)
    "GradientDescentOptimizer": "sgd",
    "MomentumOptimizer": "momentum",
    "NAGOptimizer": "nag",
    "AdamOptimizer": "adam",
    "RMSPropOptimizer": "rmsprop",
    "AdagradOptimizer": "adagrad",
    "AdadeltaOptimizer": "adadelta",
    "AMSGrad": "amsgrad",
    "AMSGradOptimizer": "amsgrad",
    "NadamOptimizer": "nadam",
    "NDAdamOptimizer": "ndadam",
    "RAdamOptimizer": "radam",
    "AdaBoundOptimizer": "adabound",
    "AMSBoundOptimizer": "amsbound",
    "LookaheadOptimizerMBGDMomentum": "lookahead_momentum",
    "LookaheadOptimizerRAdam": "lookahead_radam",
    # torch.optim classes of the DeepOBS 1.2 PyTorch runner
    "SGD": "sgd",
    "Adam": "adam",
    "AdamW": "adamw",
    "RMSprop": "rmsprop",
    "Adagrad": "adagrad",
    "Adadelta": "adadelta",
    "NAdam": "nadam",
    "RAdam": "radam",
}
"""Published optimizer class -> obsbench's optimizer name (before the variant flags)."""

HYPERPARAMETERS = {"learning_rate": "lr", "epsilon": "eps", "beta_1": "beta1",
                   "beta_2": "beta2"}
"""Published hyperparameter name -> obsbench's; other names are obsbench's already
(``beta1, beta2, momentum, decay, rho, initial_accumulator_value, centered, final_lr, gamma,
alpha, k``). PyTorch's ``betas`` pair becomes ``beta1, beta2`` and RMSprop's ``alpha``
becomes ``decay``."""

FLAGS = frozenset({"use_locking", "use_nesterov", "nesterov", "amsbound", "amsgrad", "name"})
"""Published hyperparameters that only choose the optimizer variant or TensorFlow's
implementation: kept in ``hyperparameters_raw`` only."""

QUADRATIC_DEEP_INITIAL_TEST_LOSS = 353.4468
"""quadratic_deep's test loss at theta_0 (4 decimals), as obsbench evaluates it (see
:mod:`obsbench.problems.quadratic`) and as DeepOBS 1.1 and most Crowded Valley runs report."""

TUNING_SEED = 42
"""The seed of DeepOBS's and Crowded Valley's tuning runs; other seeds are re-runs."""

_BUDGET = re.compile(r"^(oneshot|\w+_budget)$")
_SPLITS = ("train", "valid", "test")
_METRICS = {"losses": "loss", "accuracies": "accuracy"}


@dataclass
class ImportResult:
    """The runs read from a folder and the files that could not be read."""

    runs: list[ImportedRun] = field(default_factory=list)
    skipped: list[RunFileError] = field(default_factory=list)


def run_files(root: Path) -> list[Path]:
    """The run files under ``root`` (``random_seed__*.json``, any depth), sorted."""
    return sorted(p for p in root.rglob(RUN_FILE) if p.is_file())


def import_deepobs(root: Path, *, files: list[Path] | None = None, suite: str | None = None,
                   keep_minibatch: bool = False, on_file: Callable[[Path], None] | None = None
                   ) -> ImportResult:
    """Read every run file under ``root``; a file that cannot be read is skipped, not fatal.

    Args:
        root: the folder to import (a DeepOBS output folder, the baselines repository, or
            Crowded Valley's ``results`` folder or any folder inside it).
        files: the run files to read (default: :func:`run_files` of ``root``).
        suite: value of the ``suite`` column (default: the name of ``root``).
        keep_minibatch: keep the logged minibatch losses (memory: large for image problems).
        on_file: called after each file, e.g. to advance a progress bar.
    """
    suite = suite or root.resolve().name
    result = ImportResult()
    for path in run_files(root) if files is None else files:
        try:
            result.runs.append(read_run_file(path, root, suite=suite,
                                             keep_minibatch=keep_minibatch))
        except RunFileError as exc:
            result.skipped.append(exc)
        if on_file is not None:
            on_file(path)
    group_settings(result.runs)
    return result


def group_settings(runs: list[ImportedRun]) -> None:
    """Per setting folder: set ``selected`` (see the module docstring), and give every run the
    hyperparameters of its lowest seed where they differ only by rounding.

    DeepOBS 1.1's re-runs of the best setting (seeds 43-51) record the learning rate rounded
    to 11 digits (0.0039810717055) while the tuning run (seed 42) has the grid value
    (0.003981071705534973); one setting must have one set of hyperparameters to be grouped
    as one. ``hyperparameters_raw`` keeps the files' values.
    """
    settings: dict[tuple[str, str], list[ImportedRun]] = defaultdict(list)
    for r in runs:
        settings[r.source, r.source_path.rpartition("/")[0]].append(r)
    for setting in settings.values():
        reference = min(setting, key=lambda r: r.seed)
        rerun = any(r.seed != TUNING_SEED for r in setting)
        for r in setting:
            r.selected = r.budget == "oneshot" or rerun
            mine, theirs = r.hyperparameters, reference.hyperparameters
            if mine != theirs and _rounded(mine, theirs):
                changed = ", ".join(f"{k} {v!r}" for k, v in mine.items() if v != theirs[k])
                r.notes.append(f"hyperparameters rounded in the file ({changed}); imported "
                               f"as those of seed {reference.seed} in the same setting")
                r.hyperparameters = dict(theirs)


def _rounded(values: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether ``values`` equal ``reference`` up to rounding in the 10th significant digit."""
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    def close(a: Any, b: Any) -> bool:
        return math.isclose(a, b, rel_tol=1e-9) if number(a) and number(b) else bool(a == b)

    return values.keys() == reference.keys() and all(close(v, reference[k])
                                                     for k, v in values.items())


def read_run_file(path: Path, root: Path, *, suite: str | None = None,
                  keep_minibatch: bool = False) -> ImportedRun:
    """One DeepOBS 1.1 or 1.2 run file as an :class:`ImportedRun`; ``selected`` and the
    setting's shared hyperparameters come from :func:`group_settings` over all runs.

    Raises:
        RunFileError: the file cannot be read, is not JSON or not a DeepOBS run file.
    """
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise RunFileError(f"{relative}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RunFileError(f"{relative}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{relative}: not a DeepOBS run file (a JSON "
                           f"{type(data).__name__}, not an object)")
    fields = _Fields(data, relative)
    if "optimizer_name" in data or "optimizer_hyperparams" in data:
        source = V12
        optimizer_raw = fields.text("optimizer_name")
        raw = fields.mapping("optimizer_hyperparams")
        l2_key = "l2_reg" if "l2_reg" in data or "weight_decay" not in data else "weight_decay"
        schedule_lists = fields.mapping("training_params", optional=True)
    elif "optimizer" in data or "hyperparams" in data:
        source = V11
        optimizer_raw = fields.text("optimizer")
        raw = {"learning_rate": fields.number("learning_rate"), **fields.mapping("hyperparams")}
        l2_key = "weight_decay"
        schedule_lists = {k: data.get(k) for k in ("lr_sched_epochs", "lr_sched_factors")}
    else:
        raise RunFileError(f"{relative}: not a DeepOBS run file (neither 'optimizer_name' "
                           "(DeepOBS 1.2) nor 'optimizer' (DeepOBS 1.1) is a key)")

    problem = fields.text("testproblem")
    num_epochs = fields.integer("num_epochs")
    l2_reg = fields.number(l2_key, optional=True)
    curves: dict[str, dict[str, list[float]]] = {}
    for split in _SPLITS:
        for key, metric in _METRICS.items():
            required = key == "losses" and split != "valid"
            values = fields.values(f"{split}_{key}", num_epochs + 1, optional=not required)
            if values is not None:
                curves.setdefault(split, {})[metric] = values
    minibatch = fields.values("minibatch_train_losses", None, optional=True) or []

    notes: list[str] = []
    lists = [v for metrics in curves.values() for v in metrics.values()]
    finite = all(all(map(math.isfinite, v)) for v in [*lists, minibatch])
    status = "ok" if finite else "diverged"
    filler = _abort_filler(lists) if source == V12 and not finite else None
    if filler is not None:
        notes.append(f"DeepOBS aborted the run at a non-finite loss: epochs {filler}-"
                     f"{num_epochs} repeat the epoch-0 values")
    if source == V12:
        logged = _undouble(minibatch, num_epochs + 1 - filler if filler else 0)
        minibatch = minibatch if logged is None else logged

    optimizer = _optimizer(optimizer_raw, raw, path.parent.parent.name, notes)
    budget, schedule = _schedule(path, problem, source, schedule_lists, notes)
    checked, consistent = _check_start(problem, curves["test"]["loss"][0], notes)
    return ImportedRun(
        run_id=imported_run_id(source, relative), source=source, source_path=relative,
        suite=suite or root.resolve().name, problem=problem, optimizer=optimizer,
        optimizer_raw=optimizer_raw, seed=fields.integer("random_seed"), status=status,
        batch_size=fields.integer("batch_size"), num_epochs=num_epochs,
        hyperparameters=_hyperparameters(optimizer_raw, raw), hyperparameters_raw=raw,
        l2_reg=l2_reg, budget=budget, schedule=schedule, checked=checked,
        consistent=consistent, notes=notes, curves=curves,
        minibatch_losses=minibatch if keep_minibatch else [])


class _Fields:
    """Typed access to the keys of one run file; a missing or mistyped key is a RunFileError."""

    def __init__(self, data: dict[str, Any], relative: str):
        self.data = data
        self.relative = relative

    def _fail(self, key: str, what: str) -> RunFileError:
        return RunFileError(f"{self.relative}: '{key}': {what}")

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self.data and not optional:
            raise self._fail(key, "missing")
        return self.data.get(key)

    def text(self, key: str) -> str:
        value = self._get(key, False)
        if not isinstance(value, str):
            raise self._fail(key, f"expected a string, got {value!r}")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, False)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, f"expected a non-negative integer, got {value!r}")
        return value

    def number(self, key: str, optional: bool = False) -> float | None:
        value = self._get(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"expected a number, got {value!r}")
        return float(value)

    def mapping(self, key: str, optional: bool = False) -> dict[str, Any]:
        value = self._get(key, optional)
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, f"expected an object, got {_brief(value)}")
        return value

    def values(self, key: str, length: int | None, optional: bool) -> list[float] | None:
        value = self._get(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, list):
            raise self._fail(key, f"expected a list of numbers, got {_brief(value)}")
        if length is not None and len(value) != length:
            raise self._fail(key, f"{len(value)} values, expected num_epochs + 1 = {length}")
        if not set(map(type, value)) <= {float, int}:  # bool is no number here
            i, x = next((i, x) for i, x in enumerate(value) if type(x) not in {float, int})
            raise self._fail(key, f"value {i} is not a number: {x!r}")
        return list(map(float, value))


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _same(a: float, b: float) -> bool:
    """Equal, counting NaN as equal to NaN."""
    return a == b or (a != a and b != b)


def _abort_filler(lists: list[list[float]]) -> int | None:
    """First epoch of DeepOBS 1.2's abort filler: from it on, every per-epoch list repeats
    its epoch-0 value. None if there is no filler."""
    n = len(lists[0])
    start = n
    while start > 1 and all(_same(v[start - 1], v[0]) for v in lists):
        start -= 1
    return start if start < n else None


def _undouble(values: list[float], filler: int) -> list[float] | None:
    """The logged minibatch losses once each, if ``values`` shows the 1.2 TensorFlow runner's
    pattern (each loss twice, then ``filler`` copies of the first); else None."""
    if filler > len(values):
        return None
    body, tail = values[:len(values) - filler], values[len(values) - filler:]
    if len(body) % 2 or not all(_same(x, values[0]) for x in tail):
        return None
    if not all(_same(body[i], body[i + 1]) for i in range(0, len(body), 2)):
        return None
    return body[::2]


def _optimizer(raw_class: str, raw: dict[str, Any], folder: str, notes: list[str]) -> str:
    """obsbench's name of the published optimizer (class plus variant flags)."""
    name = OPTIMIZERS.get(raw_class)
    if name is None:
        name = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", re.sub(r"Optimizer$", "", raw_class)).lower()
        notes.append(f"unknown optimizer class '{raw_class}', imported as '{name}'")
    if raw_class == "SGD" and raw.get("momentum"):
        name = "momentum"
    if name in {"sgd", "momentum"} and (raw.get("use_nesterov") is True
                                         or raw.get("nesterov") is True):
        name = "nag"
    if name == "adabound" and raw.get("amsbound") is True:
        name = "amsbound"
    if name == "adam" and raw.get("amsgrad") is True:
        name = "amsgrad"
    labelled = OPTIMIZERS.get(folder)
    if labelled is not None and labelled != name:
        notes.append(f"optimizer folder '{folder}' says '{labelled}' but the file's "
                     f"'{raw_class}' settings say '{name}'; imported as '{name}'")
    return name


def _hyperparameters(raw_class: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Published hyperparameters under obsbench's names (flags dropped)."""
    mapped: dict[str, Any] = {}
    for key, value in raw.items():
        if key in FLAGS:
            continue
        if key == "betas" and isinstance(value, list) and len(value) == 2:
            mapped["beta1"], mapped["beta2"] = value
        elif key == "alpha" and raw_class == "RMSprop":
            mapped["decay"] = value
        else:
            mapped[HYPERPARAMETERS.get(key, key)] = value
    return mapped


def _schedule(path: Path, problem: str, source: str, lists: dict[str, Any],
              notes: list[str]) -> tuple[str | None, str]:
    """(budget, schedule) from Crowded Valley's folders, or from the file's schedule lists."""
    scheduled = bool(lists.get("lr_sched_epochs") or lists.get("lr_sched_factors"))
    parts = path.absolute().parts
    if source == V12 and len(parts) >= 6 and parts[-4] == problem and _BUDGET.match(parts[-6]):
        budget, folder = parts[-6], parts[-5]
        if scheduled == (folder == "none"):
            notes.append(f"schedule folder '{folder}' but the file has "
                         f"{'a' if scheduled else 'no'} learning-rate schedule")
        return budget, "constant" if folder == "none" else folder
    return None, "custom" if scheduled else "constant"


def _check_start(problem: str, test_loss: float, notes: list[str]) -> tuple[bool, bool]:
    """(checked, consistent): the epoch-0 test loss against the problem's deterministic start."""
    if problem == "quadratic_deep":
        expected = QUADRATIC_DEEP_INITIAL_TEST_LOSS
        consistent = round(test_loss, 4) == expected
        why = " (DeepOBS 1.2 regenerated the problem for some runs)"
    elif problem.startswith("two_d_") and problem[len("two_d_"):] in _TWO_D:
        expected = _two_d_initial_loss(problem[len("two_d_"):])
        consistent = math.isclose(test_loss, expected, rel_tol=1e-5)
        why = ""
    else:
        return False, True
    if not consistent:
        notes.append(f"epoch-0 test loss {test_loss:.4f} is not {problem}'s deterministic "
                     f"{expected:.4f}: the run did not start from the canonical problem{why}")
    return True, consistent


_TWO_D = ("rosenbrock", "beale", "branin")


@functools.cache
def _two_d_initial_loss(function: str) -> float:
    """The two_d test loss at DeepOBS's start point: the test noise is zero, so the loss is
    the function itself, in float32 as DeepOBS computes it."""
    import torch

    from obsbench.problems.two_d import FUNCTIONS

    f, (u, v) = FUNCTIONS[function]
    return float(f(torch.tensor(u), torch.tensor(v)))
