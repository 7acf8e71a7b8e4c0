"""Spectra of convolution matrices: operator norms and the circular FFT formula.

:func:`operator_norm` computes the largest singular value of any operator
convmat handles (dense SVD for small matrices, ``svds`` or power iteration
on ``A^H A`` with the threaded products of :mod:`convmat.spmm`).

:func:`circular_singular_values` gives *all* singular values of a
circularly padded convolution from FFTs of its kernel, without building
anything: stride 1 by Sedghi, Gupta & Long (ICLR 2019), stride ``s`` (dividing
the size) by the polyphase blocks that subsampling folds the spectrum into.  The same numbers
bound the norm of a zero-padded convolution from above (see its Notes).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from .errors import ParameterError, ParameterTypeError
from .geometry import normalize_per_axis, normalize_shape

__all__ = ["operator_norm", "circular_singular_values"]

#: Matrices with at most this many entries (m * n) use a dense SVD under method='auto'.
DENSE_LIMIT = 4_000_000

_METHODS = ("auto", "dense", "svds", "power")

#: Lanczos vectors ARPACK keeps for ``method='svds'`` (its default is 20).  The top singular values
#: of a convolution are close together; more vectors per restart need fewer products in all
#: (16 -> 16 channels, 3 x 3, 64 x 64: 281 products of ``A^H A`` instead of 471).
LANCZOS_VECTORS = 40
#: At most this many bytes of Lanczos vectors; beyond it, ARPACK's default number.
LANCZOS_MEMORY = 1 << 30


def _explicit(A):
    """(sparse or dense matrix, or None; and a LinearOperator-like with shape, matvec, rmatvec)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, aslinearoperator

    from .operator import ConvOperator

    if isinstance(A, ConvOperator):
        return A.matrix, A.as_linear_operator()  # its products are convmat.spmm's, threaded
    if sp.issparse(A) and A.format in ("csr", "csc"):
        from .spmm import csr_matmul

        def product(adjoint):
            return lambda V: csr_matmul(A, V, transpose=adjoint, conjugate=adjoint)

        fwd, adj = product(False), product(True)
        return A, LinearOperator(A.shape, matvec=fwd, rmatvec=adj, matmat=fwd, rmatmat=adj, dtype=A.dtype)
    if sp.issparse(A) or (isinstance(A, np.ndarray) and A.ndim == 2):
        return A, aslinearoperator(A)
    if isinstance(A, LinearOperator) or (
        hasattr(A, "matvec") and hasattr(A, "rmatvec") and hasattr(A, "shape")
    ):
        return None, aslinearoperator(A) if isinstance(A, LinearOperator) else LinearOperator(
            tuple(A.shape), matvec=A.matvec, rmatvec=A.rmatvec, dtype=getattr(A, "dtype", np.float64)
        )
    raise ParameterTypeError(
        "A",
        f"A must be a scipy sparse matrix, a 2-D ndarray, a ConvOperator or a LinearOperator "
        f"(matvec, rmatvec, shape), got {type(A).__name__}"
    )


