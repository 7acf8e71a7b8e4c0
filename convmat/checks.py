"""Checks: the adjoint (dot-product) test and the identities of one geometry.

:func:`adjoint_test` checks ``<A x, y> = <x, A^H y>`` on random vectors with a
tolerance that follows the dtype and cannot fail falsely in float32, yet
catches wrong adjoints that a relative-only test misses.
:func:`check_geometry` runs every check convmat knows on one convolution
geometry and returns printable rows (used by ``convmat check``).

This module reads from the layers below it (build, operator, factors); nothing
below imports it.  PyTorch is imported lazily, only when present and asked for.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from .backends import array_library, backend_of, get_backend
from .operator import ConvOperator

__all__ = ["AdjointTestResult", "adjoint_test", "check_geometry"]

#: The safety factor ``c`` of the default tolerance (see :func:`adjoint_test`).
TOLERANCE_FACTOR = 10.0


# --------------------------------------------------------------------------- #
# the adjoint test
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class AdjointTestResult:
    """The outcome of :func:`adjoint_test`.

    Attributes
    ----------
    passed : bool
        ``max_error <= tolerance``.
    max_error : float
        The largest normalised error over the trials.
    tolerance : float
    dtype : numpy.dtype
        The dtype the operator works in (the tolerance follows it).
    lhs, rhs : ndarray, shape (trials,)
        ``<A x_i, y_i>`` and ``<x_i, A^H y_i>`` of each trial (float64 or complex128).
    errors : ndarray, shape (trials,)
        ``|lhs - rhs| / (||A x|| ||y|| + ||x|| ||A^H y||)`` of each trial.
    shape : (int, int)
        The operator's shape ``(m, n)``.
    row_length : int
        ``k`` in the tolerance: the longest inner product the operator computes
        per output entry (max non-zeros per row or column; ``max(m, n)`` when unknown).
    """

    passed: bool
    max_error: float
    tolerance: float
    dtype: np.dtype
    lhs: np.ndarray
    rhs: np.ndarray
    errors: np.ndarray
    shape: tuple
    row_length: int

    @property
    def trials(self) -> int:
        return int(self.lhs.shape[0])

    def summary(self) -> str:
        """A table of both inner products per trial, the errors and the verdict."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"adjoint test {verdict}: max error {self.max_error:.3e} "
            f"{'<=' if self.passed else '>'} tolerance {self.tolerance:.3e} "
            f"({self.dtype}, shape {self.shape}, row length {self.row_length}, {self.trials} trials)",
            f"  {'trial':>5}  {'<A x, y>':>24}  {'<x, A^H y>':>24}  {'error':>9}",
        ]
        for i, (lhs, rhs, err) in enumerate(zip(self.lhs, self.rhs, self.errors)):
            lines.append(f"  {i:>5}  {_fmt(lhs):>24}  {_fmt(rhs):>24}  {err:9.2e}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AdjointTestResult(\n{self.summary()}\n)"

    __str__ = summary


def _fmt(z) -> str:
    if np.iscomplexobj(z):
        return f"{z.real:.10e}{z.imag:+.2e}j"
    return f"{float(z):.16e}"


@dataclass(frozen=True)
class _Applier:
    """An operator reduced to: shape, dtype, apply to a vector, its row length, and its backend."""

    shape: tuple
    dtype: np.dtype
    apply: object  # vector of length shape[1] -> vector of length shape[0]
    row_length: int
    backend: object  # the Backend whose vectors ``apply`` takes and returns


def _sparse_row_length(be, M) -> int:
    """Max non-zeros in a row or a column of a sparse matrix (structural), on its own device."""
    if be.name == "scipy" or not be.is_sparse(M):
        M = M.tocsr() if hasattr(M, "tocsr") else M
    _, indices, indptr = be.csr_arrays(M)
    if indptr.shape[0] <= 1 or indices.shape[0] == 0:
        return 1
    rows = int((indptr[1:] - indptr[:-1]).max().item())
    cols = int(be.xp.bincount(be.astype(indices, np.int64)).max().item())
    return max(rows, cols, 1)


def _matrix_applier(A, name, adjoint, be) -> _Applier:
    """A 2-D matrix (sparse or dense) of any backend."""
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(A.shape)}")
    sparse = be.is_sparse(A)
    if sparse:
        if be.name == "torch" and A.layout != be.xp.sparse_csr:
            A = A.to_sparse_csr()
        M = be.transpose(A) if adjoint else A
        k = _sparse_row_length(be, A)
        apply = (lambda v: be.matmul(M, v)) if be.name == "torch" else (lambda v: M @ v)
    else:
        M = (A.conj().T if be.dtype_of(A).kind == "c" else A.T) if adjoint else A
        k = max(A.shape)
        apply = lambda v: M @ v  # noqa: E731
    return _Applier(tuple(M.shape), be.dtype_of(M), apply, k, be)


