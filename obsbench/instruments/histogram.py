"""Histograms of per-sample gradient elements, without materialising what need not be.

Binning follows ``torch.histc`` (and so Cockpit's ``GradHist1d``, Schneider, Dangel & Hennig,
NeurIPS 2021, ``cockpit/quantities/grad_hist.py``): values are clipped into ``[lo, hi]`` and
element ``x`` falls into bin ``floor((x - lo) * (bins / (hi - lo)))``, the value ``hi`` into
the last bin. Every function here bins with :func:`bin_index`, so all ways of computing a
histogram give identical counts (``torch.histc`` may differ for values within round-off of
a bin edge).

The per-sample gradient of a linear layer's weight is an outer product,
``g_n = u_n v_n^T`` (``u_n`` the output gradient, ``v_n`` the input of sample ``n``), so the
``B * out * in`` elements of a batch need not exist at once, nor at all: with ``v_n`` sorted,
the products ``u_ni * v_nj`` of one row ``i`` are monotone in ``j``, and so are their bin
indices (floating-point multiplication and :func:`bin_index` are monotone). A row whose
smallest and largest product share a bin adds ``in`` to that bin; for the other rows a
vectorised binary search finds, for each bin boundary inside the row's range, how many
products lie above it. The cost is ``O(B (out + in log in) + M log in)`` for ``M`` boundary
crossings (a handful per row for gradient-sized values) instead of ``O(B out in)``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor


def bin_index(x: Tensor, lo: float, hi: float, bins: int, dtype: torch.dtype = torch.int64
              ) -> Tensor:
    """Bin of every element of ``x``, clipping values outside ``[lo, hi]`` (NaN: bin 0)."""
    scaled = (x.clamp(lo, hi) - lo) * (bins / (hi - lo))
    return scaled.to(dtype).clamp_(0, bins - 1)  # truncation is floor: scaled >= 0


@functools.lru_cache(maxsize=64)
def _thresholds(lo: float, hi: float, bins: int, dtype: torch.dtype) -> Tensor:
    """``t[k]``: the smallest value of ``dtype`` whose :func:`bin_index` is ``>= k``
    (``k = 0..bins``; ``t[0] = -inf``, ``t[bins] = +inf``), so that ``bin_index(x) >= k``
    is exactly ``x >= t[k]``."""
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).to(dtype)
    ks = torch.arange(bins + 1)
    interior = (ks > 0) & (ks < bins)  # the outer two become -inf and +inf below
    inf = torch.tensor(float("inf"), dtype=dtype)
    for _ in range(64):  # nudge every interior edge to the exact first value of its bin
        below = (bin_index(edges, lo, hi, bins) < ks) & interior
        lower = torch.nextafter(edges, -inf)
        too_high = (bin_index(lower, lo, hi, bins) >= ks) & interior
        if not bool(below.any() or too_high.any()):
            break
        edges = torch.where(below, torch.nextafter(edges, inf), torch.where(too_high, lower,
                                                                              edges))
    edges[0], edges[-1] = -inf, inf
    return edges


def histogram(x: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Counts (int64, ``bins``) of all elements of ``x``."""
    index = bin_index(x.reshape(-1), lo, hi, bins, torch.int32)  # int32: half the traffic
    return torch.bincount(index, minlength=bins)


def histogram2d(x: Tensor, y: Tensor, x_limits: tuple[float, float], x_bins: int,
                y_limits: tuple[float, float], y_bins: int) -> Tensor:
    """Counts (int64, ``x_bins x y_bins``) of the pairs ``(x_k, y_k)``; ``y`` broadcasts."""
    ix = bin_index(x, *x_limits, x_bins)
    iy = bin_index(y, *y_limits, y_bins).expand_as(ix)
    flat = (ix * y_bins + iy).reshape(-1)
    return torch.bincount(flat, minlength=x_bins * y_bins).view(x_bins, y_bins)


def _sorted_rows(v: Tensor) -> Tensor:
    """Each row sorted ascending (NumPy's sort is 10x faster than torch's on the CPU)."""
    if v.device.type != "cpu":
        return v.sort(dim=1).values
    return torch.from_numpy(np.sort(v.detach().numpy(), axis=1))


def outer_histogram(u: Tensor, v: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Counts of all elements of the outer products ``u[n] (x) v[n]`` over the batch.

    Args:
        u: ``(B, R)`` row factors.
        v: ``(B, S)`` column factors.

    Equal to ``histogram(u[:, :, None] * v[:, None, :], lo, hi, bins)`` but computed from
    the sorted columns (see the module docstring).
    """
    if u.shape[1] > v.shape[1]:  # search along the longer factor, enumerate the shorter
        u, v = v, u
    batch, cols = v.shape
    counts = torch.zeros(bins, dtype=torch.long, device=u.device)
    if batch == 0 or cols == 0 or u.shape[1] == 0:
        return counts
    v_sorted = _sorted_rows(v)
    first = bin_index(u * v_sorted[:, :1], lo, hi, bins)
    last = bin_index(u * v_sorted[:, -1:], lo, hi, bins)
    low, high = torch.minimum(first, last), torch.maximum(first, last)
    # Rows whose products share one bin, and the lowest bin of every other row, start with
    # all `cols` products; the crossings below move counts up to the higher bins.
    counts.index_add_(0, low.reshape(-1), torch.full((low.numel(),), cols, dtype=torch.long,
                                                     device=u.device))
    spans = (high - low).reshape(-1)
    crossing_rows = spans.nonzero().squeeze(1)
    if crossing_rows.numel() == 0:
        return counts
    # One entry per (row, boundary k) with low < k <= high.
    repeats = spans[crossing_rows]
    rows = crossing_rows.repeat_interleave(repeats)
    offsets = torch.arange(rows.numel(), device=u.device) - (
        repeats.cumsum(0) - repeats).repeat_interleave(repeats)
    boundary = low.reshape(-1)[rows] + 1 + offsets
    threshold = _thresholds(lo, hi, bins, u.dtype).to(u.device)[boundary]
    base = rows // u.shape[1] * cols  # where each row's sample starts in the flat columns
    flat = v_sorted.reshape(-1)
    factor = u.reshape(-1)[rows]
    # Binary search for the first sorted position whose product is on the "below" side when
    # descending, on the "above" side when ascending: with flipped signs both are "first
    # position where -/+ product >= threshold" and the predicate is one comparison.
    ascending = factor > 0  # products rise with the sorted columns (fall for factor < 0)
    left = torch.zeros_like(rows)
    right = torch.full_like(rows, cols)
    for _ in range(max(1, cols).bit_length()):
        mid = (left + right) // 2
        value = factor * flat[base + mid.clamp(max=cols - 1)]
        go_right = (value < threshold) == ascending
        active = left < right
        left = torch.where(active & go_right, mid + 1, left)
        right = torch.where(active & ~go_right, mid, right)
    # Products in bins >= boundary: after the search point when ascending, before it else.
    at_or_above = torch.where(ascending, cols - left, left)
    counts.index_add_(0, boundary, at_or_above)
    counts.index_add_(0, boundary - 1, -at_or_above)
    return counts
