"""Histograms of per-sample gradient elements, without materialising what need not be.

Binning follows ``torch.histc`` (and so Cockpit's ``GradHist1d``, Schneider, Dangel & Hennig,
NeurIPS 2021, ``cockpit/quantities/grad_hist.py``): values are clipped into ``[lo, hi]`` and
element ``x`` falls into bin ``floor((x - lo) * bins / (hi - lo))``, the value ``hi`` into the
last bin. Every function here bins with :func:`bin_index`, so all ways of computing a
histogram give identical counts.

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

import torch
from torch import Tensor


def bin_index(x: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Bin of every element of ``x`` (int64), clipping values outside ``[lo, hi]``."""
    index = ((x - lo) * bins / (hi - lo)).floor_()
    return index.clamp_(0, bins - 1).long()


def histogram(x: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Counts (int64, ``bins``) of all elements of ``x``."""
    return torch.bincount(bin_index(x.reshape(-1), lo, hi, bins), minlength=bins)


def histogram2d(x: Tensor, y: Tensor, x_limits: tuple[float, float], x_bins: int,
                y_limits: tuple[float, float], y_bins: int) -> Tensor:
    """Counts (int64, ``x_bins x y_bins``) of the pairs ``(x_k, y_k)``; ``y`` broadcasts."""
    ix = bin_index(x, *x_limits, x_bins)
    iy = bin_index(y, *y_limits, y_bins).expand_as(ix)
    flat = (ix * y_bins + iy).reshape(-1)
    return torch.bincount(flat, minlength=x_bins * y_bins).view(x_bins, y_bins)


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
    v_sorted = v.sort(dim=1).values
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
    sample = rows // u.shape[1]
    factor = u.reshape(-1)[rows]
    ascending = factor > 0  # products rise with the sorted columns (fall for factor < 0)
    # Binary search for the first sorted position whose product bin is on the "above" side.
    left = torch.zeros_like(rows)
    right = torch.full_like(rows, cols)
    while bool((left < right).any()):
        mid = (left + right) // 2
        value = factor * v_sorted[sample, mid.clamp(max=cols - 1)]
        above = bin_index(value, lo, hi, bins) >= boundary
        go_right = torch.where(ascending, ~above, above) & (left < right)
        left = torch.where(go_right, mid + 1, left)
        right = torch.where(go_right | (left >= right), right, mid)
    # Products in bins >= boundary: after the search point when ascending, before it else.
    at_or_above = torch.where(ascending, cols - left, left)
    counts.index_add_(0, boundary, at_or_above)
    counts.index_add_(0, boundary - 1, -at_or_above)
    return counts
