"""Instrument overhead: plain training vs Cockpit 1.0.2 vs obsbench, side by side.

For two models Cockpit supports (an MLP 784-128-10 and the CNN of Cockpit's own example,
batch 128, synthetic MNIST-shaped data, plain SGD) and for each of Cockpit's presets
(economy, business, full) tracked every step and every 16 steps, each configuration runs in
a fresh process that trains two copies of the model in interleaved blocks of steps: one
plain, one instrumented. The time per step of both is measured in the same process, so the
overhead ``(instrumented - plain) / plain`` is a ratio measured side by side; peak memory is
the process's peak resident set. obsbench also runs its first-order quantities without
histograms (loss, grad_norm, distance, update_size, the three gradient tests, alpha: the
economy preset without its histogram) tracked every step and every 16 steps, the same
without alpha (``no_alpha``) and without the tests that project on the gradient
(``norms_only``: loss, grad_norm, distance, update_size, norm_test).

Targets (issue 4): obsbench's economy overhead tracked every step at most a quarter of
Cockpit's on both models; first-order quantities without histograms at most 1.5x a plain
step (checked for both schedules; the per-sample products these quantities need, timed
alone, show how close to that a step tracked every step can get); peak memory no higher
than Cockpit's; identical values whichever way they are computed (here: tracked every step
or every 16 steps, compared at the steps both track; identical up to float32 round-off,
1e-6 relative, because a matrix product of one direction and of two directions at once may
round differently).

This is a benchmark, not a test: it prints the table and PASS/MISS per target, exits 0.
Needs Cockpit (README command 2 installs it).

    .venv/bin/python benchmarks/instruments_vs_cockpit.py           # about 5 min on 2 cores
    .venv/bin/python benchmarks/instruments_vs_cockpit.py --quick   # smoke test
    .venv/bin/python benchmarks/instruments_vs_cockpit.py --models cnn --rows economy:1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("economy", "business", "full")
FIRST_ORDER = ("loss", "grad_norm", "distance", "update_size", "norm_test", "inner_test",
               "ortho_test", "alpha")
LR = 1e-3
BLOCK = 8
IDENTICAL_RTOL = 1e-6
"""Values computed at different schedules agree to float32 round-off."""


def worker(model_name: str, tool: str, config: str, every: int, steps: int, dump: str) -> None:
    """One configuration in this process; prints a JSON line with times and memory."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    from tests import cockpit_harness as h

    torch.set_num_threads(1)
    build = getattr(h, model_name)
    data = h.batches(steps + 2, batch_size=128, seed=1)
    plain = h.plain_step_fn(build(seed=0), lr=LR)
    names = {"first_order": FIRST_ORDER, "no_alpha": FIRST_ORDER[:-1],
             "norms_only": FIRST_ORDER[:5]}.get(config)
    values: dict[str, float] = {}
    if tool == "plain":
        instrumented = h.plain_step_fn(build(seed=0), lr=LR)
    elif tool == "cockpit":
        from obsbench.instruments import PRESETS as SETS
        quantities = list(names or SETS[config])
        instrumented = h.cockpit_step_fn(build(seed=0), quantities, every=every, lr=LR)
    else:
        from obsbench.instruments import preset, quantity
        from obsbench.instruments.monitor import Monitor

        model = build(seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        specs = [quantity(k, every=every) for k in names] if names else preset(config,
                                                                               every=every)

        def loss_fn(out: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            assert y is not None
            return nn.functional.cross_entropy(out, y, reduction="none")

        monitor = Monitor(model, loss_fn, specs, optimizer=opt)

        def instrumented(step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            opt.zero_grad()
            monitor.before_forward(step)
            losses = loss_fn(model(x), y)
            loss = losses.mean()
            loss.backward()
            monitor.after_backward(step, x, y, losses, loss)
            opt.step()
            monitor.after_step(step)
            return loss.detach()

    with h.quiet_cockpit_warnings():
        for step in range(2):  # warm-up, untimed
            plain(step, *data[step])
            instrumented(step, *data[step])
        times = {"plain": 0.0, "instrumented": 0.0}
        for start in range(2, steps + 2, BLOCK):
            for label, fn in (("plain", plain), ("instrumented", instrumented)):
                tick = time.perf_counter()
                for step in range(start, min(start + BLOCK, steps + 2)):
                    fn(step, *data[step])
                times[label] += time.perf_counter() - tick
    if tool == "obsbench":
        values = {f"{v.step}|{v.quantity}|{v.layer}": v.value for v in monitor.values
                  if v.hist is None}
        Path(dump).write_text(json.dumps(values))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    floor_ms = per_sample_floor(build(seed=0), data[0][0]) if config == "first_order" else 0.0
    print(json.dumps({"plain_ms": times["plain"] / steps * 1e3,
                      "ms": times["instrumented"] / steps * 1e3, "peak_mb": peak_mb,
                      "floor_ms": floor_ms}))


def per_sample_floor(model: Any, x: Any, repeats: int = 20) -> float:
    """Milliseconds of the per-sample work that the first-order quantities cannot avoid.

    The inner-product and orthogonality tests need ``g_n . g`` and alpha needs ``g_n . s``
    (the previous update) for every sample. For a linear layer with input ``V`` ``(B, in)``
    and output gradients ``U`` that is ``((V @ [G; S]^T) * U).sum``, one ``(B, in) x
    (in, 2 out)`` product, as large as the layer's own forward and weight-gradient products
    together. For a convolution the norm test needs ``||g_n||^2``, which takes the
    per-sample weight gradients (obsbench's grouped convolution; the projections on them
    are then cheap). Times these products alone (random data of the layers' shapes, median
    of ``repeats``); every other part of the quantities is left out, so this is a lower bound
    for obsbench's way of computing them.
    """
    import torch
    from torch import nn

    from obsbench.instruments.persample import _conv_weight_grads

    seen: list[tuple[Any, Any, Any]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o)))
             for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    total = 0.0
    for module, inputs, outputs in seen:
        a = torch.rand_like(inputs)
        if isinstance(module, nn.Linear):
            d = torch.rand(2 * module.out_features, module.in_features)
        else:
            dz = torch.rand_like(outputs)
        samples = []
        for _ in range(repeats):
            tick = time.perf_counter()
            if isinstance(module, nn.Linear):
                a @ d.T
            else:
                _conv_weight_grads(module, a, dz)
            samples.append(time.perf_counter() - tick)
        total += sorted(samples)[repeats // 2]
    return total * 1e3


def run_worker(model: str, tool: str, config: str, every: int, steps: int, dump: str
               ) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", model, tool, config, str(every), str(steps),
           dump]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {model} {tool} {config} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one model")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated (mlp, cnn)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated CONFIG:EVERY rows, e.g. economy:1,no_alpha:1 "
                             "(default: all)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, tool, config, every, steps, dump = args.worker
        worker(model, tool, config, int(every), int(steps), dump)
        return

    models = ["mlp"] if args.quick else args.models.split(",")
    steps = {1: 8 if args.quick else 32, 16: 32 if args.quick else 64}
    print(f"# instruments vs Cockpit 1.0.2 on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, one torch thread, batch 128, SGD; time per step (ms), "
          "overhead = (instrumented - plain) / plain measured in the same process, peak RSS")
    misses = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            base = run_worker(model, "plain", "plain", 1, steps[1], "")
            print(f"\n## {model}: plain {base['plain_ms']:.2f} ms/step, "
                  f"peak {base['peak_mb']:.0f} MB")
            print(f"{'preset':<12}{'every':>6} | {'Cockpit ms':>10} {'overhead':>9} "
                  f"{'MB':>6} | {'obsbench ms':>11} {'overhead':>9} {'MB':>6} | "
                  f"{'overhead ratio':>14}")
            rows = [(p, e) for p in PRESETS for e in (1, 16)] + [
                ("first_order", 1), ("first_order", 16), ("no_alpha", 1), ("norms_only", 1)]
            if args.rows:
                rows = [(r.split(":")[0], int(r.split(":")[1])) for r in args.rows.split(",")]
            dumps: dict[int, dict[str, float]] = {}
            for config, every in rows:
                c = run_worker(model, "cockpit", config, every, steps[every], "")
                dump = str(Path(tmp) / f"{model}-{config}-{every}.json")
                o = run_worker(model, "obsbench", config, every, steps[every], dump)
                if config == "economy":
                    dumps[every] = json.loads(Path(dump).read_text())
                oc = c["ms"] / c["plain_ms"] - 1
                oo = o["ms"] / o["plain_ms"] - 1
                ratio = oo / oc if oc > 0 else math.inf
                print(f"{config:<12}{every:>6} | {c['ms']:>10.2f} {oc:>8.2f}x {c['peak_mb']:>6.0f}"
                      f" | {o['ms']:>11.2f} {oo:>8.2f}x {o['peak_mb']:>6.0f} | {ratio:>14.3f}")
                if config == "economy" and every == 1 and not ratio <= 0.25:
                    misses.append(f"{model}: economy overhead ratio {ratio:.3f} > 0.25")
                if config == "first_order":
                    times = o["ms"] / o["plain_ms"]
                    print(f"{'':<18} first-order step {times:.2f}x plain", end="")
                    if every == 1:
                        print(f"; the per-sample products alone take {o['floor_ms']:.2f} ms"
                              f" (see per_sample_floor), at least "
                              f"{1 + o['floor_ms'] / o['plain_ms']:.2f}x plain")
                    else:
                        print()
                    if not times <= 1.5:
                        misses.append(f"{model}: first-order step tracked every {every}: "
                                      f"{times:.2f}x plain > 1.5x")
                if o["peak_mb"] > c["peak_mb"]:
                    misses.append(f"{model} {config} every {every}: peak memory "
                                  f"{o['peak_mb']:.0f} MB > Cockpit's {c['peak_mb']:.0f} MB")
            if set(dumps) != {1, 16}:
                continue
            common = sorted(set(dumps[1]) & set(dumps[16]))
            gaps = [abs(dumps[1][k] - dumps[16][k]) / max(abs(dumps[1][k]), 1e-30)
                    for k in common if not (math.isnan(dumps[1][k]) and math.isnan(dumps[16][k]))]
            same = sum(g == 0 for g in gaps)
            worst = max(gaps, default=math.inf)
            print(f"economy values at the {len(common)} (step, quantity, layer) both schedules "
                  f"track: {same} bitwise identical, largest relative difference {worst:.1e} "
                  "(float32 products batched differently)")
            if not worst <= IDENTICAL_RTOL:
                misses.append(f"{model}: values differ between schedules by {worst:.1e}")
    print("\nPASS: every target met" if not misses else "\nMISS:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    main()
