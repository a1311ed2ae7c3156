"""Every instrument quantity against a slow float64 brute force.

The reference loops over samples for per-sample gradients, assembles the explicit Hessian,
and fits alpha by an independent weighted least-squares solve; it shares no code with
obsbench's engine (closed forms, torch.func, histograms without materialising). Models cover
every path of the engine: linear layers (closed forms), convolutions (unfold), LayerNorm and
a TransformerEncoderLayer (torch.func; Cockpit cannot run them), a layer used twice, and an
L2 penalty.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from obsbench.instruments import QUANTITIES, TOTAL, preset, quantity
from obsbench.instruments.monitor import Monitor

B, CLASSES, STEPS = 8, 3, 3
ALL = [k for k in QUANTITIES if k not in ("time", "cabs", "early_stopping")]


class Twice(nn.Module):
    """A layer applied twice (shared weights): per-sample closed forms do not apply."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, CLASSES)),
                (12,)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(32, CLASSES)), (1, 6, 6)),
        "layernorm": (nn.Sequential(nn.Linear(12, 8), nn.LayerNorm(8), nn.Tanh(),
                                    nn.Linear(8, CLASSES)), (12,)),
        "transformer": (nn.Sequential(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), Pool(),
            nn.Linear(8, CLASSES)), (4, 8)),
        "shared": (Twice(), (6,)),
    }


def _ce(out: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    assert y is not None
    return nn.functional.cross_entropy(out, y, reduction="none")


def _batches(shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(B, *shape, generator=g, dtype=torch.float64),
             torch.randint(0, CLASSES, (B,), generator=g)) for _ in range(STEPS + 1)]


def _train(model: nn.Module, batches: list, optimizer_cls: type, l2: float,
           monitor: Monitor | None) -> list[dict[str, torch.Tensor]]:
    """A few steps; returns the parameters before every step (and after the last)."""
    params = [p for p in model.parameters()]
    opt = optimizer_cls(params, lr=0.05)
    if monitor is not None:
        monitor.optimizer = opt
    history = []
    for step, (x, y) in enumerate(batches):
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.zero_grad()
        if monitor is not None:
            monitor.before_forward(step)
        losses = _ce(model(x), y)
        loss = losses.mean() + 0.5 * l2 * sum(p.square().sum() for p in params if p.dim() > 1)
        loss.backward()
        if monitor is not None:
            monitor.after_backward(step, x, y, losses, loss)
        opt.step()
        if monitor is not None:
            monitor.after_step(step)
    history.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return history


def _flat_loss(model: nn.Module, x, y, l2: float):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def f(flat: torch.Tensor) -> torch.Tensor:
        chunks, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = math.prod(s)
            chunks[n] = flat[i:i + k].view(s)
            i += k
        out = torch.func.functional_call(model, chunks, (x,))
        reg = 0.5 * l2 * sum(chunks[n].square().sum() for n in names if chunks[n].dim() > 1)
        return _ce(out, y).mean() + reg
    return f


