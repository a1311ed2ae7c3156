"""Does obsbench reproduce the DeepOBS 1.1 baselines on quadratic_deep?

Runs the suite ``specs/suites/deepobs_quadratic.yaml`` (SGD, Momentum 0.99 and Adam; the
learning rate tuned on DeepOBS 1.1's 36-point grid 1e-5..1e2 with seed 42, the best re-run
with seeds 42-51) and compares, per optimizer, with the published DeepOBS 1.1 baseline
imported from ``../shared/published/deepobs-baselines-1.1``: the chosen learning rate (and
its grid index k, lr = 10^(-5 + k/5)) and the 10-seed final test loss, mean and standard
deviation. The targets: obsbench's mean within 2 published standard deviations of the
published mean, and the chosen learning rate within one grid point of the published one.

One difference is deliberate: DeepOBS 1.1 chose the learning rate on the test set (it had no
validation split); obsbench chooses on the validation split.

    .venv/bin/python benchmarks/deepobs_quadratic.py [--results DIR] [--workers N]

The runs are cached in ``--results`` (default ``results/deepobs_quadratic``): a second call
only re-reads them. It prints PASS/MISS per target and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from obsbench.cli import main as obsbench
from obsbench.importers import runs_table as imported_runs_table
from obsbench.importers.deepobs import import_deepobs
from obsbench.results import read_records, read_selection, runs_table

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO.parent / "shared" / "published" / "deepobs-baselines-1.1" / "quadratic_deep"
OPTIMIZERS = ["sgd", "momentum", "adam"]


def grid_index(lr: float) -> int:
    return round(5 * (math.log10(lr) + 5))


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: the chosen learning rate and the final test loss over its seeds."""
    chosen = frame[frame["selected"]]
    lr = chosen["hyperparameters"].map(lambda h: (json.loads(h) if isinstance(h, str) else h)["lr"])
    rows = chosen.assign(lr=lr).groupby("optimizer").agg(
        lr=("lr", "first"), seeds=("seed", "nunique"), mean=("final_test_loss", "mean"),
        std=("final_test_loss", "std"))
    return rows.reindex(OPTIMIZERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results" / "deepobs_quadratic")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not PUBLISHED.is_dir():
        print(f"the published baselines are not at {PUBLISHED}; nothing to compare")
        return 0

    code = obsbench(["run", "deepobs_quadratic", "--specs", str(REPO / "specs"),
                     "--results", str(args.results), "--workers", str(args.workers)])
    if code != 0:
        print(f"obsbench run exited {code}", file=sys.stderr)
        return 0
    ours = summary(runs_table(read_records(args.results), read_selection(args.results)))
    published = summary(imported_runs_table(import_deepobs(PUBLISHED).runs))

    print("\nquadratic_deep, DeepOBS 1.1 protocol: final test loss over 10 seeds of the chosen lr")
    header = (f"{'optimizer':<10} {'published lr':>12} {'k':>3} {'obsbench lr':>12} {'k':>3} "
              f"{'published':>17} {'obsbench':>17} {'diff':>8} {'diff/std':>8}  verdict")
    print(header)
    print("-" * len(header))
    for name in OPTIMIZERS:
        p, o = published.loc[name], ours.loc[name]
        diff = o["mean"] - p["mean"]
        in_std = abs(diff) <= 2 * p["std"]
        in_grid = abs(grid_index(o["lr"]) - grid_index(p["lr"])) <= 1
        verdict = "PASS" if in_std and in_grid else "MISS"
        print(f"{name:<10} {p['lr']:>12.4g} {grid_index(p['lr']):>3} {o['lr']:>12.4g} "
              f"{grid_index(o['lr']):>3} {p['mean']:>9.3f} ± {p['std']:<5.3f} "
              f"{o['mean']:>9.3f} ± {o['std']:<5.3f} {diff:>+8.3f} {diff / p['std']:>+8.2f}  "
              f"{verdict}")
    print("targets: |diff| <= 2 published std; chosen lr within one grid point (|dk| <= 1).")
    print("published seeds:", dict(published["seeds"].astype(int)),
          "obsbench seeds:", dict(ours["seeds"].astype(int)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
