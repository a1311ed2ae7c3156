"""THE training loop: one loop for every problem, optimizer and instrument set.

Protocol (DeepOBS): evaluate on train-eval, validation and test before training (epoch 0)
and after every epoch; evaluation is untimed and runs in batches of the training batch size
with the remainder dropped, averaging the batch means (DeepOBS's convention, which gives the
published quadratic_deep test loss 353.4468 at epoch 0). Reported losses include the
problem's L2 penalty. Training time and evaluation time are accounted separately.

Determinism: every source of randomness is seeded from the run's seed (model initialisation
through torch's global generator, batch order through a dedicated generator), so the same
spec and seed give the same bits on CPU with the same number of threads.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import obsbench
from obsbench.instruments.monitor import Monitor
from obsbench.problems.base import SPLITS, Problem, Split
from obsbench.results import SPLIT_NAMES, Environment, RunRecord, Timings
from obsbench.suite import RunSpec

DEVICE_ENV = "OBSBENCH_DEVICE"


def default_device() -> torch.device:
    """``$OBSBENCH_DEVICE`` if set, else CUDA when available, else the CPU."""
    name = os.environ.get(DEVICE_ENV)
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@functools.cache
def git_commit() -> str | None:
    """The commit of the working directory's git checkout, if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device) -> Environment:
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return Environment(
        obsbench=obsbench.__version__, python=platform.python_version(),
        torch=torch.__version__, numpy=np.__version__,
        platform=platform.platform(), device=name, threads=torch.get_num_threads(),
        git_commit=git_commit(),
    )


@torch.no_grad()
def evaluate(problem: Problem, split: Split) -> dict[str, float]:
    """Loss (with the L2 penalty) and accuracy on ``split``, DeepOBS-style batched."""
    model, size = problem.model, problem.batch_size
    batches = max(1, len(split) // size)
    size = min(size, len(split))
    reg = problem.regularizer()
    penalty = float(reg) if reg is not None else 0.0
    loss_sum, correct_sum = 0.0, 0.0
    for b in range(batches):
        x, y = split.slice(b * size, (b + 1) * size)
        outputs = model(x)
        loss_sum += float(problem.per_example_loss(outputs, y).mean())
        if problem.classification:
            correct_sum += float((outputs.argmax(dim=1) == y).float().mean())
    metrics = {"loss": loss_sum / batches + penalty}
    if problem.classification:
        metrics["accuracy"] = correct_sum / batches
    return metrics


def run(spec: RunSpec, device: torch.device | None = None) -> RunRecord:
    """Train one run; never raises for a failing run (the record says ``failed``)."""
    device = device or default_device()
    record = RunRecord(run_id=spec.run_id, spec=spec, environment=environment(device),
                       status="ok")
    try:
        _train(spec, device, record)
    except Exception as exc:  # a failing run must not stop the sweep
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    return record


def _train(spec: RunSpec, device: torch.device, record: RunRecord) -> None:
    timings = record.timings = Timings()
    start = time.perf_counter()
    seed_everything(spec.seed)
    problem = spec.problem.build(spec.tiny).to(device)
    model = problem.model
    optimizer = spec.optimizer.build(model.parameters())
    batch_order = torch.Generator().manual_seed(spec.seed)
    monitor = Monitor(model, problem.per_example_loss, spec.instruments, optimizer=optimizer,
                      l2_reg=problem.l2_reg, seed=spec.seed) if spec.instruments else None
    curves: dict[str, dict[str, list[float]]] = {SPLIT_NAMES[s]: {} for s in SPLITS}
    record.curves = curves
    timings.setup_s = time.perf_counter() - start

    # Schedule-free optimizers average their iterates: they evaluate at another point.
    train_mode, eval_mode = getattr(optimizer, "train", None), getattr(optimizer, "eval", None)
    schedule = spec.optimizer.schedule
    scheduled = schedule.kind != "constant"  # leave optimizers that set their own lr alone
    base_lrs = [group["lr"] for group in optimizer.param_groups] if scheduled else []

    def set_lr(t: int, total: int) -> None:
        factor = schedule.factor(t, total)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor

    def log_evaluation() -> None:
        tick = time.perf_counter()
        if callable(eval_mode):
            eval_mode()
        model.eval()
        for name in SPLITS:
            for metric, value in evaluate(problem, problem.splits[name]).items():
                curves[SPLIT_NAMES[name]].setdefault(metric, []).append(value)
        model.train()
        if callable(train_mode):
            train_mode()
        # Evaluation evicts the training data from the CPU caches; reading it once more here
        # bills that to evaluation, so step times do not depend on how often we evaluate.
        float(problem.train.x.sum())
        timings.eval_s += time.perf_counter() - tick

    log_evaluation()
    train = problem.train
    size = problem.batch_size
    steps_per_epoch = len(train) // size
    losses = record.minibatch_losses
    per_step = scheduled and schedule.unit == "step"
    total_steps = steps_per_epoch * problem.num_epochs
    step = 0
    reshuffle = spec.problem.shuffle == "every_epoch"
    order = torch.randperm(len(train), generator=batch_order).to(device)
    for epoch in range(problem.num_epochs):
        if reshuffle and epoch > 0:
            order = torch.randperm(len(train), generator=batch_order).to(device)
        if scheduled and not per_step:
            set_lr(epoch, problem.num_epochs)
        tick = time.perf_counter()
        for b in range(steps_per_epoch):
            if per_step:
                set_lr(step, total_steps)
            x, y = train.batch(order[b * size:(b + 1) * size])
            optimizer.zero_grad(set_to_none=True)
            if monitor is not None:
                monitor.before_forward(step)
            per_example = problem.per_example_loss(model(x), y)
            loss = per_example.mean()
            reg = problem.regularizer()
            if reg is not None:
                loss = loss + reg
            value = loss.item()
            losses.append(value)
            if not math.isfinite(value):
                record.status, record.diverged_step = "diverged", step
                break
            loss.backward()
            if monitor is not None:
                monitor.after_backward(step, x, y, per_example, value)
            optimizer.step()
            if monitor is not None:
                monitor.after_step(step)
            step += 1
        elapsed = time.perf_counter() - tick
        timings.epoch_train_s.append(elapsed)
        timings.train_s += elapsed
        timings.steps = step
        if monitor is not None:
            timings.instruments_s = monitor.seconds
        if record.status == "diverged":
            break
        log_evaluation()
    if monitor is not None:
        record.instruments = monitor.values


def run_and_write(spec: RunSpec, directory: Path) -> tuple[str, str]:
    """Run ``spec`` and write its record; returns ``(run_id, status)``. For executors."""
    from obsbench.results import write_record

    record = run(spec)
    write_record(directory, record)
    return record.run_id, record.status