def _reference(model: nn.Module, history, batches, l2: float, lr: float = 0.05) -> dict:
    """Every quantity at every step, by brute force (float64)."""
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    out: dict = {}
    fits = []
    for step in range(STEPS):
        x, y = batches[step]
        theta = history[step]
        model.load_state_dict(theta, strict=False)
        params = list(model.parameters())
        per_sample, losses = [], []
        for n in range(B):
            ln = _ce(model(x[n:n + 1]), y[n:n + 1]).sum()
            reg = 0.5 * l2 * sum(p.square().sum() for p in params if p.dim() > 1)
            losses.append(float(ln.detach()))
            per_sample.append(torch.cat([g.reshape(-1) for g in
                                         torch.autograd.grad(ln + reg, params)]))
        G = torch.stack(per_sample)  # (B, D)
        g = G.mean(0)
        losses_t = torch.tensor(losses, dtype=torch.float64)
        loss = float(losses_t.mean()) + float(0.5 * l2 * sum(
            p.square().sum() for p in params if p.dim() > 1))
        flat = torch.cat([theta[n].reshape(-1) for n in names])
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernel has no 2nd derivative
            H = torch.autograd.functional.hessian(_flat_loss(model, x, y, l2), flat)
        diag = H.diagonal()
        g2, n2, dots = float(g @ g), float(G.square().sum()), G @ g
        split = lambda v: dict(zip(names, torch.split(v, sizes), strict=True))  # noqa: E731
        ev = torch.linalg.eigvalsh(H)
        s = torch.cat([(history[step + 1][n] - theta[n]).reshape(-1) for n in names])
        sum_sq = G.square().sum(0)
        ref = {
            ("loss", TOTAL): loss,
            ("norm_test", TOTAL): math.sqrt((n2 - B * g2) / (B * (B - 1)) / g2),
            ("inner_test", TOTAL): math.sqrt(
                (float(dots.square().sum()) - B * g2**2) / (B * (B - 1)) / g2**2),
            ("ortho_test", TOTAL): math.sqrt(
                (n2 - float(dots.square().sum()) / g2) / (B * (B - 1)) / g2),
            ("hess_max_ev", TOTAL): float(ev[ev.abs().argmax()]),
            ("tic_diag", TOTAL): float((sum_sq / B / (diag + 1e-7)).sum()),
            ("tic_trace", TOTAL): n2 / B / (float(diag.sum()) + 1e-7),
            ("mean_gsnr", TOTAL): float((g.square() / (sum_sq / B - g.square() + 1e-5)).mean()),
            ("cabs", TOTAL): lr * float((sum_sq - B * g.square()).sum()) / (B * loss),
            ("early_stopping", TOTAL): 1 - B * float(
                (g.square() / ((sum_sq - B * g.square()) / (B - 1) + 1e-5)).mean()),
        }
        for key, vec in (("grad_norm", g), ("update_size", s),
                         ("distance", flat - torch.cat([history[0][n].reshape(-1)
                                                        for n in names]))):
            parts = split(vec)
            ref.update({(key, n): float(v.norm()) for n, v in parts.items()})
            ref[(key, TOTAL)] = float(vec.norm())
        ref.update({("hess_trace", n): float(d.sum()) for n, d in split(diag).items()})
        ref[("hess_trace", TOTAL)] = float(diag.sum())
        clipped = G.clamp(-2, 2)
        ref[("grad_hist_1d", TOTAL)] = torch.histc(clipped, 100, -2, 2).long().tolist()
        # elements within round-off of a bin edge may land on either side (e.g. gradients
        # that are zero in exact arithmetic, such as attention's key bias)
        ref[("grad_hist_1d", "ambiguous")] = _near_edge(G, -2, 2, 100)
        ref[("grad_hist_2d", "ambiguous")] = _near_edge(G, -1, 1, 40) + B * _near_edge(
            flat, -2, 2, 50)
        theta_b = flat.expand(B, -1)
        h2, _, _ = np.histogram2d(G.clamp(-1 + 1 / 40, 1 - 1 / 40).reshape(-1).numpy(),
                                  theta_b.clamp(-2 + 2 / 50, 2 - 2 / 50).reshape(-1).numpy(),
                                  bins=(40, 50), range=((-1, 1), (-2, 2)))
        ref[("grad_hist_2d", TOTAL)] = h2.astype(int).reshape(-1).tolist()
        tau = float(s.norm())
        slopes = G @ s / tau
        fits.append((loss, float(losses_t.var()), float(slopes.mean()), float(slopes.var()),
                     tau, G, losses_t))
        out[step] = ref
    # alpha of step t: the start observations of t, the end observations at t + 1
    for step in range(STEPS - 1):
        f0, vf0, df0, vdf0, tau, _, _ = fits[step]
        s = torch.cat([(history[step + 1][n] - history[step][n]).reshape(-1) for n in names])
        _, _, _, _, _, G1, losses1 = fits[step + 1]
        f1 = fits[step + 1][0]
        slopes1 = G1 @ s / tau
        obs = np.array([f0, f1, df0, float(slopes1.mean())])
        var = np.array([vf0, float(losses1.var()), vdf0, float(slopes1.var())])
        design = np.array([[1, 0, 0], [1, tau, tau**2], [0, 1, 0], [0, 1, 2 * tau]])
        w = 1 / np.sqrt(var)
        mu = np.linalg.lstsq(design * w[:, None], obs * w, rcond=None)[0]
        out[step][("alpha", TOTAL)] = -1.0 if mu[2] < 0 else 2 * tau / (-mu[1] / mu[2]) - 1
    return out


