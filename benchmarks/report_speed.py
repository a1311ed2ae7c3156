"""Time to score and render a report of 50,000 runs, the size of the Crowded Valley study.

Synthetic but shaped like Crowded Valley (Schmidt, Schneider & Hennig, ICML 2021): 8
problems x 15 optimizers x 4 schedules x 3 tuning budgets (one-shot: 1 setting x 10 seeds;
small: 25 trials + 9 re-runs of the best; large: 50 trials + 9 re-runs), which is 49,440
runs, each with a validation and a test curve of 11 points (1.1 million curve rows). Final
values and curves are drawn from a seeded generator (problems alternate between a loss and
an accuracy metric; about 2% of the runs diverge). The script times, in one process:

* scoring and drawing: :func:`obsbench.report.build` (every scoring function, every figure as
  SVG);
* rendering the HTML (Jinja2) and the PDF (WeasyPrint) of the same content;

and prints each, their total and PASS/MISS against the target (under 30 s on this machine).
A benchmark, not a test: it always exits 0.

    .venv/bin/python benchmarks/report_speed.py            # 50,000 runs
    .venv/bin/python benchmarks/report_speed.py --runs-scale 0.1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 30.0
PROBLEMS = [f"problem_{i}" for i in range(8)]
OPTIMIZERS = ["sgd", "momentum", "nag", "rmsprop", "adagrad", "adadelta", "adam", "amsgrad",
              "nadam", "radam", "adabound", "amsbound", "lookahead_momentum",
              "lookahead_radam", "adabelief"]
SCHEDULES = ["constant", "cosine", "cosine_wr", "trapezoidal"]
BUDGETS = {"oneshot": (1, 10), "small": (25, 9), "large": (50, 9)}
"""budget -> (trials with seed 42, re-runs of the chosen one with further seeds)."""
EPOCHS = 10


def synthetic(scale: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and curves tables of the synthetic study (``scale`` shrinks the trials)."""
    from obsbench.results import curves_frame, runs_frame

    rng = np.random.default_rng(seed)
    rows = []
    for p, problem in enumerate(PROBLEMS):
        accuracy = p % 2 == 0
        for o, optimizer in enumerate(OPTIMIZERS):
            for k, schedule in enumerate(SCHEDULES):
                for b, (budget, (trials, reruns)) in enumerate(BUDGETS.items()):
                    trials = max(1, round(trials * scale))
                    quality = rng.normal(0.0, 1.0, trials) + 0.05 * o
                    best = int(np.argmax(quality))
                    plan = [(t, 42) for t in range(trials)] + [
                        (best, 43 + s) for s in range(reruns)]
                    for trial, run_seed in plan:
                        q = quality[trial] + rng.normal(0.0, 0.1)
                        diverged = rng.random() < 0.02
                        final = (0.6 + 0.08 * np.tanh(q)) if accuracy else (1.0 - 0.3 * np.tanh(q))
                        rows.append({
                            "run_id": f"{p:x}{o:x}{k}{b}{trial:03d}{run_seed}",
                            "source": "obsbench", "suite": "synthetic", "problem": problem,
                            "optimizer": optimizer, "seed": run_seed, "trial": trial,
                            "selected": trial == best, "status": "diverged" if diverged else "ok",
                            "num_epochs": EPOCHS, "batch_size": 128,
                            "hyperparameters": json.dumps(
                                {"lr": float(10 ** (-4 + 3 * rng.random()))}),
                            "budget": budget, "schedule": schedule,
                            "train_s": 60.0 * (1 + 0.1 * o), "steps": 1000 * EPOCHS,
                            f"final_valid_{'accuracy' if accuracy else 'loss'}":
                                None if diverged else final + rng.normal(0, 0.01),
                            f"final_test_{'accuracy' if accuracy else 'loss'}":
                                None if diverged else final,
                        })
    runs = runs_frame(rows)
    ok = runs[runs["status"] == "ok"]
    epochs = np.arange(EPOCHS + 1)
    n = len(ok)
    metric_is_acc = ok["problem"].map(lambda s: int(s.split("_")[1]) % 2 == 0).to_numpy()
    columns: dict[str, list[object] | np.ndarray] = {}
    parts = []
    for split in ("valid", "test"):
        finals = np.where(metric_is_acc, ok["final_test_accuracy"], ok["final_test_loss"])
        start = np.where(metric_is_acc, 0.1, 2.5)
        shape = 1 - np.exp(-epochs[None, :] / 3.0)
        values = start[:, None] + (finals - start)[:, None] * shape / shape[-1]
        parts.append(pd.DataFrame({
            "run_id": np.repeat(ok["run_id"].to_numpy(), len(epochs)),
            "epoch": np.tile(epochs, n), "split": split,
            "metric": np.repeat(np.where(metric_is_acc, "accuracy", "loss"), len(epochs)),
            "value": values.reshape(-1)}))
    frame = pd.concat(parts, ignore_index=True)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    return runs, curves_frame(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-scale", type=float, default=1.0,
                        help="scale the number of tuning trials (1.0: 49,440 runs)")
    args = parser.parse_args()

    from obsbench import report

    tick = time.perf_counter()
    runs, curves = synthetic(args.runs_scale)
    made = time.perf_counter() - tick
    print(f"# report speed on {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores: {len(runs):,} runs, {len(curves):,} curve rows (made in {made:.1f} s, "
          "not counted)")
    source = report.Source("synthetic", Path("synthetic"), "tables", runs, curves)
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        built = report.build([source], commands=["benchmarks/report_speed.py"], root=ROOT,
                             specs_root=ROOT / "specs")
        scored = time.perf_counter() - tick
        tick = time.perf_counter()
        document = report.render_html(built)
        (Path(tmp) / "report.html").write_text(document)
        html_s = time.perf_counter() - tick
        tick = time.perf_counter()
        report.write_pdf(report.render_html(built, pdf=True), Path(tmp) / "report.pdf")
        pdf_s = time.perf_counter() - tick
        html_mb = len(document.encode()) / 1e6
        pdf_mb = (Path(tmp) / "report.pdf").stat().st_size / 1e6
    total = scored + html_s + pdf_s
    print(f"score and draw   {scored:7.2f} s")
    print(f"render HTML      {html_s:7.2f} s   ({html_mb:.1f} MB)")
    print(f"render PDF       {pdf_s:7.2f} s   ({pdf_mb:.1f} MB)")
    print(f"total            {total:7.2f} s   target < {TARGET_S:.0f} s: "
          f"{'PASS' if total < TARGET_S else 'MISS'}")


if __name__ == "__main__":
    main()
