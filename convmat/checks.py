"""Checks: the identities of one geometry (the adjoint test lives in :mod:`convmat.adjoint`).

:func:`check_geometry` runs every check convmat knows on one convolution
geometry and returns printable rows (used by ``convmat check``).

This module reads from the layers below it (build, operator, factors); nothing
below imports it.  PyTorch, the independent oracle, is imported only when it
is installed and asked for.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from .adjoint import AdjointTestResult, adjoint_test
from ._operator_parts import plan_from_keywords
from .build import conv_matrix
from .factors import padding_matrix, transpose_by_recipe
from .geometry import restoring_output_padding
from .operator import ConvOperator
from .plan import ConvPlan

__all__ = ["AdjointTestResult", "adjoint_test", "check_geometry"]


# --------------------------------------------------------------------------- #
# every check of one geometry
# --------------------------------------------------------------------------- #
def _max_abs(a) -> float:
    a = np.asarray(a)
    return float(np.abs(a).max()) if a.size else 0.0


def _sparse_diff(P, Q) -> float:
    if P.shape != Q.shape:
        return math.inf
    return _max_abs((P - Q).toarray()) if max(P.shape) <= 4096 else float(abs(P - Q).max())


def check_geometry(plan, in_shape=None, *, seed=0, torch_compare=True, transposed=False, **geometry):
    """Run every check on one convolution geometry, with random integer weights.

    Parameters
    ----------
    plan : ConvPlan, or tuple of int
        The geometry, from :func:`convmat.conv_plan` or
        :func:`convmat.conv_transpose_plan`.  Or a weight shape, with
        ``in_shape``, ``transposed`` and the keywords of ``conv_plan``
        (``conv_transpose_plan`` when ``transposed``), which make the plan.
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
    >>> from convmat import conv_plan
    >>> rows = check_geometry(conv_plan((2, 1, 3, 3), (6, 5), stride=2, padding=1), torch_compare=False)
    >>> [name for name, *_ in rows]
    ['nnz', 'adjoint test', 'recipe C^T = K_flip P Z']
    >>> all(passed for *_, passed in rows)
    True
    """
    if not isinstance(plan, ConvPlan):
        plan = plan_from_keywords(tuple(plan), in_shape, transposed=transposed, **geometry)
    elif in_shape is not None or geometry or transposed:
        raise TypeError("check_geometry takes a ConvPlan alone, or a weight shape with in_shape and keywords")
    rng = np.random.default_rng(seed)
    weight = rng.integers(-3, 4, size=plan.weight_shape).astype(np.float64)
    op = ConvOperator.from_plan(plan, weight)
    rows = [("nnz", op.nnz, None, True)]

    res = adjoint_test(op, rng=rng)
    rows.append(("adjoint test", res.max_error, res.tolerance, res.passed))
    rows.append(_identity_row(op, weight, plan))
    if torch_compare and importlib.util.find_spec("torch") is not None and 1 <= plan.ndim <= 3:
        rows.extend(_torch_rows(op, weight, plan, rng))
    return rows


def _identity_row(op, weight, plan):
    geom = plan.geometry
    kw = dict(stride=geom.stride, dilation=geom.dilation, groups=geom.groups)
    if geom.padding_mode == "zeros":
        name = "recipe C^T = K_flip P Z"
        if plan.transposed:
            T, spatial, a = op.matrix, plan.input_shape[1:], geom.output_padding
        else:
            T, spatial = op.matrix.T.tocsr(), plan.output_shape[1:]
            a = restoring_output_padding(
                geom.in_shape, geom.kernel_size, stride=geom.stride, padding=geom.padding, dilation=geom.dilation
            )
        R = transpose_by_recipe(weight, spatial, padding=geom.padding, output_padding=a, **kw)
        diff = _sparse_diff(T, R)
    else:
        name = f"padding C = K P_{geom.padding_mode}"
        P = padding_matrix(geom.in_shape, geom.padding, mode=geom.padding_mode, channels=geom.in_channels, dtype=op.dtype)
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(geom.in_shape, geom.padding))
        K = conv_matrix(weight, padded, dtype=op.dtype, **kw)
        diff = _sparse_diff(op.matrix, (K @ P).tocsr())
    return (name, diff, 0.0, bool(diff == 0.0))


def _torch_rows(op, weight, plan, rng):
    import torch
    import torch.nn.functional as F

    geom = plan.geometry
    groups = geom.groups
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
    if not plan.transposed:
        pad = [p for lo, hi in reversed(geom.padding) for p in (lo, hi)]
        mode = "constant" if geom.padding_mode == "zeros" else geom.padding_mode
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = conv(F.pad(xt, pad, mode=mode), w, stride=stride_t, dilation=dil_t, groups=groups)
        row("torch forward", op.apply(x), yt.detach().numpy())
        (g,) = torch.autograd.grad(yt, xt, grad_outputs=torch.from_numpy(v))
        row("torch adjoint (autograd)", op.apply_adjoint(v), g.numpy())
        if geom.padding_mode == "zeros" and all(lo == hi for lo, hi in geom.padding):
            a = restoring_output_padding(
                geom.in_shape, geom.kernel_size, stride=geom.stride, padding=geom.padding, dilation=geom.dilation
            )
            ref = conv_t(
                torch.from_numpy(v), w, stride=stride_t, padding=tuple(lo for lo, _ in geom.padding),
                output_padding=a, dilation=dil_t, groups=groups,
            )
            row("torch conv_transpose", op.apply_adjoint(v), ref.numpy())
    else:
        a = geom.output_padding
        lo = tuple(p for p, _ in geom.padding)
        hi = tuple(h for _, h in geom.padding)
        if lo == hi:
            ref = conv_t(
                torch.from_numpy(x), w, stride=stride_t, padding=lo, output_padding=a, dilation=dil_t, groups=groups
            )
            row("torch conv_transpose", op.apply(x), ref.numpy())
        # The adjoint of the transposed convolution is the forward convolution, first n outputs per axis.
        padded = F.pad(torch.from_numpy(v), [p for l_, h_, a_ in reversed(tuple(zip(lo, hi, a))) for p in (l_, h_ + a_)])
        ref = conv(padded, w, stride=stride_t, dilation=dil_t, groups=groups)
        ref = ref[(slice(None), slice(None)) + tuple(slice(0, n) for n in op.in_shape[1:])]
        row("torch conv (adjoint)", op.apply_adjoint(v), ref.numpy())
    return rows