def _near_edge(x: torch.Tensor, lo: float, hi: float, bins: int) -> int:
    position = (x - lo) * bins / (hi - lo)
    return int(((position - position.round()).abs() < 1e-9).sum())


def _measured(monitor: Monitor) -> dict:
    got: dict = {}
    for v in monitor.values:
        got.setdefault(v.step, {})[(v.quantity, v.layer)] = (
            v.hist.counts if v.hist is not None else v.value)
    return got


CASES = [("mlp", torch.optim.SGD, 0.0), ("mlp", torch.optim.Adam, 0.0),
         ("mlp", torch.optim.SGD, 0.1), ("cnn", torch.optim.SGD, 0.0),
         ("layernorm", torch.optim.Adam, 0.0), ("transformer", torch.optim.SGD, 0.0),
         ("shared", torch.optim.SGD, 0.0)]


@pytest.mark.parametrize(("name", "optimizer", "l2"), CASES,
                         ids=[f"{n}-{o.__name__}-l2={l2}" for n, o, l2 in CASES])
def test_every_quantity_matches_float64_brute_force(name, optimizer, l2):
    model, shape = _models()[name]
    model = model.double()
    batches = _batches(shape)
    kinds = ALL + (["cabs", "early_stopping"] if optimizer is torch.optim.SGD else [])
    options: dict[str, dict] = {"grad_hist_1d": {"layerwise": True},
                                "grad_hist_2d": {"layerwise": True},
                                "hess_max_ev": {"rtol": 1e-12, "atol": 1e-12, "max_iter": 20000}}
    specs = [quantity(k, **options.get(k, {})) for k in kinds]
    monitor = Monitor(model, _ce, specs, l2_reg=l2, max_elements=100)  # small torch.func chunks
    initial = copy.deepcopy(model)
    history = _train(model, batches, optimizer, l2, monitor)
    got = _measured(monitor)
    ref = _reference(initial, history, batches, l2)
    for step in range(STEPS):
        for key, expected in ref[step].items():
            if key[0] == "alpha" and step == STEPS - 1:
                continue
            if key[0] in ("cabs", "early_stopping") and optimizer is not torch.optim.SGD:
                continue
            if key[1] == "ambiguous":
                continue
            value = got[step][key]
            if isinstance(expected, list):
                assert sum(value) == sum(expected), (step, key)
                moved = np.abs(np.subtract(value, expected)).sum()
                assert moved <= 2 * ref[step][(key[0], "ambiguous")], (step, key)
            elif key[0] == "hess_max_ev":  # power iteration run to convergence
                assert value == pytest.approx(expected, rel=1e-6), (step, key)
            else:
                assert value == pytest.approx(expected, rel=1e-6, abs=1e-12), (step, key)
    # per-layer histograms add up to the network-wide one
    layers = [v for k, v in got[0].items() if k[0] == "grad_hist_1d" and k[1] != TOTAL]
    assert np.sum(layers, axis=0).tolist() == got[0][("grad_hist_1d", TOTAL)]


def test_monitor_changes_nothing():
    """Same parameters, gradients, optimizer state and random stream with the full preset."""
    def run(with_monitor: bool):
        model, shape = _models()["layernorm"]
        torch.manual_seed(3)
        batches = _batches(shape)
        model = model.double()
        monitor = Monitor(model, _ce, preset("full")) if with_monitor else None
        _train(model, batches, torch.optim.Adam, 0.0, monitor)
        return [p.detach().clone() for p in model.parameters()], torch.rand(3)

    (p1, r1), (p2, r2) = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))
    assert torch.equal(r1, r2)


def test_sgd_only_quantities_refuse_other_optimizers():
    model, shape = _models()["mlp"]
    monitor = Monitor(model.double(), _ce, [quantity("cabs")])
    with pytest.raises(ValueError, match=r"cabs is derived for plain SGD.*Adam"):
        _train(model, _batches(shape), torch.optim.Adam, 0.0, monitor)


def test_batchnorm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d in training mode"):
        Monitor(model, _ce, [quantity("norm_test")])
    Monitor(model, _ce, [quantity("grad_norm")])  # first-order without samples is fine