def operator_norm(A, *, method="auto", tol=1e-10, maxiter=None, rng=None) -> float:
    """The operator 2-norm (largest singular value) of a matrix or operator.

    Parameters
    ----------
    A : sparse matrix, ndarray (2-D), ConvOperator or LinearOperator, shape (m, n)
    method : {'auto', 'dense', 'svds', 'power'}
        ``'dense'``: ``numpy.linalg.svd`` of the dense matrix (explicit
        matrices only); ``'svds'``: ARPACK's Lanczos iteration on the smaller
        of ``A^H A`` and ``A A^H`` (what ``scipy.sparse.linalg.svds`` with
        ``k=1`` runs), :data:`LANCZOS_VECTORS` Lanczos vectors; ``'power'``: power
        iteration on ``A^H A``.  ``'auto'`` uses ``'dense'`` when
        ``m * n <= DENSE_LIMIT`` (4e6) and the matrix is explicit, else ``'svds'``.
    tol : float
        The relative accuracy asked for.  ``'svds'``: ARPACK's ``tol`` for
        the Ritz value ``sigma^2`` of the Gram matrix (its relative accuracy;
        0 means machine precision), so ``sigma`` is within about ``tol / 2``
        (relative); a float32 operator computes in float32, which bounds the
        accuracy near 1e-7 whatever ``tol``.
        ``'power'``: iterate until the residual
        ``r = ||A^H A v - rho v||`` of the Rayleigh quotient
        ``rho = ||A v||^2`` (``||v|| = 1``) is at most ``tol * rho``; then
        ``rho`` is within ``tol * rho`` of an eigenvalue of ``A^H A``, so the
        estimate ``sqrt(rho)`` is within about ``tol / 2`` (relative) of a
        singular value of ``A`` -- and never above the norm.  Ignored by
        ``'dense'``.  The default, 1e-10, asks for about ten correct digits.
    maxiter : int, optional
        At most this many iterations (``>= 1``) for ``'svds'`` and
        ``'power'`` (default: ARPACK's; 10000 for power).  When power
        iteration stops at ``maxiter`` before reaching ``tol`` it warns
        (``RuntimeWarning``, with the accuracy reached) and returns its
        estimate, a lower bound of the norm; ARPACK raises
        ``ArpackNoConvergence``.
    rng : None, int or numpy.random.Generator
        Seed (a non-negative int) or generator of the starting vector (None:
        seed 0, deterministic).

    Returns
    -------
    float
        ``max ||A x|| / ||x||``.

    Notes
    -----
    Power iteration on ``A^H A`` reduces the residual like
    ``(sigma_2 / sigma_1)^(2k)``; the top singular values of a convolution on
    ``n`` samples are ``O(1/n^2)`` apart, so it needs ``O(n^2)`` steps: prefer
    ``'svds'`` for large images.  The residual bound is the one for Hermitian
    matrices (an eigenvalue lies within ``||r||`` of ``rho``); the eigenvalue
    is the largest unless the starting vector is orthogonal to its
    eigenvector, which a random start makes improbable.

    A ConvOperator and a CSR or CSC matrix are multiplied with
    :func:`convmat.spmm.csr_matmul` (threaded, ``A^H`` without a transposed
    copy); other sparse matrices and LinearOperators with their own products.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_matrix
    >>> C = conv_matrix(np.array([[[1.0, -2.0, 1.0]]]), (64,), padding=1, padding_mode="circular")
    >>> round(operator_norm(C), 12)         # |1 - 2 e^{i w} + e^{2 i w}| <= 4, reached at w = pi
    4.0
    >>> round(operator_norm(C, method="svds"), 10), round(operator_norm(C, method="power", tol=1e-14), 8)
    (4.0, 4.0)
    """
    if method not in _METHODS:
        raise ParameterError("method", f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(tol, bool) or not (isinstance(tol, (int, float, np.floating, np.integer)) and tol >= 0):
        raise ParameterError("tol", f"tol must be a non-negative number, got {tol!r}")
    if maxiter is not None:
        if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)):
            raise ParameterTypeError("maxiter", f"maxiter must be a positive int or None, got {maxiter!r}")
        if maxiter < 1:
            raise ParameterError(
                "maxiter", f"maxiter must be a positive int or None (at least one iteration), got {maxiter!r}"
            )
        maxiter = int(maxiter)
    rng = _generator(rng)
    M, L = _explicit(A)
    m, n = L.shape
    if min(m, n) == 0:
        return 0.0
    if method == "auto":
        method = "dense" if M is not None and m * n <= DENSE_LIMIT else "svds"
    if method == "dense":
        if M is None:
            raise ParameterError(
                "method", "method='dense' needs an explicit matrix (sparse or ndarray), got a LinearOperator"
            )
        dense = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
        return float(np.linalg.svd(dense, compute_uv=False)[0])
    dtype = np.dtype(L.dtype)
    if method == "svds":
        from scipy.sparse.linalg import LinearOperator, eigsh

        if min(m, n) == 1:  # ARPACK needs k < min(shape)
            v = np.ones(n, dtype=dtype) if n == 1 else None
            dense = L.matmat(np.eye(n, dtype=dtype)) if v is None else L.matvec(v).reshape(m, 1)
            return float(np.linalg.norm(dense))
        # Lanczos on the smaller Gram matrix, A^H A or A A^H, as svds(k=1) runs it -- but with tol
        # itself for its eigenvalue sigma^2 (svds asks for tol**2 and returns singular vectors).
        k = min(m, n)
        first, second = (L.matvec, L.rmatvec) if n <= m else (L.rmatvec, L.matvec)
        gram = LinearOperator((k, k), matvec=lambda v: second(first(v)), dtype=dtype)
        v0 = _start(rng, k, dtype)
        with _one_blas_thread():
            lam = eigsh(gram, k=1, tol=tol, v0=v0, maxiter=maxiter, ncv=_lanczos_vectors(k, dtype),
                        return_eigenvectors=False)
        return math.sqrt(max(float(np.real(lam[0])), 0.0))
    # power iteration on A^H A, stopped by the residual of the Rayleigh quotient
    maxiter = 10_000 if maxiter is None else maxiter
    v = _start(rng, n, dtype)
    v /= np.linalg.norm(v)
    for _ in range(maxiter):
        w = L.rmatvec(L.matvec(v))
        rho = float(np.vdot(v, w).real)  # ||A v||^2 <= sigma_1^2
        if rho <= 0.0:
            return 0.0  # A v = 0: a random v has a component along every singular vector unless A = 0
        residual = float(np.linalg.norm(w - rho * v))
        if residual <= tol * rho:
            return math.sqrt(rho)
        v = w / np.linalg.norm(w)
    warnings.warn(
        f"operator_norm: power iteration did not reach tol={tol:g} in maxiter={maxiter} iterations (relative "
        f"residual {residual / rho:.2g}); the estimate {math.sqrt(rho):.12g} is a lower bound of the norm. "
        f"Raise maxiter or use method='svds'",
        RuntimeWarning,
        stacklevel=2,
    )
    return math.sqrt(rho)


