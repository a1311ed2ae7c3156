"""The Cockpit harness against hand computations in plain torch (a check of the oracle itself).

Three SGD steps on the MLP: Cockpit's loss, per-layer gradient norms, distances, update sizes,
norm test and gradient histograms must equal what plain torch gives when the same steps are
replayed on a copy of the initial model, with per-sample gradients from one
``torch.autograd.grad`` call per sample. This pins down the facts the harness documents:
which parameters a step's value refers to, under which step two-step values are stored, how
per-parameter lists are ordered, BackPACK's 1/B scaling and the histograms' orientation.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated")
        import backpack  # noqa: F401
        import cockpit  # noqa: F401
except Exception as exc:  # ImportError, or pkg_resources missing with setuptools>=81
    pytest.skip(
        f"Cockpit/BackPACK not importable ({exc!r}); install with pip install -e "
        "'.[test,cockpit]' && pip install --no-deps backpack-for-pytorch==1.7.1 "
        "cockpit-for-pytorch==1.0.2",
        allow_module_level=True,
    )

from tests import cockpit_harness as harness

B, STEPS, LR = 32, 3, 0.1
QUANTITIES = ["loss", "grad_norm", "distance", "update_size", "norm_test",
              "grad_hist_1d", "grad_hist_2d"]


def rel_close(actual: float, expected: float, rtol: float, atol: float = 0.0) -> bool:
    return math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol)


def hist_2d(grads: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Counts of (per-sample gradient element, parameter element) pairs, by hand."""
    (bx, by), ((xlo, xhi), (ylo, yhi)) = harness.GRAD_HIST_2D_BINS, harness.GRAD_HIST_2D_RANGE
    wx, wy = (xhi - xlo) / bx, (yhi - ylo) / by
    gx = grads.clamp(xlo + wx / 2, xhi - wx / 2)
    py = params.expand_as(grads).clamp(ylo + wy / 2, yhi - wy / 2)
    ix = torch.floor((gx - xlo) / wx).long()
    iy = torch.floor((py - ylo) / wy).long()
    return torch.bincount((ix * by + iy).flatten(), minlength=bx * by).reshape(bx, by)


def test_harness_matches_plain_torch() -> None:
    model = harness.mlp(seed=1)
    reference = copy.deepcopy(model)
    data = harness.batches(STEPS, batch_size=B, seed=2)
    with harness.quiet_cockpit_warnings():
        out = harness.run_cockpit(model, data, QUANTITIES, lr=LR)

    names = [n for n, _ in reference.named_parameters()]
    params = [p for _, p in reference.named_parameters()]
    assert names == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert {layer for (_, q, layer) in out if q == "grad_norm"} == {*names, "total"}
    init = [p.detach().clone() for p in params]
    dim = sum(p.numel() for p in params)
    opt = torch.optim.SGD(params, lr=LR)

    for t, (x, y) in enumerate(data):
        # distance at step t: parameters after t updates, before this step's update
        dists = [float((p.detach() - p0).norm()) for p, p0 in zip(params, init, strict=True)]
        for name, d in zip(names, dists, strict=True):
            assert rel_close(out[(t, "distance", name)], d, 1e-5, 1e-7), (t, name)
        assert rel_close(out[(t, "distance", "total")], math.sqrt(sum(d * d for d in dists)),
                         1e-5, 1e-7)

        opt.zero_grad()
        loss = F.cross_entropy(reference(x), y)
        loss.backward()
        assert rel_close(out[(t, "loss", "total")], loss.item(), 1e-6)
        norms = [float(p.grad.norm()) for p in params]
        for name, n in zip(names, norms, strict=True):
            assert rel_close(out[(t, "grad_norm", name)], n, 1e-5), (t, name)
        assert rel_close(out[(t, "grad_norm", "total")], math.sqrt(sum(n * n for n in norms)),
                         1e-5)

        # per-sample gradients g_n = ∇ℓ_n, one autograd call per sample
        per_sample = []
        for i in range(B):
            loss_i = F.cross_entropy(reference(x[i:i + 1]), y[i:i + 1])
            grads_i = torch.autograd.grad(loss_i, params)
            per_sample.append(torch.cat([g.flatten() for g in grads_i]))
        grads = torch.stack(per_sample)
        g = torch.cat([p.grad.flatten() for p in params])
        torch.testing.assert_close(grads.mean(0), g, rtol=1e-4, atol=1e-6)

        sum_sq = 0.0
        for i in range(B):
            sum_sq += float(grads[i] @ grads[i])
        g_sq = float(g @ g)
        theta = math.sqrt((sum_sq - B * g_sq) / (B * (B - 1) * g_sq))
        assert rel_close(out[(t, "norm_test", "total")], theta, 1e-4), t

        # 1-D histogram: all B·D per-sample gradient elements clamped into [-2, 2], 100 bins
        lo, hi = harness.GRAD_HIST_1D_RANGE
        mine_1d = torch.histc(grads.clamp(lo, hi), bins=harness.GRAD_HIST_1D_BINS, min=lo, max=hi)
        theirs_1d = torch.as_tensor(out[(t, "grad_hist_1d", "total")])
        assert theirs_1d.shape == (100,) and int(theirs_1d.sum()) == B * dim
        assert float((theirs_1d - mine_1d).abs().sum()) <= 1e-5 * B * dim, t

        # 2-D histogram: axis 0 = per-sample gradient element, axis 1 = its parameter value
        theta_t = torch.cat([p.detach().flatten() for p in params])
        mine_2d = hist_2d(grads, theta_t)
        theirs_2d = torch.as_tensor(out[(t, "grad_hist_2d", "total")])
        assert theirs_2d.shape == (40, 50) and int(theirs_2d.sum()) == B * dim
        assert int((theirs_2d - mine_2d).abs().sum()) <= 1e-5 * B * dim, t

        before = [p.detach().clone() for p in params]
        opt.step()
        # update_size is stored under the step whose update it measures
        if t < STEPS - 1:
            for name, p, p_t in zip(names, params, before, strict=True):
                assert rel_close(out[(t, "update_size", name)], float((p.detach() - p_t).norm()),
                                 1e-5, 1e-8), (t, name)
    # the last step's update has no end point inside the run
    assert not any(s == STEPS - 1 and q == "update_size" for (s, q, _) in out)

    # the harness leaves a plain model behind: same weights as the replay, no BackPACK hooks
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert not any(getattr(m, "_backpack_extend", False) for m in model.modules())