def test_schedules():
    every = quantity("grad_norm", every=4)
    assert [s for s in range(10) if every.due(s)] == [0, 4, 8]
    log = quantity("alpha", log={"end": 3, "points": 4, "base": 10})
    assert sorted(log.log.steps) == [0, 1, 10, 100, 1000]
    with pytest.raises(ValueError, match="either `every` or `log`"):
        quantity("loss", every=2, log={"end": 2})


@pytest.mark.parametrize(("name", "optimizer"), [("mlp", torch.optim.SGD),
                                                  ("cnn", torch.optim.Adam),
                                                  ("transformer", torch.optim.SGD)])
def test_sparse_schedules_measure_what_dense_ones_do(name, optimizer):
    """Tracked every other step, the values equal those tracked every step; alpha then ends
    at an unscheduled step, whose projections run on the update alone."""
    kinds = [k for k in ALL if k not in ("hess_max_ev", "grad_hist_1d", "grad_hist_2d")]
    got = []
    for every in (1, 2):
        model, shape = _models()[name]
        monitor = Monitor(model.double(), _ce, [quantity(k, every=every) for k in kinds])
        _train(model, _batches(shape), optimizer, 0.0, monitor)
        got.append(_measured(monitor))
    assert sorted(got[1]) == [0, 2]
    for step, values in got[1].items():
        assert values.keys() == got[0][step].keys()
        assert ("alpha", TOTAL) in values
        for key, value in values.items():
            assert value == pytest.approx(got[0][step][key], rel=1e-9, abs=1e-14), (step, key)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_closed_forms_and_torch_func_agree(name):
    """Layer closed forms (per-sample statistics, GGN diagonal) equal the generic path."""
    kinds = [k for k in ALL if k != "hess_max_ev"]
    options: dict[str, dict] = {k: {"curvature": "ggn"} for k in ("hess_trace", "tic_diag",
                                                                    "tic_trace")}
    options.update({k: {"layerwise": True} for k in ("grad_hist_1d", "grad_hist_2d")})
    got = []
    for closed in (True, False):
        model, shape = _models()[name]
        model = model.double()
        specs = [quantity(k, **options.get(k, {})) for k in kinds]
        monitor = Monitor(model, _ce, specs, closed_forms=closed)
        _train(model, _batches(shape), torch.optim.Adam, 0.0, monitor)
        got.append(_measured(monitor))
    assert got[0].keys() == got[1].keys()
    for step, values in got[0].items():
        assert values.keys() == got[1][step].keys()
        for key, value in values.items():
            other = got[1][step][key]
            if isinstance(value, list):
                assert sum(value) == sum(other), key
            else:
                assert value == pytest.approx(other, rel=1e-9, abs=1e-14), (step, key)


@pytest.mark.parametrize(("name", "covered"), [("mlp", True), ("cnn", True),
                                               ("layernorm", False), ("shared", False)])
def test_ggn_from_layer_factors_matches_the_generic_ggn(name, covered):
    from obsbench.instruments.curvature import ggn_diagonal
    from obsbench.instruments.persample import Capture, Functional, ggn_diagonal_layers

    model, shape = _models()[name]
    model = model.double()
    x, y = _batches(shape)[0]
    params = dict(model.named_parameters())
    fast = ggn_diagonal_layers(Capture(model, params), Functional(model, _ce), params, x, y)
    assert (fast is not None) == covered
    if fast is not None:
        slow = ggn_diagonal(lambda p, xs: torch.func.functional_call(model, p, (xs,)), _ce,
                            params, x, y)
        for n in params:
            torch.testing.assert_close(fast[n], slow[n], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("conv", [
    nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2),
    nn.Conv2d(1, 2, (2, 3), stride=(3, 1)), nn.Conv3d(1, 2, 2, stride=2)],
    ids=["conv1d", "conv2d-dilated", "conv2d-uneven", "conv3d"])
def test_per_sample_convolution_gradients(conv):
    from obsbench.instruments.persample import _conv_weight_grads

    conv = conv.double()
    a = torch.randn(4, conv.in_channels, *[7] * (conv.weight.dim() - 2), dtype=torch.float64)
    dz = torch.randn_like(conv(a))
    expected = torch.stack([torch.autograd.grad(conv(a[n:n + 1]), conv.weight, dz[n:n + 1])[0]
                            for n in range(4)])
    torch.testing.assert_close(_conv_weight_grads(conv, a, dz), expected, rtol=1e-12,
                               atol=1e-12)