def _as_applier(A, name: str, *, adjoint: bool, backend=None) -> _Applier:
    """``A`` (or ``A^H`` when ``adjoint``) as an _Applier; a TypeError for anything else."""
    if isinstance(A, ConvOperator):
        op = A.T if adjoint else A
        k = max(A.plan.max_row_nnz(), A.plan.transpose().max_row_nnz(), 1)
        return _Applier(op.shape, np.dtype(op.dtype), lambda v: op @ v, k, op.backend)
    lib = array_library(A)
    if lib in ("numpy", "scipy", "cupy", "torch") and hasattr(A, "ndim") and hasattr(A, "shape"):
        be = backend_of(A)
        if lib == "scipy" and not be.is_sparse(A):
            pass  # a scipy LinearOperator: handled below
        else:
            return _matrix_applier(A, name, adjoint, be)
    be = get_backend("scipy") if backend is None else get_backend(backend)
    shape = getattr(A, "shape", None)
    try:
        dtype = np.dtype(getattr(A, "dtype", None) or np.float64)
    except TypeError:  # a dtype NumPy does not know (torch's...): assume float64
        dtype = np.dtype(np.float64)

    def flat(f, src=None):
        if be.name == "scipy":
            return lambda v: np.asarray(f(v if src is None else v.reshape(src))).ravel()
        return lambda v: f(v if src is None else v.reshape(src)).reshape(-1)

    if hasattr(A, "matvec") and hasattr(A, "rmatvec") and shape is not None:
        m, n = (int(s) for s in shape)
        f = A.rmatvec if adjoint else A.matvec
        return _Applier((n, m) if adjoint else (m, n), dtype, flat(f), max(m, n), be)
    if hasattr(A, "forward") and hasattr(A, "adjoint"):
        in_shape, out_shape = getattr(A, "in_shape", None), getattr(A, "out_shape", None)
        f = A.adjoint if adjoint else A.forward
        if in_shape is not None and out_shape is not None:
            src, dst = (tuple(out_shape), tuple(in_shape)) if adjoint else (tuple(in_shape), tuple(out_shape))
            m, n = math.prod(dst), math.prod(src)
            return _Applier((m, n), dtype, flat(f, src), max(m, n), be)
        if shape is not None:
            m, n = (int(s) for s in shape)
            return _Applier((n, m) if adjoint else (m, n), dtype, flat(f), max(m, n), be)
        raise TypeError(
            f"{name} has forward/adjoint but neither in_shape/out_shape nor shape, so the test cannot draw vectors"
        )
    raise TypeError(
        f"{name} must be a sparse matrix (scipy, cupyx or torch), a 2-D array, a ConvOperator, a scipy "
        f"LinearOperator, or an object with matvec/rmatvec or forward/adjoint, got {type(A).__name__}"
    )


def _as_forward_applier(AT, name: str, backend=None) -> _Applier:
    """``AT`` given explicitly: its forward application is the adjoint under test."""
    return _as_applier(AT, name, adjoint=False, backend=backend)


def _random(rng, n, dtype):
    if dtype.kind == "c":
        v = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    else:
        v = rng.standard_normal(n)
    return v.astype(dtype)


def _inner(u, v) -> complex | float:
    """``sum(conj(u) * v)`` on the vectors' own device (NumPy: pairwise summation, no BLAS)."""
    return (u.conj() * v).sum().item()


def _norm(u) -> float:
    a = abs(u)
    return math.sqrt((a * a).sum().item())