def _one_blas_thread():
    """A context in which BLAS runs on one thread (threadpoolctl), when threadpoolctl imports.

    ARPACK's vector operations are small next to the products, and OpenBLAS's idle threads spin
    on the cores the products' threads need: on two cores, ``operator_norm`` of a 16 -> 16, 3 x 3,
    64 x 64 layer took 27-33 s with OpenBLAS's default threads and 10-12 s with one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _lanczos_vectors(n, dtype):
    """ARPACK's ``ncv`` for ``svds``: LANCZOS_VECTORS when they fit in LANCZOS_MEMORY, else its default."""
    if LANCZOS_VECTORS < n and LANCZOS_VECTORS * n * np.dtype(dtype).itemsize <= LANCZOS_MEMORY:
        return LANCZOS_VECTORS
    return None


def _generator(rng) -> np.random.Generator:
    """The generator of the starting vector: None (seed 0), a non-negative int seed, or a Generator."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    allowed = "None, a non-negative int seed or a numpy.random.Generator"
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
        raise ParameterTypeError("rng", f"rng must be {allowed}, got {rng!r}")
    if rng < 0:
        raise ParameterError("rng", f"rng must be {allowed}, got {rng!r}")
    return np.random.default_rng(int(rng))


def _start(rng, n, dtype):
    v = rng.standard_normal(n)
    if np.dtype(dtype).kind == "c":
        v = v + 1j * rng.standard_normal(n)
    return v.astype(np.result_type(dtype, np.float64))


def circular_singular_values(weight, in_shape, *, stride=1, groups=1, dilation=1) -> np.ndarray:
    """All singular values of a circular convolution (any stride dividing the size), from FFTs of its kernel.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size)
        Forward (PyTorch) layout.
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the input.  The convolution has
        ``padding_mode='circular'`` and ``n/s`` outputs per axis: ``padding='same'``,
        or any ``(lo, hi)`` with ``lo + hi = e - 1`` (``e = d(k-1) + 1``).
        Kernels longer than the input wrap.
    stride : int or tuple of int
        ``s`` per axis; it must divide ``n`` on every axis.
    groups : int
    dilation : int or tuple of int

    Returns
    -------
    ndarray of float64, shape (prod(n/s) * min(C_out, prod(s) * C_in),)
        Sorted in decreasing order: exactly the singular values of
        ``conv_matrix(weight, in_shape, stride=stride, padding='same',
        padding_mode='circular', groups=groups, dilation=dilation)``.

    Notes
    -----
    Stride 1 (Sedghi, Gupta & Long, *The Singular Values of Convolutional
    Layers*, ICLR 2019): a circular convolution is block-circulant; the
    D-dimensional DFT diagonalises every circulant block at once, so for each
    frequency ``w`` on the grid ``{0, ..., n-1}^D`` the layer acts on the
    Fourier coefficients ``x^(w)`` of the ``C_in`` channels by the
    ``C_out x C_in`` matrix

    .. math:: \\hat W(w)_{oi} = \\sum_t W_{o,i,t}\\, e^{+2\\pi i \\langle w, d\\,t / n\\rangle}

    times a unit phase (from the padding offset).  The ``+`` sign is the
    cross-correlation; a true convolution has ``W^(-w)`` (the complex
    conjugate for a real kernel): the *set* of singular values is the same.

    Stride ``s`` (polyphase blocks): the strided convolution is the stride-1
    one followed by keeping every ``s``-th output, and keeping every
    ``s``-th sample of a length-``n`` signal folds its spectrum: with
    ``N = n/s``, output frequency ``w`` in ``{0, ..., N-1}^D`` receives the
    ``s^D`` input frequencies ``w + q N`` (``q`` in ``{0, ..., s-1}^D``).
    In unitary DFT coordinates the layer is block diagonal with the
    ``C_out x (s^D C_in)`` blocks

    .. math:: M(w) = s^{-D/2} \\big[\\hat W(w + q N)\\big]_{q}

    (all ``q`` side by side, each times a unit phase), so its singular values
    are those of the ``prod(N)`` blocks.  When ``s`` does not divide ``n``
    the subsampled frequencies do not fall on the grid and there is no such
    block structure: refused.  With ``groups`` every block is block diagonal
    (after ordering its columns by group) and its singular values are the
    union over the groups.

    With **zero** padding (any padding ``(lo, hi)``, any stride) the matrix is
    a row/column selection of the stride-1 circular convolution on the padded
    size ``L = n + lo + hi``, hence ``||C|| <= circular_singular_values(weight, L)[0]``;
    the bound tends to ``||C||`` as ``n`` grows.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[[1.0, -2.0, 1.0]]])                 # second difference
    >>> np.round(circular_singular_values(w, (4,)), 12)    # |2 cos(w) - 2| at w = 0, pi/2, pi, 3pi/2
    array([4., 2., 2., 0.])
    >>> haar = np.array([[[1.0, 1.0]]])                     # sums of disjoint pairs: stride 2
    >>> np.round(circular_singular_values(haar, (4,), stride=2) ** 2, 12)
    array([2., 2.])
    """
    w = np.asarray(weight)
    if w.dtype == object or w.dtype.kind not in "biufc":
        raise ParameterTypeError("weight", f"weight must be an array of numbers, got dtype {w.dtype}")
    if w.ndim < 3:
        raise ParameterError(
            "weight", f"weight must have shape (C_out, C_in/groups, *kernel_size), got shape {w.shape}"
        )
    if w.size == 0:
        raise ParameterError(
            "weight",
            f"weight must have at least one output channel, one input channel and one tap per axis, "
            f"got an empty weight of shape {w.shape}"
        )
    in_shape = normalize_shape(in_shape, "in_shape")
    D = w.ndim - 2
    if len(in_shape) != D:
        raise ParameterError(
            "in_shape",
            f"weight of shape {w.shape} has {D} spatial axes but in_shape {in_shape!r} has {len(in_shape)}"
        )
    stride = normalize_per_axis(stride, "stride", D, minimum=1)
    dilation = normalize_per_axis(dilation, "dilation", D, minimum=1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ParameterError("groups", f"groups must be a positive int, got {groups!r}")
    c_out, c_in_g = w.shape[:2]
    if c_out % groups:
        raise ParameterError("groups", f"C_out ({c_out}, weight.shape[0]) must be divisible by groups ({groups})")
    for axis, (n, s) in enumerate(zip(in_shape, stride)):
        if n % s:
            raise ParameterError(
                "stride",
                f"stride must divide in_shape on every axis (the DFT block-diagonalises a strided circular "
                f"convolution only then), got stride {stride!r} for in_shape {in_shape!r} "
                f"(axis {axis}: {n} is not a multiple of {s})"
            )

    # Fold the (dilated) taps onto the circle of each axis: tap t sits at (t * d) mod n.
    folded = np.zeros((c_out, c_in_g) + in_shape, dtype=np.result_type(w.dtype, np.float64))
    index = np.ix_(*[(np.arange(k) * d) % n for k, d, n in zip(w.shape[2:], dilation, in_shape)])
    np.add.at(folded, (slice(None), slice(None)) + index, w)
    # e^{+2 pi i w t / n}: the inverse DFT times N (cross-correlation).
    symbol = np.fft.ifftn(folded, axes=tuple(range(2, 2 + D))) * math.prod(in_shape)
    # frequency q*N + w on each axis -> axes (q, w); blocks over w, columns (group, q, input channel)
    split = tuple(v for n, s in zip(in_shape, stride) for v in (s, n // s))
    symbol = symbol.reshape((groups, c_out // groups, c_in_g) + split)
    q_axes, w_axes = tuple(range(3, 3 + 2 * D, 2)), tuple(range(4, 4 + 2 * D, 2))
    blocks = symbol.transpose(w_axes + (0, 1) + q_axes + (2,))
    blocks = blocks.reshape((-1, groups, c_out // groups, math.prod(stride) * c_in_g))
    s = np.linalg.svd(blocks, compute_uv=False) / math.sqrt(math.prod(stride))
    return np.sort(s.ravel())[::-1]
