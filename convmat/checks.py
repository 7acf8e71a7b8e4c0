"""Checks: the identities of one geometry (the adjoint test lives in :mod:`convmat.adjoint`).

:func:`check_geometry` runs every check convmat knows on one convolution
geometry and returns printable rows (used by ``convmat check``).

This module reads from the layers below it (build, operator, factors); nothing
below imports it.  PyTorch is imported lazily, only when present and asked for.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from .adjoint import AdjointTestResult, adjoint_test
from .operator import ConvOperator

__all__ = ["AdjointTestResult", "adjoint_test", "check_geometry"]


# --------------------------------------------------------------------------- #
# every check of one geometry
# --------------------------------------------------------------------------- #
def _symmetric_or_pairs(pads):
    """Per-axis ints when every axis is symmetric, else the (lo, hi) pairs."""
    if all(lo == hi for lo, hi in pads):
        return tuple(lo for lo, _ in pads)
    return tuple(pads)


def _max_abs(a) -> float:
    a = np.asarray(a)
    return float(np.abs(a).max()) if a.size else 0.0


def _sparse_diff(P, Q) -> float:
    if P.shape != Q.shape:
        return math.inf
    return _max_abs((P - Q).toarray()) if max(P.shape) <= 4096 else float(abs(P - Q).max())


def check_geometry(
    weight_shape,
    in_shape,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    transposed=False,
    output_padding=0,
    seed=0,
    torch_compare=True,
):
    """Run every check on one convolution geometry, with random integer weights.

    Parameters
    ----------
    weight_shape : tuple of int
        ``(C_out, C_in/groups, *k)``, or ``(C_in, C_out/groups, *k)`` when ``transposed``.
    in_shape : tuple of int
        Spatial input shape of the operation.
    stride, padding, dilation, groups, padding_mode, transposed, output_padding
        As :class:`ConvOperator`.
    seed : int
        Seed of the weights (integers in [-3, 3]) and of the test vectors.
    torch_compare : bool
        Compare with PyTorch when it is installed (1 to 3 spatial axes).

    Returns
    -------
    list of (name, value, tolerance, passed)
        ``tolerance`` is None for informational rows.  The rows:

        * ``nnz``: the matrix's non-zeros (informational);
        * ``adjoint test``: the normalised error of :func:`adjoint_test`;
        * ``recipe C^T = K_flip P Z`` (zeros padding): max difference between
          the transposed matrix and :func:`convmat.factors.transpose_by_recipe`
          (exact: 0 with integer weights);
        * ``padding C = K P_mode`` (other modes): max difference between ``C``
          and ``K @ padding_matrix(...)``;
        * ``torch forward``, ``torch adjoint (autograd)`` and, when PyTorch can
          express it, ``torch conv_transpose``: max abs differences.

    Examples
    --------
    >>> rows = check_geometry((2, 1, 3, 3), (6, 5), stride=2, padding=1, torch_compare=False)
    >>> [name for name, *_ in rows]
    ['nnz', 'adjoint test', 'recipe C^T = K_flip P Z']
    >>> all(passed for *_, passed in rows)
    True
    """
    rng = np.random.default_rng(seed)
    weight = rng.integers(-3, 4, size=tuple(weight_shape)).astype(np.float64)
    op = ConvOperator(
        weight, in_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, transposed=transposed, output_padding=output_padding,
    )
    geom = op.plan.geometry
    rows = [("nnz", op.nnz, None, True)]

    res = adjoint_test(op, rng=rng)
    rows.append(("adjoint test", res.max_error, res.tolerance, res.passed))
    rows.append(_identity_row(op, weight, geom, transposed, output_padding, stride, dilation, groups))
    if torch_compare and importlib.util.find_spec("torch") is not None and 1 <= geom.ndim <= 3:
        rows.extend(_torch_rows(op, weight, geom, transposed, output_padding, dilation, groups, rng))
    return rows


def _identity_row(op, weight, geom, transposed, output_padding, stride, dilation, groups):
    from . import factors  # written alongside; imported lazily
    from .geometry import normalize_per_axis, restoring_output_padding

    if geom.padding_mode == "zeros":
        name = "recipe C^T = K_flip P Z"
        if transposed:
            T = op.matrix
            spatial = op.in_shape[1:]
            a = normalize_per_axis(output_padding, "output_padding", geom.ndim)
            # the forward geometry of a transposed plan holds (lo, hi + a)
            pads = _symmetric_or_pairs(tuple((lo, hi - aa) for (lo, hi), aa in zip(geom.padding, a)))
        else:
            T = op.matrix.T.tocsr()
            spatial = op.out_shape[1:]
            pads = _symmetric_or_pairs(geom.padding)
            a = restoring_output_padding(
                geom.in_shape, geom.kernel_size, stride=geom.stride, padding=geom.padding, dilation=geom.dilation
            )
        R = factors.transpose_by_recipe(
            weight, spatial, stride=stride, padding=pads, output_padding=a, dilation=dilation, groups=groups
        )
        diff = _sparse_diff(T, R)
    else:
        name = f"padding C = K P_{geom.padding_mode}"
        P = factors.padding_matrix(
            geom.in_shape, geom.padding, mode=geom.padding_mode, channels=geom.in_channels, dtype=op.dtype
        )
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(geom.in_shape, geom.padding))
        from .build import conv_matrix

        K = conv_matrix(weight, padded, stride=stride, padding=0, dilation=dilation, groups=groups, dtype=op.dtype)
        diff = _sparse_diff(op.matrix, (K @ P).tocsr())
    return (name, diff, 0.0, bool(diff == 0.0))


def _torch_rows(op, weight, geom, transposed, output_padding, dilation, groups, rng):
    import torch
    import torch.nn.functional as F

    D = geom.ndim
    conv = (F.conv1d, F.conv2d, F.conv3d)[D - 1]
    conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[D - 1]
    w = torch.from_numpy(weight)
    stride_t = tuple(geom.stride)
    dil_t = tuple(geom.dilation)
    rows = []

    def tol(ref):
        return 1e-9 * (1.0 + float(np.abs(ref).max(initial=0.0)))

    def row(name, ours, ref):
        d = _max_abs(ours - ref)
        t = tol(ref)
        rows.append((name, d, t, bool(d <= t)))

    x = rng.integers(-4, 5, size=(2,) + op.in_shape).astype(np.float64)
    v = rng.integers(-4, 5, size=(2,) + op.out_shape).astype(np.float64)
    if not transposed:
        pad = [p for lo, hi in reversed(geom.padding) for p in (lo, hi)]
        mode = "constant" if geom.padding_mode == "zeros" else geom.padding_mode
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = conv(F.pad(xt, pad, mode=mode), w, stride=stride_t, dilation=dil_t, groups=groups)
        row("torch forward", op.apply(x), yt.detach().numpy())
        (g,) = torch.autograd.grad(yt, xt, grad_outputs=torch.from_numpy(v))
        row("torch adjoint (autograd)", op.apply_adjoint(v), g.numpy())
        if geom.padding_mode == "zeros" and all(lo == hi for lo, hi in geom.padding):
            from .geometry import restoring_output_padding

            a = restoring_output_padding(
                geom.in_shape, geom.kernel_size, stride=geom.stride, padding=geom.padding, dilation=geom.dilation
            )
            ref = conv_t(
                torch.from_numpy(v), w, stride=stride_t, padding=tuple(lo for lo, _ in geom.padding),
                output_padding=a, dilation=dil_t, groups=groups,
            )
            row("torch conv_transpose", op.apply_adjoint(v), ref.numpy())
    else:
        pads = geom.padding  # forward geometry: (lo, hi + a)
        from .geometry import normalize_per_axis

        a = normalize_per_axis(output_padding, "output_padding", D)
        lo = tuple(p for p, _ in pads)
        hi = tuple(h - aa for (_, h), aa in zip(pads, a))
        if lo == hi:
            ref = conv_t(
                torch.from_numpy(x), w, stride=stride_t, padding=lo, output_padding=a, dilation=dil_t, groups=groups
            )
            row("torch conv_transpose", op.apply(x), ref.numpy())
        # The adjoint of the transposed convolution is the forward convolution, first n outputs per axis.
        padded = F.pad(torch.from_numpy(v), [p for l_, h_ in reversed(tuple(zip(lo, hi))) for p in (l_, h_)])
        ref = conv(padded, w, stride=stride_t, dilation=dil_t, groups=groups)
        ref = ref[(slice(None), slice(None)) + tuple(slice(0, n) for n in op.in_shape[1:])]
        row("torch conv (adjoint)", op.apply_adjoint(v), ref.numpy())
    return rows
