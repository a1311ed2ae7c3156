"""How much does the obsbench runner cost over a hand-written PyTorch loop, and do sweeps scale?

Two measurements, printed side by side in one run:

1. Step time. For each problem (``mnist1d_mlp``, ``quadratic_deep``), the obsbench runner
   (``obsbench.runner.run``) and a minimal hand-written training loop train the same spec
   with the same seed on the CPU with one torch thread. Repetitions are interleaved
   (runner, loop, runner, loop, ...) so that machine noise hits both alike; the table gives
   the median time per training step of each, the ratio of the medians (target <= 1.05)
   and whether the per-step minibatch losses are bitwise identical. A diagnostic variant of
   the loop also evaluates (untimed) after every epoch, as the runner's protocol does.
2. Sweep throughput. Twelve 120-epoch ``mnist1d_mlp`` runs go through
   ``obsbench.executors.run_local`` with 1 and with 2 workers, each into a fresh temporary
   directory; runs per second are measured on the wall clock, pool start-up included
   (target: 2 workers >= 1.7x the throughput of 1), with the runner's setup/train/eval time
   and a calibration of how well the machine itself runs two processes at once.

This is a benchmark, not a test: it prints PASS/MISS per target and always exits 0.

    .venv/bin/python benchmarks/runner_overhead.py            # full (about 3 min on 2 cores)
    .venv/bin/python benchmarks/runner_overhead.py --quick    # smoke test (~30 s)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from obsbench.executors import available_cores, run_local, threads_per_worker
from obsbench.optimizers import SGD, Adam, Momentum, RMSProp
from obsbench.problems import MNIST1D, QuadraticDeep
from obsbench.results import read_records
from obsbench.runner import run as obsbench_run
from obsbench.suite import RunSpec

RATIO_TARGET = 1.05
SPEEDUP_TARGET = 1.7
SEED = 42
CPU = torch.device("cpu")
STEP_OPTIMIZER = SGD(kind="sgd")  # the specs/optimizers/sgd.yaml default, lr 0.01


# ---------------------------------------------------------------------------------------
# The minimal loop: what a user writes by hand. It shares nothing with obsbench.runner; it
# only uses the spec to build the same problem (model + data) and the same optimizer.
# ---------------------------------------------------------------------------------------


@dataclass
class Timed:
    """Per-step minibatch losses and the seconds spent in training steps."""

    losses: list[float]
    train_s: float
    steps: int

    @property
    def per_step(self) -> float:
        return self.train_s / self.steps


def minimal_loop(spec: RunSpec, evaluate_each_epoch: bool = False) -> Timed:
    """Train ``spec`` with a plain PyTorch loop, timing only the training steps.

    With ``evaluate_each_epoch``, the loop also runs an untimed no-grad forward pass over
    every evaluation split before training and after each epoch, as a user logging
    train/valid/test curves would (a diagnostic: it costs the timed steps nothing in code,
    but it moves other data through the caches between epochs, as the runner's evaluation does).
    """
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    problem = spec.problem.build()
    model = problem.model
    optimizer = spec.optimizer.build(model.parameters())
    shuffle = torch.Generator().manual_seed(spec.seed)
    x, y = problem.train.x, problem.train.y
    batch_size = problem.batch_size
    steps_per_epoch = len(x) // batch_size  # drop the last partial batch
    # quadratic_deep's model returns per-example losses; MNIST-1D's returns logits.
    classification = spec.problem.kind == "mnist1d"
    l2_reg = getattr(spec.problem, "l2_reg", 0.0)
    weights = [p for p in model.parameters() if p.dim() > 1]

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            for split in problem.splits.values():
                for b in range(max(1, len(split.x) // batch_size)):
                    out = model(split.x[b * batch_size:(b + 1) * batch_size])
                    if classification:
                        out = torch.nn.functional.cross_entropy(
                            out, split.y[b * batch_size:(b + 1) * batch_size], reduction="none")
                    out.mean().item()
        model.train()

    losses: list[float] = []
    train_s = 0.0
    model.train()
    if evaluate_each_epoch:
        evaluate()
    for _epoch in range(problem.num_epochs):
        perm = torch.randperm(len(x), generator=shuffle)
        tick = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            optimizer.zero_grad()
            out = model(x[idx])
            if classification:
                out = torch.nn.functional.cross_entropy(out, y[idx], reduction="none")
            loss = out.mean()
            if l2_reg:
                loss = loss + 0.5 * l2_reg * sum(w.pow(2).sum() for w in weights)
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
        train_s += time.perf_counter() - tick
        if evaluate_each_epoch:
            evaluate()
    return Timed(losses, train_s, problem.num_epochs * steps_per_epoch)


def runner(spec: RunSpec) -> Timed:
    """Train ``spec`` with the obsbench runner (evaluation is untimed there)."""
    record = obsbench_run(spec, device=CPU)
    if record.status != "ok":
        sys.exit(f"runner: {spec.problem_id} ended {record.status}: {record.error}")
    return Timed(record.minibatch_losses, record.timings.train_s, record.timings.steps)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def problem_spec(problem_id: str, epochs: int) -> RunSpec:
    problem: MNIST1D | QuadraticDeep
    if problem_id == "mnist1d_mlp":
        problem = MNIST1D(kind="mnist1d", model="mlp", num_epochs=epochs)
    else:
        problem = QuadraticDeep(kind="quadratic_deep", num_epochs=epochs)
    return RunSpec(suite="bench", problem_id=problem_id, problem=problem,
                   optimizer_id="sgd", optimizer=STEP_OPTIMIZER, seed=SEED)


@dataclass
class StepResult:
    problem_id: str
    steps: int
    runner_s: list[float]
    loop_s: list[float]
    loop_eval_s: list[float]
    identical: bool
    max_abs_diff: float

    @property
    def ratio(self) -> float:
        """Ratio of the medians, runner over minimal loop: the number the target is about."""
        return statistics.median(self.runner_s) / statistics.median(self.loop_s)

    @property
    def paired_ratio(self) -> float:
        """Median of the per-repetition ratios (robust to drift in the machine's load)."""
        return statistics.median(a / b for a, b in zip(self.runner_s, self.loop_s, strict=True))

    @property
    def ratio_vs_loop_eval(self) -> float:
        return statistics.median(self.runner_s) / statistics.median(self.loop_eval_s)


def compare(losses_a: list[float], losses_b: list[float]) -> tuple[bool, float]:
    """Bitwise equality of two loss sequences, and their largest absolute difference."""
    if len(losses_a) != len(losses_b):
        return False, float("inf")
    a, b = np.array(losses_a), np.array(losses_b)
    return a.tobytes() == b.tobytes(), float(np.max(np.abs(a - b))) if len(a) else 0.0


def step_time(problem_id: str, epochs: int, repeats: int) -> StepResult:
    spec = problem_spec(problem_id, epochs)
    # Warm-up, untimed: data generation (cached per process), lazy torch initialisation.
    warm = problem_spec(problem_id, 1)
    runner(warm)
    minimal_loop(warm)
    result = StepResult(problem_id, 0, [], [], [], True, 0.0)
    for _ in range(repeats):
        ours = runner(spec)
        theirs = minimal_loop(spec)
        theirs_eval = minimal_loop(spec, evaluate_each_epoch=True)
        for other in (theirs, theirs_eval):
            same, diff = compare(ours.losses, other.losses)
            result.identical &= same and ours.steps == other.steps
            result.max_abs_diff = max(result.max_abs_diff, diff)
        result.runner_s.append(ours.per_step)
        result.loop_s.append(theirs.per_step)
        result.loop_eval_s.append(theirs_eval.per_step)
        result.steps = ours.steps
    return result


def sweep_runs(count: int, epochs: int) -> list[RunSpec]:
    """``count`` mnist1d_mlp runs over four optimizers and as many seeds as needed."""
    optimizers = [("sgd", SGD(kind="sgd")), ("momentum", Momentum(kind="momentum")),
                  ("adam", Adam(kind="adam")), ("rmsprop", RMSProp(kind="rmsprop"))]
    problem = MNIST1D(kind="mnist1d", model="mlp", num_epochs=epochs)
    return [RunSpec(suite="bench", problem_id="mnist1d_mlp", problem=problem,
                    optimizer_id=optimizers[i % 4][0], optimizer=optimizers[i % 4][1],
                    seed=SEED + i // 4)
            for i in range(count)]


@dataclass
class Sweep:
    wall_s: float
    first_s: float  # until the first run's record is written: pool start-up + one run
    outcomes: Counter[str]
    setup_s: float  # summed over runs, as recorded by the runner
    train_s: float
    eval_s: float


def sweep_throughput(runs: list[RunSpec], workers: int) -> Sweep:
    """Run ``runs`` through ``run_local`` into a fresh directory, timing the wall clock."""
    with tempfile.TemporaryDirectory(prefix=f"obsbench-sweep-{workers}w-") as tmp:
        directory = Path(tmp) / "runs"
        outcomes: Counter[str] = Counter()
        first = 0.0
        tick = time.perf_counter()
        for outcome in run_local(runs, directory, workers):
            outcomes[outcome.status] += 1
            first = first or time.perf_counter() - tick
        wall = time.perf_counter() - tick
        records = list(read_records(directory))
        return Sweep(wall, first, outcomes,
                     sum(r.timings.setup_s for r in records),
                     sum(r.timings.train_s for r in records),
                     sum(r.timings.eval_s for r in records))


SPIN = "import time\nt = time.perf_counter()\nfor _ in range(8_000_000): pass\n"


def machine_scaling() -> float:
    """Throughput of two concurrent CPU-bound processes relative to one (ideal: 2.0).

    A calibration of the machine, not of obsbench: on a shared or throttled machine it is
    the ceiling for any two-worker speed-up.
    """
    def wall(copies: int) -> float:
        tick = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(copies)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - tick

    wall(1)  # warm the interpreter's files in the page cache
    one = statistics.median(wall(1) for _ in range(3))
    two = statistics.median(wall(2) for _ in range(3))
    return 2 * one / two


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions and epochs: a smoke test, not a measurement")
    parser.add_argument("--skip-sweep", action="store_true", help="only the step-time part")
    parser.add_argument("--skip-steps", action="store_true", help="only the sweep part")
    parser.add_argument("--sweep-runs", type=int, help="number of runs in the sweep")
    parser.add_argument("--sweep-epochs", type=int, help="epochs per sweep run")
    args = parser.parse_args(argv)

    if args.quick:
        repeats, epochs = 3, {"mnist1d_mlp": 4, "quadratic_deep": 20}
        sweep_count, sweep_epochs = 4, 3
    else:
        repeats, epochs = 11, {"mnist1d_mlp": 15, "quadratic_deep": 100}
        sweep_count, sweep_epochs = 12, 120

    print(f"obsbench runner overhead{' (--quick: smoke test only)' if args.quick else ''}")
    print(f"torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {available_cores()} available cores, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    if not args.skip_steps:
        torch.set_num_threads(1)
        print("\n1. Time per training step, obsbench runner vs a minimal hand-written loop")
        print(f"   optimizer sgd lr={STEP_OPTIMIZER.lr}, seed {SEED}, CPU, torch threads = "
              f"{torch.get_num_threads()}, {repeats} interleaved repetitions")
        print("   (runner, loop, loop+eval, runner, ...); medians; only training steps timed")
        header = (f"   {'problem':<15} {'epochs':>6} {'steps':>6} {'runner us/step':>15} "
                  f"{'loop us/step':>13} {'ratio':>6} {'target':>7} {'identical':>9}  verdict")
        print(header)
        print("   " + "-" * (len(header) - 3))
        results = []
        for problem_id in ("mnist1d_mlp", "quadratic_deep"):
            r = step_time(problem_id, epochs[problem_id], repeats)
            results.append(r)
            same = "yes" if r.identical else f"no ({r.max_abs_diff:.3g})"
            ok = r.ratio <= RATIO_TARGET and r.identical
            print(f"   {r.problem_id:<15} {epochs[problem_id]:>6} {r.steps:>6} "
                  f"{statistics.median(r.runner_s) * 1e6:>15.1f} "
                  f"{statistics.median(r.loop_s) * 1e6:>13.1f} {r.ratio:>6.3f} "
                  f"{'<=' + str(RATIO_TARGET):>7} {same:>9}  {verdict(ok)}")
        print("   ratio: median(runner) / median(loop). identical: every repetition's minibatch")
        print("   losses bitwise equal between runner and loop (else the max abs difference).")
        print("\n   Diagnostics (no target):")
        print(f"   {'problem':<15} {'paired ratio':>12} {'loop+eval us/step':>18} "
              f"{'runner/(loop+eval)':>19}")
        for r in results:
            print(f"   {r.problem_id:<15} {r.paired_ratio:>12.3f} "
                  f"{statistics.median(r.loop_eval_s) * 1e6:>18.1f} "
                  f"{r.ratio_vs_loop_eval:>19.3f}")
        print("   paired ratio: median of the per-repetition runner/loop ratios. loop+eval: the")
        print("   same loop plus an untimed forward pass over train-eval/valid/test before")
        print("   training and after every epoch, as the runner's protocol does.")
        print("   runner/loop us/step per repetition:")
        for r in results:
            pairs = " ".join(f"{a * 1e6:.0f}/{b * 1e6:.0f}"
                             for a, b in zip(r.runner_s, r.loop_s, strict=True))
            print(f"     {r.problem_id:<15} {pairs}")

    if not args.skip_sweep:
        if args.sweep_runs:
            sweep_count = args.sweep_runs
        if args.sweep_epochs:
            sweep_epochs = args.sweep_epochs
        runs = sweep_runs(sweep_count, sweep_epochs)
        print(f"\n2. Sweep throughput, obsbench.executors.run_local: {len(runs)} mnist1d_mlp runs "
              f"x {sweep_epochs} epochs")
        print("   (sgd/momentum/adam/rmsprop x seeds), fresh temporary directory each, wall clock")
        print("   including pool start-up; threads/worker as the executor sets them (cores // "
              "workers)")
        header = (f"   {'workers':>7} {'threads/worker':>14} {'wall s':>7} {'runs/s':>7} "
                  f"{'1st rec s':>9} {'setup s':>7} {'train s':>7} {'eval s':>6}  outcomes")
        print(header)
        print("   " + "-" * (len(header) - 3 + 4))
        throughput = {}
        all_ok = True
        calibration = [machine_scaling()]
        for workers in (1, 2):
            sweep = sweep_throughput(runs, workers)
            throughput[workers] = len(runs) / sweep.wall_s
            all_ok &= sweep.outcomes.get("ok", 0) == len(runs)
            counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.outcomes.items()))
            print(f"   {workers:>7} {threads_per_worker(workers):>14} {sweep.wall_s:>7.2f} "
                  f"{throughput[workers]:>7.3f} {sweep.first_s:>9.2f} {sweep.setup_s:>7.2f} "
                  f"{sweep.train_s:>7.2f} {sweep.eval_s:>6.2f}  {counts}")
        calibration.append(machine_scaling())
        speedup = throughput[2] / throughput[1]
        print(f"   speed-up with 2 workers: {speedup:.2f}x (target >= {SPEEDUP_TARGET}x)  "
              f"{verdict(speedup >= SPEEDUP_TARGET and all_ok)}")
        print("   1st rec: seconds until the first record (pool start-up + one run); setup/train/"
              "eval:\n   the runner's own timings summed over all runs (setup includes building "
              "the problem,\n   i.e. generating MNIST-1D once in each worker process).")
        print("   machine calibration, before/after the sweeps: 2 concurrent CPU-bound processes "
              f"run at\n   {calibration[0]:.2f}x/{calibration[1]:.2f}x the throughput of 1 "
              "(ideal 2.00; the ceiling for any 2-worker speed-up)")

    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
          "(timings on a shared machine are noisy; rerun before drawing conclusions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
