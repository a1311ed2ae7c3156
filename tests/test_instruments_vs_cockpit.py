"""obsbench's instruments against Cockpit 1.0.2 on the models Cockpit supports.

Same initial parameters, same batches (128 samples), plain SGD for three steps, every
quantity tracked at every step by both: obsbench's values must match Cockpit's within 1e-4
relative for the deterministic quantities and the histograms up to elements that float32
round-off moves across a bin edge.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from obsbench.instruments import QUANTITIES, TOTAL, quantity
from obsbench.instruments.monitor import Monitor

cockpit_harness = pytest.importorskip("tests.cockpit_harness")
try:
    import cockpit  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"Cockpit is not installed ({exc}); see README command 2", allow_module_level=True)

LR, STEPS = 0.1, 3
KINDS = [k for k in QUANTITIES if k != "time"]


def _obsbench(model: nn.Module, batches: list) -> dict:
    # Cockpit's HessTrace/TICDiag use the exact Hessian diagonal; for these ReLU/max-pool
    # networks it equals the GGN diagonal, which obsbench computes exactly.
    options = {"hess_trace": {"curvature": "ggn"}, "tic_diag": {"curvature": "ggn"},
               "tic_trace": {"curvature": "ggn"}}
    specs = [quantity(k, **options.get(k, {})) for k in KINDS]
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    monitor = Monitor(model, lambda out, y: nn.functional.cross_entropy(out, y, reduction="none"),
                      specs, optimizer=opt)
    for step, (x, y) in enumerate(batches):
        opt.zero_grad()
        monitor.before_forward(step)
        losses = nn.functional.cross_entropy(model(x), y, reduction="none")
        loss = losses.mean()
        loss.backward()
        monitor.after_backward(step, x, y, losses, loss)
        opt.step()
        monitor.after_step(step)
    out: dict = {}
    for v in monitor.values:
        out[(v.step, v.quantity, v.layer)] = (np.array(v.hist.counts).reshape(v.hist.bins)
                                              if v.hist is not None else v.value)
    return out


@pytest.mark.parametrize("build", ["mlp", "cnn"])
def test_values_match_cockpit(build):
    model = getattr(cockpit_harness, build)(seed=0)
    batches = cockpit_harness.batches(STEPS, batch_size=128, seed=1)
    ours = _obsbench(copy.deepcopy(model), batches)
    with cockpit_harness.quiet_cockpit_warnings():
        theirs = cockpit_harness.run_cockpit(model, batches, KINDS, lr=LR)
    assert set(theirs) <= set(ours)
    numel = 128 * sum(p.numel() for p in model.parameters())
    for key, expected in sorted(theirs.items(), key=str):
        value = ours[key]
        if key[1].startswith("grad_hist"):
            assert value.sum() == expected.sum() == numel
            # float32 round-off may move elements within an ulp of a bin edge; a parameter
            # element there moves all its 128 per-sample pairs in the 2-D histogram
            assert np.abs(value - expected).sum() <= 1e-5 * numel + 4 * 128, key
        elif key[1] == "hess_max_ev":
            # Not deterministic: power iteration from a random start, stopped at a relative
            # change of 1e-3 or after 100 products (Cockpit's rule, obsbench's too); where the
            # two extreme eigenvalues are close in magnitude either may stop short. The
            # float64 brute-force test checks obsbench's value against eigvalsh.
            assert np.isfinite(value), key
        else:
            assert value == pytest.approx(expected, rel=1e-4, abs=1e-7), key
    assert (0, "alpha", TOTAL) in theirs and (0, "norm_test", TOTAL) in theirs
