"""Spectra of convolution matrices: operator norms and the circular FFT formula.

:func:`operator_norm` computes the largest singular value of any operator
convmat handles (dense SVD for small matrices, ``svds`` on the explicit
sparse matrix, or power iteration on ``A^H A``).

:func:`circular_singular_values` gives *all* singular values of a
circularly padded, stride-1 convolution from FFTs of its kernel, without
building anything (Sedghi, Gupta & Long, ICLR 2019).  The same numbers
bound the norm of a zero-padded convolution from above (see its Notes).
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import normalize_per_axis, normalize_shape

__all__ = ["operator_norm", "circular_singular_values"]

#: Matrices with at most this many entries (m * n) use a dense SVD under method='auto'.
DENSE_LIMIT = 4_000_000

_METHODS = ("auto", "dense", "svds", "power")


def _explicit(A):
    """(sparse or dense matrix, or None; and a LinearOperator-like with shape, matvec, rmatvec)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, aslinearoperator

    from .operator import ConvOperator

    if isinstance(A, ConvOperator):
        return A.matrix, A.as_linear_operator()
    if sp.issparse(A) or (isinstance(A, np.ndarray) and A.ndim == 2):
        return A, aslinearoperator(A)
    if isinstance(A, LinearOperator) or (
        hasattr(A, "matvec") and hasattr(A, "rmatvec") and hasattr(A, "shape")
    ):
        return None, aslinearoperator(A) if isinstance(A, LinearOperator) else LinearOperator(
            tuple(A.shape), matvec=A.matvec, rmatvec=A.rmatvec, dtype=getattr(A, "dtype", np.float64)
        )
    raise TypeError(
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
        matrices only); ``'svds'``: ARPACK's Lanczos bidiagonalisation
        (``scipy.sparse.linalg.svds``, ``k=1``); ``'power'``: power
        iteration on ``A^H A``.  ``'auto'`` uses ``'dense'`` when
        ``m * n <= DENSE_LIMIT`` (4e6) and the matrix is explicit, else ``'svds'``.
    tol : float
        Relative accuracy: ARPACK's ``tol`` for ``'svds'`` (0 means machine
        precision), the relative change of the estimate between two steps
        for ``'power'``.  Ignored by ``'dense'``.
    maxiter : int, optional
        Iterations for ``'svds'`` and ``'power'`` (default: ARPACK's; 10000 for power).
    rng : None, int or numpy.random.Generator
        Seed of the starting vector (None: seed 0, deterministic).

    Returns
    -------
    float
        ``max ||A x|| / ||x||``.

    Notes
    -----
    Power iteration converges like ``(sigma_2 / sigma_1)^(2k)`` in the
    estimate; the top singular values of a convolution on ``n`` samples are
    ``O(1/n^2)`` apart, so prefer ``'svds'`` for large images.

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
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not (isinstance(tol, (int, float, np.floating)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if rng is None:
        rng = 0
    rng = np.random.default_rng(rng)
    M, L = _explicit(A)
    m, n = L.shape
    if min(m, n) == 0:
        return 0.0
    if method == "auto":
        method = "dense" if M is not None and m * n <= DENSE_LIMIT else "svds"
    if method == "dense":
        if M is None:
            raise ValueError("method='dense' needs an explicit matrix (sparse or ndarray), got a LinearOperator")
        dense = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
        return float(np.linalg.svd(dense, compute_uv=False)[0])
    dtype = np.dtype(L.dtype)
    if method == "svds":
        from scipy.sparse.linalg import svds

        if min(m, n) == 1:  # ARPACK needs k < min(shape)
            v = np.ones(n, dtype=dtype) if n == 1 else None
            dense = L.matmat(np.eye(n, dtype=dtype)) if v is None else L.matvec(v).reshape(m, 1)
            return float(np.linalg.norm(dense))
        v0 = _start(rng, min(m, n), dtype)
        s = svds(L if M is None else M, k=1, tol=tol, v0=v0, maxiter=maxiter, return_singular_vectors=False)
        return float(s[0])
    # power iteration on A^H A
    maxiter = 10_000 if maxiter is None else int(maxiter)
    v = _start(rng, n, dtype)
    v /= np.linalg.norm(v)
    estimate = 0.0
    for _ in range(maxiter):
        w = L.rmatvec(L.matvec(v))
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        new = math.sqrt(norm)  # ||A^H A v|| -> sigma_1^2 as v -> the top right singular vector
        v = w / norm
        if abs(new - estimate) <= tol * new:
            return new
        estimate = new
    return estimate


def _start(rng, n, dtype):
    v = rng.standard_normal(n)
    if np.dtype(dtype).kind == "c":
        v = v + 1j * rng.standard_normal(n)
    return v.astype(np.result_type(dtype, np.float64))


def circular_singular_values(weight, in_shape, *, groups=1, dilation=1) -> np.ndarray:
    """All singular values of a circular, stride-1 convolution, from FFTs of its kernel.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size)
        Forward (PyTorch) layout.
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)``; the convolution maps it onto itself
        (``padding='same'``, or any ``(lo, hi)`` with ``lo + hi = e - 1``, and
        ``padding_mode='circular'``).  Kernels longer than the input wrap.
    groups : int
    dilation : int or tuple of int

    Returns
    -------
    ndarray of float64, shape (min(C_out, C_in) * prod(in_shape),)
        Sorted in decreasing order: exactly the singular values of
        ``conv_matrix(weight, in_shape, padding='same', padding_mode='circular',
        groups=groups, dilation=dilation)``.

    Notes
    -----
    Theorem (Sedghi, Gupta & Long, *The Singular Values of Convolutional
    Layers*, ICLR 2019): a circular stride-1 convolution is block-circulant;
    the D-dimensional DFT diagonalises every circulant block at once, so for
    each frequency ``w`` on the grid ``{0, ..., n-1}^D`` the layer acts on the
    Fourier coefficients ``x^(w)`` of the ``C_in`` channels by the
    ``C_out x C_in`` matrix

    .. math:: \\hat W(w)_{oi} = \\sum_t W_{o,i,t}\\, e^{+2\\pi i \\langle w, d\\,t / n\\rangle}

    times a unit phase (from the padding offset).  The ``+`` sign is the
    cross-correlation (``y_j = sum_t W_t x_{j+t}``); a true convolution has
    ``-``: the two matrices are ``W^(w)`` and ``W^(-w)`` (complex conjugates
    for a real kernel), so the *set* of singular values over all ``w`` is the
    same either way.  With ``groups`` the matrix ``W^(w)`` is block diagonal
    and its singular values are the union over the groups.

    With **zero** padding (any padding ``(lo, hi)``, any stride) the matrix is
    a row/column selection of the circular convolution on the padded size
    ``L = n + lo + hi``, hence ``||C|| <= circular_singular_values(weight, L)[0]``;
    the bound tends to ``||C||`` as ``n`` grows (both tend to the maximum of
    ``||W^(w)||`` over the continuous frequencies).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[[1.0, -2.0, 1.0]]])                 # second difference
    >>> np.round(circular_singular_values(w, (4,)), 12)    # |2 cos(w) - 2| at w = 0, pi/2, pi, 3pi/2
    array([4., 2., 2., 0.])
    """
    w = np.asarray(weight)
    if w.dtype == object or w.dtype.kind not in "biufc":
        raise TypeError(f"weight must be an array of numbers, got dtype {w.dtype}")
    if w.ndim < 3:
        raise ValueError(f"weight must have shape (C_out, C_in/groups, *kernel_size), got shape {w.shape}")
    in_shape = normalize_shape(in_shape, "in_shape")
    D = w.ndim - 2
    if len(in_shape) != D:
        raise ValueError(
            f"weight of shape {w.shape} has {D} spatial axes but in_shape {in_shape!r} has {len(in_shape)}"
        )
    dilation = normalize_per_axis(dilation, "dilation", D, minimum=1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c_out, c_in_g = w.shape[:2]
    if c_out % groups:
        raise ValueError(f"C_out ({c_out}, weight.shape[0]) must be divisible by groups ({groups})")

    # Fold the (dilated) taps onto the circle of each axis: tap t sits at (t * d) mod n.
    folded = np.zeros((c_out, c_in_g) + in_shape, dtype=np.result_type(w.dtype, np.float64))
    index = np.ix_(*[(np.arange(k) * d) % n for k, d, n in zip(w.shape[2:], dilation, in_shape)])
    np.add.at(folded, (slice(None), slice(None)) + index, w)
    spatial = tuple(range(2, 2 + D))
    # e^{+2 pi i w t / n}: the inverse DFT times N (cross-correlation).
    symbol = np.fft.ifftn(folded, axes=spatial) * math.prod(in_shape)
    symbol = np.moveaxis(symbol, (0, 1), (-2, -1)).reshape((-1, groups, c_out // groups, c_in_g))
    s = np.linalg.svd(symbol, compute_uv=False)
    return np.sort(s.ravel())[::-1]