def _eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def adjoint_test(A, AT=None, *, trials=5, rng=None, rtol=None, backend=None) -> AdjointTestResult:
    """The dot-product test: is ``AT`` the adjoint of ``A``?

    Parameters
    ----------
    A : sparse matrix, ndarray (2-D), ConvOperator, LinearOperator, or operator-like
        Anything with ``matvec``/``rmatvec`` and ``shape`` (scipy, PyLops) or
        ``forward``/``adjoint`` (with ``in_shape``/``out_shape`` or ``shape``).
        A ConvOperator is tested on its linear part (no bias).
    AT : same kinds, optional
        The claimed adjoint, applied forwards (``AT @ y``, ``AT.matvec(y)`` or
        ``AT.forward(y)``).  Defaults to ``A``'s own adjoint: the conjugate
        transpose, ``rmatvec`` or ``adjoint``.
    trials : int
        Independent pairs ``(x, y)``; the test passes when every trial passes.
    rng : None, int or numpy.random.Generator
        Seed of the random vectors.  None means seed 0, so that the test is
        deterministic; pass a Generator for fresh randomness.
    rtol : float, optional
        Override the tolerance (see Notes).
    backend : {'scipy', 'cupy', 'torch'}, optional
        The library of the random vectors handed to a black box (an object
        with ``matvec`` or ``forward``); default NumPy.  Matrices and
        ConvOperators get vectors of their own backend, on their device, and
        the products and inner products stay there: only the scalars come
        back.  The vectors are drawn on the host from ``rng``, so a seed gives
        the same test on every backend.

    Returns
    -------
    AdjointTestResult
        ``.passed``, ``.max_error``, ``.tolerance``, ``.dtype``, and the inner
        products ``.lhs = <A x, y>`` and ``.rhs = <x, A^H y>`` per trial.

    Notes
    -----
    For ``x`` and ``y`` with independent standard normal entries (complex
    normal for complex operators), in the operator's dtype, the identity is

    .. math:: \\langle A x, y \\rangle = \\langle x, A^H y \\rangle,
              \\qquad \\langle u, v \\rangle = \\textstyle\\sum_i \\bar u_i v_i .

    The error of one trial is normalised by the Cauchy--Schwarz bound of both sides,

    .. math:: e = \\frac{|\\langle A x, y\\rangle - \\langle x, A^H y\\rangle|}
                       {\\|A x\\|\\,\\|y\\| + \\|x\\|\\,\\|A^H y\\|},

    never by the inner product itself: for random vectors that is about
    ``sqrt(n)`` times smaller than the bound and sometimes near zero, which is
    why a relative-only test (PyLops' ``dottest``) fails float32 operators
    that are correct (more than half of the runs on a 256 x 256 image at its
    default ``rtol=1e-6``).

    The inner products and norms are accumulated in float64 (complex128, by
    pairwise summation), so only the operator's own rounding is measured.  Let ``k`` be the longest
    inner product the operator computes per output entry (its maximum number
    of non-zeros per row or column; ``max(m, n)`` for dense matrices and
    black boxes).  Each entry of the computed ``A x`` is off by at most
    ``k eps`` relative (``sqrt(k) eps`` in practice, rounding errors being
    random), so ``||A x_computed - A x|| <~ k eps ||A x||``; ``y`` is drawn
    independently of that error, so its inner product with it is a normal
    variable of standard deviation ``||error||``, and ``||y|| ~ sqrt(m)``.
    With ``c = 10`` for the tails, and the float64 accumulation over
    ``max(m, n)`` terms (``sqrt(n) eps64`` in practice), the tolerance is

    .. math:: \\mathrm{tol} = c \\left( \\frac{k\\,\\varepsilon}{\\sqrt{\\min(m, n)}}
              + \\sqrt{\\max(m, n)}\\,\\varepsilon_{64} \\right).

    For a black box (``k = n``, square) this is ``c sqrt(n) eps``.  For a
    3 x 3 convolution in float32 on 256 x 256 it is 4.2e-8: 65 times the
    largest error of the correct operator over 1000 seeds (6.4e-10), and 360
    times below the smallest error (over 200 seeds) of a wrong adjoint with 1%
    of its entries off by a tenth of the largest (1.5e-5).  A wrong adjoint
    ``E`` gives an error of about ``||E - A^H||_F / (2 ||A||_F sqrt(n))`` per
    trial, so the test resolves adjoints wrong by a relative (Frobenius)
    error down to about ``20 k eps``, whatever ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_matrix
    >>> C = conv_matrix(np.arange(9.0).reshape(1, 1, 3, 3), (16, 16), padding=1)
    >>> adjoint_test(C).passed
    True
    >>> wrong = conv_matrix(np.arange(9.0).reshape(1, 1, 3, 3), (16, 16), padding=1, flip=True).T
    >>> result = adjoint_test(C, wrong)
    >>> result.passed, result.max_error > 100 * result.tolerance
    (False, True)
    """
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    if rtol is not None and not (isinstance(rtol, (int, float, np.floating)) and rtol >= 0):
        raise ValueError(f"rtol must be a non-negative number or None, got {rtol!r}")
    if rng is None:
        rng = 0
    if not isinstance(rng, np.random.Generator) and not (
        isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)
    ):
        raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")
    rng = np.random.default_rng(rng)

    fwd = _as_applier(A, "A", adjoint=False, backend=backend)
    adj = _as_applier(A, "A", adjoint=True, backend=backend) if AT is None else _as_forward_applier(AT, "AT", backend)
    if fwd.backend != adj.backend:
        raise TypeError(
            f"A and AT must take vectors of the same library and device, got {fwd.backend!r} and {adj.backend!r}"
        )
    be = fwd.backend
    m, n = fwd.shape
    if adj.shape != (n, m):
        raise ValueError(f"AT must have shape {(n, m)} (the transpose of A's {(m, n)}), got {adj.shape}")
    dtype = np.result_type(fwd.dtype, adj.dtype)
    if dtype.kind not in "fc":
        dtype = np.dtype(np.float64)
    # The tolerance follows the less precise of the two.
    eps = max(_eps(fwd.dtype) if fwd.dtype.kind in "fc" else 0.0, _eps(adj.dtype) if adj.dtype.kind in "fc" else 0.0)
    eps = eps or _eps(np.float64)
    k = max(fwd.row_length, adj.row_length)
    if rtol is None:
        rtol = TOLERANCE_FACTOR * (k * eps / math.sqrt(min(m, n)) + math.sqrt(max(m, n)) * _eps(np.float64))
    acc = np.complex128 if dtype.kind == "c" else np.float64

    lhs, rhs, errors = [], [], []
    for _ in range(int(trials)):
        x = be.asarray(_random(rng, n, dtype))
        y = be.asarray(_random(rng, m, dtype))
        Ax = fwd.apply(x)
        ATy = adj.apply(y)
        if tuple(Ax.shape) != (m,) or tuple(ATy.shape) != (n,):
            raise ValueError(
                f"A must map ({n},) to ({m},) and AT ({m},) to ({n},), got {tuple(Ax.shape)} and {tuple(ATy.shape)}"
            )
        x64, y64, Ax64, ATy64 = (be.astype(v, acc) for v in (x, y, Ax, ATy))
        left = _inner(Ax64, y64)
        right = _inner(x64, ATy64)
        scale = _norm(Ax64) * _norm(y64) + _norm(x64) * _norm(ATy64)
        diff = abs(left - right)
        err = float(diff / scale) if scale > 0 else (0.0 if diff == 0 else math.inf)
        lhs.append(left)
        rhs.append(right)
        errors.append(err)
    errors = np.array(errors)
    max_error = float(errors.max())
    return AdjointTestResult(
        passed=bool(max_error <= rtol),
        max_error=max_error,
        tolerance=float(rtol),
        dtype=np.dtype(dtype),
        lhs=np.array(lhs),
        rhs=np.array(rhs),
        errors=errors,
        shape=(m, n),
        row_length=int(k),
    )


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
        row("torch forward", op.forward(x), yt.detach().numpy())
        (g,) = torch.autograd.grad(yt, xt, grad_outputs=torch.from_numpy(v))
        row("torch adjoint (autograd)", op.adjoint(v), g.numpy())
        if geom.padding_mode == "zeros" and all(lo == hi for lo, hi in geom.padding):
            from .geometry import restoring_output_padding

            a = restoring_output_padding(
                geom.in_shape, geom.kernel_size, stride=geom.stride, padding=geom.padding, dilation=geom.dilation
            )
            ref = conv_t(
                torch.from_numpy(v), w, stride=stride_t, padding=tuple(lo for lo, _ in geom.padding),
                output_padding=a, dilation=dil_t, groups=groups,
            )
            row("torch conv_transpose", op.adjoint(v), ref.numpy())
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
            row("torch conv_transpose", op.forward(x), ref.numpy())
        # The adjoint of the transposed convolution is the forward convolution, first n outputs per axis.
        padded = F.pad(torch.from_numpy(v), [p for l_, h_ in reversed(tuple(zip(lo, hi))) for p in (l_, h_)])
        ref = conv(padded, w, stride=stride_t, dilation=dil_t, groups=groups)
        ref = ref[(slice(None), slice(None)) + tuple(slice(0, n) for n in op.in_shape[1:])]
        row("torch conv (adjoint)", op.adjoint(v), ref.numpy())
    return rows
